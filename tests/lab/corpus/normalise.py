"""Normalisation: run-varying values become placeholders (``{pid}``, ``{sha256:<label>}``, ...)
so the recorded truth is stable across runs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Normaliser:
    """Byte substitutions turning run-varying values into placeholders.

    Longest needles are replaced first, so a digest is never half-replaced by a shorter one.
    """

    subs: dict[bytes, bytes] = field(default_factory=dict)

    def add(self, needle: bytes, placeholder: str) -> None:
        """Register ``needle``; the first placeholder registered for a needle stays."""
        if needle and needle not in self.subs:
            self.subs[needle] = placeholder.encode()

    def add_blob(self, label: str, blob: bytes) -> None:
        # One placeholder per spelling: a kernel that changed the hex case must show in the diff.
        digest = hashlib.sha256(blob).hexdigest()
        self.add(digest.encode(), "{sha256:" + label + "}")
        self.add(digest.upper().encode(), "{sha256:" + label + "|upper}")

    def apply(self, data: bytes) -> bytes:
        for needle in sorted(self.subs, key=len, reverse=True):
            data = data.replace(needle, self.subs[needle])
        return data


def fact_placeholders(norm: Normaliser, facts: Mapping[str, str]) -> None:
    """Register every measured fact whose value varies between runs (digests, root hashes).

    Inode numbers are not registered here: several targets can share one number, so only
    the probed target's inode becomes ``{ino}`` (in :func:`run_step`).
    """
    for key, value in sorted(facts.items()):  # sorted: equal digests get the first key's name
        if key.endswith(".digest") or key.endswith(".roothash"):
            norm.add(value.encode(), "{fact:" + key + "}")
            norm.add(value.upper().encode(), "{fact:" + key + "|upper}")


def render_bytes(data: bytes) -> str | dict[str, str]:
    """Text when the bytes are printable ASCII (plus \\n, \\t), else ``{"hex": ...}``."""
    if all(0x20 <= b < 0x7F or b in (0x09, 0x0A) for b in data):
        return data.decode("ascii")
    return {"hex": data.hex()}


def render_audit(rtype: int, body: bytes) -> str:
    return f"{rtype} " + body.decode("ascii", "backslashreplace")
