"""Response documents: what was done, what is retained, for how long, on which legal basis.

Why (Law 91/2025/QH15 Art. 14; Decree 356/2025/ND-CP Art. 5): the patient is
told the outcome of the request, and for an erasure what could *not* be erased
and why (medical records are kept under Circular 33/2025/TT-BYT retention and
Circular 13/2025/TT-BYT, formerly 46/2018, record-keeping duties: the rule and
its legal-basis texts are ``consent.retention``).  The JSON
document is stored with the request; :func:`render_html` gives a readable
Vietnamese/English page of the same content (for an access request, the
letter of :mod:`consent.rights.letter`: who accessed the record and what went
to which CRM, without ids).
"""

from __future__ import annotations

import html
from typing import Any

LAW_ERASURE = "Law 91/2025/QH15 Art. 14"
DECREE_DEADLINES = "Decree 356/2025/ND-CP Art. 5"

_TITLES = {
    "erasure": "Kết quả yêu cầu xoá dữ liệu / Erasure request outcome",
    "access": "Kết quả yêu cầu truy cập dữ liệu / Access request outcome",
    "rectification": "Kết quả yêu cầu chỉnh sửa dữ liệu / Rectification request outcome",
    "restriction": "Kết quả yêu cầu hạn chế xử lý / Restriction request outcome",
    "objection": "Kết quả yêu cầu phản đối xử lý / Objection request outcome",
    "withdrawal": "Kết quả yêu cầu rút lại sự đồng ý / Consent withdrawal outcome",
}


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return "<br>".join(html.escape(str(v)) for v in value)
    if isinstance(value, dict):
        return "<br>".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in value.items())
    return html.escape("" if value is None else str(value))


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    if not rows:
        return "<p>—</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_HEAD = (
    "<!doctype html><html lang='vi'><head><meta charset='utf-8'>"
    "<title>{title}</title>"
    "<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}"
    "table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #999;padding:.3em;"
    "vertical-align:top;text-align:left}}</style></head><body><h1>{title}</h1>"
)


def _letter_table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    if not rows:
        return "<p>Không có / None</p>"
    head = "".join(f"<th>{html.escape(label)}</th>" for label in columns.values())
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(key, '')))}</td>" for key in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_letter(document: dict[str, Any]) -> str:
    """The access letter as a page for the patient (Vietnamese first): no ids, Vietnam time."""
    letter = document["letter"]
    title = _TITLES["access"]
    refused = int(letter.get("chia_se_bi_tu_choi") or 0)
    parts = [
        _HEAD.format(title=html.escape(title)),
        "<p>Lập lúc / Issued: " + html.escape(str(letter.get("lap_luc"))) + " — ",
        html.escape(str(letter.get("mui_gio"))) + "</p>",
        "<p>" + html.escape(str(document.get("summary") or "")) + "</p>",
        "<h2>Ai đã truy cập hồ sơ của bạn / Who accessed your record</h2>",
        _letter_table(letter.get("truy_cap") or [], letter["cot_truy_cap"]),
        "<h2>Lịch sử chia sẻ cho CRM / Disclosure history (CRM)</h2>",
        _letter_table(letter.get("chia_se_crm") or [], letter["cot_chia_se"]),
        "<p>Số lần không chia sẻ (không có sự đồng ý hoặc bị hạn chế) / "
        f"Disclosures refused (no consent, or restricted): {refused}</p>",
        "<p>Bản sao dữ liệu của bạn có trong tài liệu JSON (định dạng FHIR). / "
        "A copy of your data is in the JSON document (FHIR).</p>",
        "<h2>Căn cứ pháp lý / Legal basis</h2><ul>",
        *(f"<li>{html.escape(str(b))}</li>" for b in document.get("legal_basis") or []),
        "</ul></body></html>",
    ]
    return "".join(parts)


def render_html(document: dict[str, Any]) -> str:
    """A self-contained, escaped HTML page of a response document (an access answer: its letter)."""
    kind = str(document.get("type") or "")
    if kind == "access" and isinstance(document.get("letter"), dict):
        return render_letter(document)
    title = _TITLES.get(kind, "Privacy request outcome")
    parts = [
        _HEAD.format(title=html.escape(title)),
        "<p>Mã yêu cầu / Request: <code>"
        + html.escape(str(document.get("request")))
        + "</code><br>Ngày hoàn tất / Completed: "
        + html.escape(str(document.get("completed_at")))
        + "</p>",
        "<p>" + html.escape(str(document.get("summary") or "")) + "</p>",
    ]
    if "erased" in document:
        parts.append("<h2>Đã xoá / Erased</h2>")
        parts.append(_table(document["erased"], ("what", "where", "how", "count")))
    if "retained" in document:
        parts.append("<h2>Được lưu giữ / Retained</h2>")
        parts.append(_table(document["retained"], ("what", "count", "until", "legal_basis", "restriction")))
    if "processors" in document:
        parts.append("<h2>Bên xử lý (CRM) / Processors</h2>")
        parts.append(_table(document["processors"], ("crm", "notified_at", "confirmed_at")))
    if "actions" in document:
        parts.append("<h2>Đã thực hiện / Actions</h2>")
        parts.append(_table(document["actions"], ("what", "how", "count")))
    if "disclosures" in document:
        parts.append("<h2>Lịch sử chia sẻ / Disclosure history</h2>")
        parts.append(_table(document["disclosures"], ("when", "recipient", "purpose", "resource", "consent")))
    parts.append("<h2>Căn cứ pháp lý / Legal basis</h2><ul>")
    parts.extend(f"<li>{html.escape(str(b))}</li>" for b in document.get("legal_basis") or [])
    parts.append("</ul></body></html>")
    return "".join(parts)
