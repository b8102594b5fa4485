"""``<alg>:<hex>`` digest values (security/ipe/digest.c)."""

from __future__ import annotations

import errno
from dataclasses import dataclass

_HEX_VALUES = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}


@dataclass(frozen=True, slots=True)
class Digest:
    """A parsed digest (``struct digest_info``): algorithm name as written, decoded bytes."""

    alg: bytes
    digest: bytes


class DigestError(ValueError):
    """digest_parse() failure carrying the kernel's errno."""

    def __init__(self, errno_: int, reason: str) -> None:
        super().__init__(reason)
        self.errno = errno_
        self.reason = reason


def digest_parse(valstr: bytes) -> Digest:
    """Parse ``alg:hex`` as ipe_digest_parse() does.

    The algorithm is everything before the first ``:`` and is not validated (IPE does not
    restrict it). The hex part is decoded like hex2bin() over ``(len + 1) // 2`` bytes, so an
    odd length reads the terminating NUL and fails.

    Raises DigestError: EBADMSG no ``:``; EINVAL hex not valid or of odd length.
    """
    sep = valstr.find(b":")
    if sep < 0:
        raise DigestError(errno.EBADMSG, "digest must be written <algorithm>:<hex>")
    alg, raw = valstr[:sep], valstr[sep + 1 :]
    if len(raw) % 2:
        raise DigestError(errno.EINVAL, "digest hex has an odd number of digits")
    try:
        out = bytes(_HEX_VALUES[raw[i]] << 4 | _HEX_VALUES[raw[i + 1]] for i in range(0, len(raw), 2))
    except KeyError:
        raise DigestError(errno.EINVAL, "digest contains a character that is not hex") from None
    return Digest(alg, out)

