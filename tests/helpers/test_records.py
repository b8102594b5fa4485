"""The audit texts the tests share: the corpus truth's bodies are concrete (no placeholder left),
and the messy auditd log holds both the kernel's shape and its spoilt forms."""

from __future__ import annotations

from iped.audit.records import parse_access
from tests.helpers.records import kernel_bodies, messy_lines


def test_kernel_bodies_are_concrete_and_cover_every_ipe_type() -> None:
    bodies = list(kernel_bodies())
    assert {rtype for _, rtype, _ in bodies} >= {1420, 1421, 1422}
    assert not any("{pid}" in body or "{ino}" in body or "{sha256:" in body for _, _, body in bodies)
    access = next(body for _, rtype, body in bodies if rtype == 1420)
    assert parse_access(access).op


def test_messy_lines_mix_clean_and_spoilt_events() -> None:
    lines = messy_lines()
    assert any(line.startswith("type=IPE_ACCESS msg=audit(") for line in lines)
    assert any("\x1d" in line for line in lines)  # auditd's enriched format
    assert len(lines) != len(set(lines))  # events repeated whole
