"""The access letter: who looked at the patient's record, when, why, and what went to which CRM.

Why (issue #18 item 8; Law 91/2025/QH15: the data subject may know who
processed and received their data; Circular 13/2025/TT-BYT: traceability of
every access): an access request's answer names every access to the record —
organisation (the client application) and role, the person when the audit
agent carries a name, the date and time in Vietnam time (Asia/Ho_Chi_Minh,
UTC+7 without daylight saving, ``dd/mm/yyyy HH:MM``), the purpose of use as
Vietnamese text — and every disclosure to a CRM with its purpose and the
fields that CRM receives.  It is written for a patient: Vietnamese first with
the English after it, every code shown by its label, and no record ids, UUIDs
or UTC microsecond timestamps.

The events come from the audit trail's public API (``audit.search_audit``),
never from SQL on the audit tables here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from consent.rights.calendar import VN_TZ

#: Vietnam time (Asia/Ho_Chi_Minh is UTC+7 all year).
LOCAL_FORMAT = "%d/%m/%Y %H:%M"
NOT_RECORDED = "không ghi nhận / not recorded"

#: HL7 v3 PurposeOfUse (v3-ActReason) and carebridge consent purposes, as text.
PURPOSE_LABELS: dict[str, str] = {
    "TREAT": "Điều trị / Treatment",
    "ETREAT": "Điều trị cấp cứu / Emergency treatment",
    "HOPERAT": "Vận hành cơ sở y tế / Healthcare operations",
    "HPAYMT": "Thanh toán chi phí y tế / Healthcare payment",
    "PATRQT": "Theo yêu cầu của người bệnh / At the patient's request",
    "PATADMIN": "Quản lý hành chính người bệnh / Patient administration",
    "HRESCH": "Nghiên cứu y học / Healthcare research",
    "PUBHLTH": "Y tế công cộng / Public health",
    "HSYSADMIN": "Quản trị hệ thống / System administration",
    "HLEGAL": "Yêu cầu pháp lý / Legal requirement",
    "HCOMPL": "Kiểm tra tuân thủ / Compliance review",
    "HMARKT": "Tiếp thị dịch vụ y tế / Healthcare marketing",
    "HQUALIMP": "Nâng cao chất lượng / Quality improvement",
    "CAREMGT": "Điều phối chăm sóc / Care management",
    "appointment-reminder": "Nhắc lịch hẹn / Appointment reminders",
    "post-visit-care": "Chăm sóc sau khám / Post-visit care",
    "marketing": "Tiếp thị / Marketing",
}

ROLE_LABELS: dict[str, str] = {
    "his_integration": "Hệ thống thông tin bệnh viện (HIS) / Hospital information system",
    "hl7-sender": "Hệ thống thông tin bệnh viện (HIS) / Hospital information system",
    "clinician": "Nhân viên y tế / Clinician",
    "compliance_officer": "Cán bộ kiểm soát tuân thủ / Compliance officer",
    "privacy_officer": "Cán bộ bảo vệ dữ liệu cá nhân / Privacy officer",
    "crm": "Hệ thống chăm sóc khách hàng (CRM) / Customer relationship system",
    "admin": "Quản trị hệ thống / Administrator",
    "patient": "Người bệnh (chính bạn) / The patient (you)",
    "system": "carebridge (tự động) / carebridge (automatic)",
}

ACTION_LABELS: dict[str, str] = {
    "read": "Xem hồ sơ / Read",
    "vread": "Xem một phiên bản cũ / Read a past version",
    "search-type": "Tìm kiếm / Search",
    "search-system": "Tìm kiếm / Search",
    "search": "Tìm kiếm / Search",
    "history-instance": "Xem lịch sử thay đổi / Read the change history",
    "history-type": "Xem lịch sử thay đổi / Read the change history",
    "history-system": "Xem lịch sử thay đổi / Read the change history",
    "create": "Tạo mới / Created",
    "update": "Cập nhật / Updated",
    "patch": "Cập nhật / Updated",
    "delete": "Xoá / Deleted",
    "transaction": "Ghi nhiều mục cùng lúc / Batch write",
    "batch": "Ghi nhiều mục cùng lúc / Batch write",
    "operation": "Xuất dữ liệu hồ sơ / Record export",
    "hl7-message": "Nhận tin nhắn HL7 từ HIS / HL7 message from the HIS",
    "export": "Xuất dữ liệu / Export",
    "re-identification": "Tra cứu danh tính từ bí danh / Re-identification",
    "erasure-hold-relabel": "Gắn nhãn lưu giữ / Retention label",
}
PRIVACY_STEP = "Yêu cầu quyền dữ liệu cá nhân / Data-subject request"
PRIVACY_STEPS = {
    "filed": "nộp yêu cầu / filed",
    "acknowledged": "xác nhận đã nhận / acknowledged",
    "extended": "gia hạn / extended",
    "closed": "đóng yêu cầu / closed",
    "rejected": "từ chối / rejected",
    "processor-receipt": "CRM xác nhận đã xoá / processor's deletion receipt",
    "restricted-labelled": "gắn nhãn hạn chế / restriction label",
}
ACTION_FALLBACK = {
    "C": "Tạo mới / Created",
    "R": "Xem / Read",
    "U": "Cập nhật / Updated",
    "D": "Xoá / Deleted",
    "E": "Thao tác khác / Other operation",
}
OUTCOME_LABELS = {
    "0": "Thành công / Succeeded",
    "4": "Bị từ chối / Refused",
    "8": "Lỗi / Failed",
    "12": "Lỗi / Failed",
}
KIND_LABELS = {
    "patient": "Thông tin người bệnh / Patient details",
    "appointment": "Lịch hẹn / Appointment",
    "encounter": "Lượt khám / Visit",
}

#: ``(crm, kind) -> field names`` the CRM receives (injected from the processors, may be absent).
FieldsOf = Callable[[str, str], list[str]]


def local_time(recorded: str | None) -> str:
    """An AuditEvent ``recorded`` instant (UTC) as ``dd/mm/yyyy HH:MM`` Vietnam time."""
    if not recorded:
        return NOT_RECORDED
    when = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
    return when.astimezone(VN_TZ).strftime(LOCAL_FORMAT)


def purpose_label(codes: Iterable[str]) -> str:
    labels = [PURPOSE_LABELS.get(c, f"Mục đích khác / Other purpose ({c})") for c in codes]
    return "; ".join(labels) if labels else NOT_RECORDED


def _codes(concepts: Any) -> list[str]:
    return [
        str(coding["code"])
        for concept in concepts or []
        for coding in concept.get("coding") or []
        if coding.get("code")
    ]


def _requestor(event: dict[str, Any]) -> dict[str, Any]:
    agents = event.get("agent") or []
    return next((a for a in agents if a.get("requestor")), agents[0] if agents else {})


def _role(agent: dict[str, Any]) -> str:
    codes = _codes(agent.get("role"))
    role = codes[0] if codes else "system"
    return ROLE_LABELS.get(role, f"Vai trò khác / Other role ({role})")


def _action(event: dict[str, Any]) -> str:
    codes = [str(c.get("code")) for c in event.get("subtype") or [] if c.get("code")]
    code = codes[0] if codes else ""
    if code.startswith("privacy-"):
        step = code.removeprefix("privacy-")
        label = "thực hiện / carried out" if step.startswith("processed") else PRIVACY_STEPS.get(step)
        return f"{PRIVACY_STEP}: {label or 'bước khác / other step'}"
    return ACTION_LABELS.get(code) or ACTION_FALLBACK.get(str(event.get("action")), ACTION_FALLBACK["E"])


def access_row(event: dict[str, Any]) -> dict[str, str]:
    agent = _requestor(event)
    who = agent.get("who") or {}
    purposes = _codes(event.get("purposeOfEvent")) or _codes(agent.get("purposeOfUse"))
    return {
        "thoi_gian": local_time(event.get("recorded")),
        "don_vi": str(agent.get("altId") or "carebridge"),
        "vai_tro": _role(agent),
        "nguoi_truy_cap": str(who.get("display") or NOT_RECORDED),
        "hanh_dong": _action(event),
        "muc_dich": purpose_label(purposes),
        "ket_qua": OUTCOME_LABELS.get(str(event.get("outcome")), OUTCOME_LABELS["8"]),
    }


def disclosure_row(event: dict[str, Any], fields_of: FieldsOf | None) -> dict[str, str]:
    desc = str(event.get("outcomeDesc") or "")
    crm = desc.rpartition("recipient=")[2].strip() if "recipient=" in desc else NOT_RECORDED
    kind = "patient"
    for entity in event.get("entity") or []:
        ref = str((entity.get("what") or {}).get("reference") or "")
        if ref and not ref.startswith(("Patient/", "Consent/")):
            kind = ref.partition("/")[0].lower()
            break
    fields = fields_of(crm, kind) if fields_of is not None else []
    return {
        "thoi_gian": local_time(event.get("recorded")),
        "crm": crm,
        "muc_dich": purpose_label(_codes(event.get("purposeOfEvent"))),
        "du_lieu": KIND_LABELS.get(kind, kind),
        "truong_du_lieu": ", ".join(fields) if fields else NOT_RECORDED,
    }


#: Column headings, Vietnamese first (the JSON keys are the Vietnamese names without diacritics).
ACCESS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("thoi_gian", "Thời gian (giờ Việt Nam) / Time (Vietnam)"),
    ("don_vi", "Đơn vị / ứng dụng — Organisation / application"),
    ("vai_tro", "Vai trò / Role"),
    ("nguoi_truy_cap", "Người truy cập / Person"),
    ("hanh_dong", "Hành động / Action"),
    ("muc_dich", "Mục đích sử dụng / Purpose of use"),
    ("ket_qua", "Kết quả / Outcome"),
)
DISCLOSURE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("thoi_gian", "Thời gian (giờ Việt Nam) / Time (Vietnam)"),
    ("crm", "CRM nhận dữ liệu / Receiving CRM"),
    ("muc_dich", "Mục đích / Purpose"),
    ("du_lieu", "Loại dữ liệu / Data"),
    ("truong_du_lieu", "Các trường được gửi / Fields sent"),
)


def build_letter(
    events: Iterable[dict[str, Any]], completed_at: str, fields_of: FieldsOf | None
) -> dict[str, Any]:
    """The patient-readable part of an access answer from the patient's AuditEvents (oldest first)."""
    accesses: list[dict[str, str]] = []
    disclosures: list[dict[str, str]] = []
    refused = 0
    for event in events:
        subtypes = [c.get("code") for c in event.get("subtype") or []]
        if "consent-decision" in subtypes:
            if event.get("outcome") == "0":
                disclosures.append(disclosure_row(event, fields_of))
            else:
                refused += 1
            continue
        accesses.append(access_row(event))
    return {
        "ngon_ngu": "vi, en",
        "tieu_de": "Ai đã truy cập hồ sơ của bạn / Who accessed your record",
        "lap_luc": local_time(completed_at),
        "mui_gio": "Giờ Việt Nam (UTC+7) / Vietnam time (UTC+7)",
        "truy_cap": accesses,
        "chia_se_crm": disclosures,
        "chia_se_bi_tu_choi": refused,
        "cot_truy_cap": dict(ACCESS_COLUMNS),
        "cot_chia_se": dict(DISCLOSURE_COLUMNS),
    }
