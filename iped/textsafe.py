"""Text from names, paths, comms, records and peers, made safe for a terminal or a log line.

Policy names, file paths, audit fields and whatever a peer sends may carry raw control bytes
(ESC sequences, CR, BEL). Text outputs and log lines print them escaped, the way the JSON
outputs already do, so what reaches a terminal is never an instruction to it.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, and lone surrogates (undecodable bytes under surrogateescape).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's byte
        return f"\\x{code - 0xDC00:02x}"
    if code > 0xFF:
        return f"\\u{code:04x}"
    return f"\\x{code:02x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character and undecodable byte written as ``\\xNN``."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape_one, text)
