"""OVMF with the lab's test signers enrolled in the UEFI ``db``.

The kernel copies ``db`` certificates into its ``.platform`` keyring at boot, and IPE (with
``CONFIG_IPE_POLICY_SIG_PLATFORM_KEYRING=y``, Debian's setting) falls back to that keyring
when verifying a policy.  Enrolling there is the only way to make a *stock* kernel trust a
test key without rebuilding it, so it is how the lab gets signed policies to load.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.lab import LabError, cache_dir, run
from tests.lab.keys import ENROLLED

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
#: Owner GUID of the lab's db entries (arbitrary, fixed so the vars file is reproducible).
DB_OWNER_GUID = "6b2a7f1e-3c1d-4b7e-9a52-1ab0c0ffee01"


@dataclass(frozen=True)
class Firmware:
    """Read-only OVMF code plus a cached, enrolled variable store template."""

    code: Path
    vars_template: Path

    def fresh_vars(self, dest: Path) -> Path:
        """A private writable copy of the variables: each boot must start from the template."""
        shutil.copyfile(self.vars_template, dest)
        return dest


def enrolled_firmware() -> Firmware:
    """OVMF whose ``db`` holds every :data:`tests.lab.keys.ENROLLED` cert (built once, cached).

    The cache key covers the OVMF vars template and the certificates, so upgrading OVMF,
    regenerating the test keys or enrolling another one (such as the lab CA) rebuilds it.
    """
    for path in (OVMF_CODE, OVMF_VARS):
        if not path.is_file():
            raise LabError(f"{path} is missing: install the 'ovmf' package (packaging/dev.sh setup)")
    digest = hashlib.sha256(OVMF_VARS.read_bytes())
    for signer in ENROLLED:
        digest.update(signer.cert.read_bytes())
    out_dir = cache_dir() / "firmware"
    out_dir.mkdir(exist_ok=True)
    target = out_dir / f"OVMF_VARS_4M.lab-{digest.hexdigest()[:16]}.fd"
    if not target.is_file():
        # A private temporary name: two kernels booting side by side may both get here.
        fd, name = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        argv: list[str | Path] = [_virt_fw_vars(), "--input", OVMF_VARS, "--output", tmp]
        for signer in ENROLLED:
            argv += ["--add-db", DB_OWNER_GUID, signer.cert]
        try:
            run(argv, what="enrolling the lab signers in OVMF db (virt-fw-vars)")
            tmp.chmod(0o644)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
    return Firmware(code=OVMF_CODE, vars_template=target)


def _virt_fw_vars() -> Path:
    """virt-fw-vars from the running venv (pytest may run without the venv on PATH)."""
    beside = Path(sys.executable).parent / "virt-fw-vars"
    if beside.is_file():
        return beside
    found = shutil.which("virt-fw-vars")
    if found is None:
        raise LabError("virt-fw-vars not found: install the test extra (pip install -e .[test])")
    return Path(found)
