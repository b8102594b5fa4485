"""String to boolean as the kernel parses IPE's boolean files: no security/ipe/ counterpart (lib/kstrtox.c).

``enforce``, ``success_audit``, ``policies/<name>/active`` and ``delete`` all go through
kstrtobool_from_user(); which letters count changed in 6.16 (``enable_disable``).
"""

from __future__ import annotations

import errno

from iped.emulator.types import kernel_error


def kstrtobool(s: bytes, *, enable_disable: bool) -> bool:
    """kstrtobool(): decide on the first (two) bytes of a NUL-terminated string.

    ``1yYtT`` true, ``0nNfF`` false, ``o``+``nN`` true, ``o``+``fF`` false (case-insensitive
    ``o``), and with ``enable_disable`` (lib/kstrtox.c commit ae5b3500856f) ``eE`` true and
    ``dD`` false. Raises OSError: EINVAL anything else (including an empty string).
    """
    nul = s.find(b"\0")
    if nul >= 0:
        s = s[:nul]
    first = s[:1]
    if first and first in b"1yYtT":
        return True
    if first and first in b"0nNfF":
        return False
    if enable_disable and first and first in b"eE":
        return True
    if enable_disable and first and first in b"dD":
        return False
    if first in (b"o", b"O"):
        second = s[1:2]
        if second and second in b"nN":
            return True
        if second and second in b"fF":
            return False
    raise kernel_error(errno.EINVAL, "not a boolean")


def kstrtobool_from_user(data: bytes, *, enable_disable: bool) -> bool:
    """kstrtobool_from_user(): only the first three bytes are copied (then NUL-terminated)."""
    return kstrtobool(data[:3], enable_disable=enable_disable)
