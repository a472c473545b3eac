"""How an ER7 message's characters are encoded: delimiters (MSH-1/2), character set (MSH-18), escapes.

Why a module of its own: the tokenizer (:mod:`mappers.hl7_message`) reads
these before it can split a single segment, and the ACK builder and the MLLP
client need the same rules without a parsed message.  Both readings come from
the raw bytes of MSH, which is ASCII whatever MSH-18 says:

* the delimiters are read from MSH-1/MSH-2 instead of assuming ``|^~\\&``;
* MSH-18 (HL7 table 0211) names the codec the whole message is decoded with;
* escape sequences (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\``, HL7 v2.5 ch. 2.7)
  are decoded lazily, when a value is read, so that an escaped delimiter never
  splits a field.
"""

from __future__ import annotations

from dataclasses import dataclass

from common import UnparseableMessage

#: HL7 table 0211 (MSH-18) → Python codec.  ``UNICODE`` alone is deprecated
#: (it meant UCS-2 in v2.3) but every sender we know uses it for UTF-8.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "8859/1": "iso8859-1",
    "ISO IR100": "iso8859-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}


class UnsupportedCharset(UnparseableMessage):
    """MSH-18 names a character set outside HL7 table 0211 (or one we cannot decode)."""

    hl7_error_code = "103"  # table 0357: table value not found


class UndecodableMessage(UnparseableMessage):
    """The bytes are not valid in the character set MSH-18 (or the sender's default) names."""

    hl7_error_code = "102"  # table 0357: data type error


@dataclass(frozen=True, slots=True)
class EncodingChars:
    """Delimiters read from MSH-1 and MSH-2 (HL7 v2.5 ch. 2.5.4)."""

    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str
    truncation: str = ""

    @property
    def msh2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


def unescape(value: str, enc: EncodingChars, codec: str = "utf-8") -> str:
    """Decode HL7 escape sequences; unknown or unterminated sequences stay literal."""
    esc = enc.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        j = value.find(esc, i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        k = value.find(esc, j + 1)
        if k < 0:
            out.append(value[j:])
            break
        decoded = _decode_sequence(value[j + 1 : k], enc, codec)
        out.append(value[j : k + 1] if decoded is None else decoded)
        i = k + 1
    return "".join(out)


def _decode_sequence(seq: str, enc: EncodingChars, codec: str) -> str | None:
    simple = {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": enc.escape,
        "P": enc.truncation,
        ".br": "\n",
        "H": "",
        "N": "",
    }
    if seq in simple:
        return simple[seq]
    if seq[:1] == "X" and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode(codec, errors="replace")
        except (ValueError, LookupError):
            return None
    return None


def encoding_from(data: bytes) -> EncodingChars:
    fs = data[3:4]
    if not fs or fs in b"\r\n \t" or fs.isalnum() or fs[0] > 0x7E:
        raise UnparseableMessage("invalid field separator in MSH-1", location="MSH-1")
    end = data.find(fs, 4)
    chars = data[4:end] if end >= 0 else b""
    if not 4 <= len(chars) <= 5 or any(ch > 0x7E or ch <= 0x20 for ch in chars):
        raise UnparseableMessage("invalid encoding characters in MSH-2", location="MSH-2")
    text = chars.decode("ascii")
    if any(ch.isalnum() for ch in text) or len(set(text + fs.decode())) != len(text) + 1:
        raise UnparseableMessage("invalid encoding characters in MSH-2", location="MSH-2")
    return EncodingChars(fs.decode(), text[0], text[1], text[2], text[3], text[4:])


def codec_for(msh_line: bytes, enc: EncodingChars, default_charset: str) -> tuple[str, str]:
    parts = msh_line.split(enc.field.encode())
    raw18 = parts[17] if len(parts) > 17 else b""
    try:
        label = raw18.decode("ascii").split(enc.repetition)[0].split(enc.component)[0].strip()
    except UnicodeDecodeError:
        raise UnsupportedCharset("MSH-18 is not ASCII", location="MSH-18") from None
    if not label:
        return "", default_charset
    codec = CHARSETS.get(label.upper())
    if codec is None:
        raise UnsupportedCharset(f"unsupported character set {label!r}", location="MSH-18")
    return label, codec
