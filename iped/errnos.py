"""What each errno means in IPE's context, for every message iped prints.

The kernel reports a bare errno; these one-liners say what it means for a policy, a
securityfs write or an audit record (Documentation/admin-guide/LSM/ipe.rst, policy.c, fs.c).
"""

from __future__ import annotations

import errno as _errno

#: errno number -> (symbolic name, meaning in IPE's terms)
IPE_ERRNO_MEANINGS: dict[int, str] = {
    _errno.EBADMSG: "invalid policy: syntax error, or a malformed/unsigned PKCS#7 container",
    _errno.EINVAL: "invalid value: bad version number or digest hex, name mismatch on update, "
    "activating an older policy, a boolean write that is not true, or a corrupted RSA signature",
    _errno.ERANGE: "version component out of range (each of major.minor.rev must be 0..65535)",
    _errno.EEXIST: "a policy with this name is already loaded",
    _errno.ESTALE: "anti-rollback: an update must carry a strictly higher version than the loaded policy",
    _errno.ENOKEY: "signer not trusted: no key in the secondary or platform keyring verifies this policy",
    _errno.EKEYREJECTED: "signature verification failed: tampered content, a detached signature, signed "
    "attributes with S/MIME capabilities or a wrong messageDigest, or an unusable key",
    _errno.ENOENT: "no such policy (deleted meanwhile), or no PKCS#7 for an unsigned boot policy",
    _errno.EPERM: "not permitted: CAP_MAC_ADMIN is required, or the active policy cannot be deleted",
    _errno.EACCES: "access denied by the IPE policy, or a policy name that is not a valid directory name",
    _errno.ENAMETOOLONG: "policy name longer than 255 bytes cannot become a securityfs directory",
    _errno.ENOMEM: "out of memory",
    _errno.ENOPKG: "unsupported algorithm in the PKCS#7 signature",
    _errno.ENODATA: "the PKCS#7 container carries no policy text (detached signature)",
    _errno.EFAULT: "bad user buffer",
    _errno.EMSGSIZE: "PKCS#7 blob over 65535 bytes: the kernel's ASN.1 decoder refuses it",
    _errno.E2BIG: "the blob does not fit one securityfs write",
    _errno.EOPNOTSUPP: "IPE is not enabled in this kernel",
}


def errno_name(number: int) -> str:
    """Return the symbolic name (``EBADMSG``) of an errno number, or ``E<n>`` if unknown."""
    return _errno.errorcode.get(number, f"E{number}")


def errno_meaning(number: int) -> str:
    """Return the IPE meaning of an errno, falling back to the C library's text."""
    import os

    return IPE_ERRNO_MEANINGS.get(number, os.strerror(number))


def describe_errno(number: int) -> str:
    """``EBADMSG (invalid policy: ...)``: the form every iped error message uses."""
    return f"{errno_name(number)} ({errno_meaning(number)})"


class ErrnoMeaning:
    """``errno_name`` and ``meaning`` for an error that carries the kernel's errno in ``errno``."""

    errno: int

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno)

    @property
    def meaning(self) -> str:
        return errno_meaning(self.errno)
