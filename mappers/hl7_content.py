"""The canonical content of an HL7 v2 message: what a retry of the same message has in common.

Why: the journal tells a duplicate delivery from a reused control id by
comparing content (issue #15 item 1; HL7 v2.5 ch. 2.10.1 leaves MSH-10 reuse to
the sender, and real senders reset or fix their counters).  A retry of the same
message may differ in bytes that carry no meaning, so they are normalised away:

* the UTF-8 byte-order mark and leading blank lines;
* segment terminators: HL7 v2.5 ch. 2.5.1 mandates CR, feeds send LF or CRLF;
* empty lines and trailing empty fields (``PID|1||`` and ``PID|1``);
* MSH-7 (date/time of message): some senders restamp the header on retry.

Everything else, MSH-10 included, is compared as sent.  The caller passes the
decoded text (UTF-8) when the message could be decoded, so a retry in another
encoding of the same characters compares equal; otherwise the raw bytes.
"""

from __future__ import annotations

_BOM = b"\xef\xbb\xbf"


def canonical_content(data: bytes) -> bytes:
    """``data`` with terminators, blank lines, trailing empty fields and MSH-7 normalised."""
    if data.startswith(_BOM):
        data = data[3:]
    lines = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    out: list[bytes] = []
    for line in lines:
        if not line.strip():
            continue
        if line.startswith(b"MSH") and len(line) > 3:
            separator = line[3:4]
            parts = line.split(separator)  # parts[1] is MSH-2, parts[n - 1] is MSH-n
            if len(parts) > 6:
                parts[6] = b""
            line = separator.join(parts)
            if line.endswith(separator):
                line = line.rstrip(separator)
        elif len(line) > 3:
            line = line.rstrip(line[3:4])
        out.append(line)
    return b"\r".join(out)
