"""A directory shaped like the kernel's IPE securityfs tree, for what reads it by path (the
initramfs hook and script, ``iped boot-check``)."""

from __future__ import annotations

from pathlib import Path


def fake_securityfs(root: Path, policies: dict[str, tuple[str, bool, bytes]], enforce: bool = True) -> Path:
    """A tree shaped like /sys/kernel/security/ipe: name -> (version, active, pkcs7)."""
    ipe = root / "securityfs-ipe"
    (ipe / "policies").mkdir(parents=True)
    (ipe / "enforce").write_text("1\n" if enforce else "0\n")
    (ipe / "success_audit").write_text("0\n")
    for name, (version, active, blob) in policies.items():
        d = ipe / "policies" / name
        d.mkdir()
        (d / "name").write_text(name)
        (d / "version").write_text(version + "\n")
        (d / "active").write_text("1\n" if active else "0\n")
        (d / "policy").write_bytes(blob)
        (d / "pkcs7").write_bytes(blob)
    return ipe
