"""In-guest checks behind tests/lab/test_lab_boot.py: signed policies through ``new_policy``.

Runs on the real kernel (see conftest.py).  The host asserts on these tests' junit results;
``boot-observations.json`` in the results dir records what the kernel actually returned, for
the emulator's authors.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from tests.lab import GUEST_OUT
from tests.lab.keys import EC_SIGNER, RSA_SIGNER, UNTRUSTED_SIGNER, Signer, sign_policy

IPE = Path("/sys/kernel/security/ipe")
OBSERVATIONS = Path(os.environ.get("IPED_LAB_OUT", GUEST_OUT)) / "boot-observations.json"


def _policy(name: str) -> bytes:
    return f"policy_name={name} policy_version=0.0.1\nDEFAULT action=ALLOW\n".encode()


def _new_policy(blob: bytes) -> int:
    """Write ``blob`` to new_policy in ONE write(2); 0 on success, else the errno."""
    fd = os.open(IPE / "new_policy", os.O_WRONLY)
    try:
        written = os.write(fd, blob)
    except OSError as exc:
        return exc.errno or -1
    finally:
        os.close(fd)
    assert written == len(blob), f"short write: {written} of {len(blob)}"
    return 0


def _observe(key: str, value: object) -> None:
    data = json.loads(OBSERVATIONS.read_text()) if OBSERVATIONS.exists() else {}
    data[key] = value
    OBSERVATIONS.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize("signer", [RSA_SIGNER, EC_SIGNER], ids=["rsa", "ec"])
def test_enrolled_signer_policy_loads(signer: Signer) -> None:
    name = f"iped_lab_boot_{signer.name.replace('-', '_')}"
    text = _policy(name)
    rc = _new_policy(sign_policy(text, signer))
    _observe(f"new_policy[{signer.name}]", {"errno": rc, "name": errno.errorcode.get(rc, "OK")})
    assert rc == 0, f"new_policy rejected a policy signed by enrolled {signer.name}: errno {rc} " \
                    f"({os.strerror(rc)})"
    loaded = IPE / "policies" / name
    assert (loaded / "policy").read_bytes() == text
    assert (loaded / "active").read_text().strip() == "0"


def test_untrusted_signer_policy_rejected() -> None:
    rc = _new_policy(sign_policy(_policy("iped_lab_boot_untrusted"), UNTRUSTED_SIGNER))
    _observe(f"new_policy[{UNTRUSTED_SIGNER.name}]", {"errno": rc, "name": errno.errorcode.get(rc, "OK")})
    assert rc == errno.ENOKEY, f"expected ENOKEY (126), got {rc} ({errno.errorcode.get(rc, 'OK')})"
    assert not (IPE / "policies" / "iped_lab_boot_untrusted").exists()
