"""Roll *forward* to the previously deployed content of the active policy.

IPE never activates or updates to a lower (or, for update, equal) version, so "rollback" is: take
the policy text that was active before (kept in the state dir's ``texts/``), give it a version one
above the current one, and write it to the daemon's own rolled-forward dir in the state dir, in
the format of the file that declares the policy (``*.pol`` as text; ``*.p7s`` re-signed with the
local key). The scan overlays it on that file until the drop-in dir declares a version as high
(:func:`iped.daemon.declared.overlay_rolled_forward`), so the declared state says the same as
the kernel after the reconcile that follows -- and the drop-in dir, config management's, is
never written (under the unit's ProtectSystem=strict it cannot be). Without a local signing key
this is impossible by design (the key is not on the host): the error says what to do instead.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from iped.daemon.actual import read_actual
from iped.daemon.declared import PLAIN_SUFFIX, SIGNED_SUFFIX
from iped.daemon.plan import next_version
from iped.daemon.planlog import atomic_write
from iped.daemon.reconcile import Reconciler
from iped.emulator.policy_parser import PolicyError, Version, parse_policy


class RollbackError(Exception):
    def __init__(self, errno_: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_
        self.message = message


@dataclass(frozen=True, slots=True)
class RollbackPlan:
    name: str
    current: Version
    new_version: Version
    from_digest: str
    target: Path
    text: bytes


_VERSION = re.compile(rb"policy_version=[^\s#]+")


def restamp(text: bytes, version: Version, note: str) -> bytes:
    """The same policy with ``policy_version`` replaced (first occurrence: the header)."""
    out, n = _VERSION.subn(b"policy_version=" + str(version).encode(), text, count=1)
    if n != 1:
        raise RollbackError(errno.EBADMSG, "the old policy text has no policy_version= header")
    return f"# {note}\n".encode() + out


def prepare(rec: Reconciler) -> RollbackPlan:
    """Find the previous content of the active policy and build its rolled-forward text."""
    actual = read_actual(rec.backend)
    cur = actual.active
    if cur is None:
        raise RollbackError(errno.ENOENT, "no policy is active; nothing to roll back")
    pol = rec.settings.policies
    if pol.signing_key is None or pol.signing_cert is None:
        raise RollbackError(errno.ENOKEY,
                            "rollback re-signs the previous content with a higher version, which needs "
                            "[policies] signing_key and signing_cert. Without a key on this host: sign the "
                            f"previous policy text with policy_version above {cur.version} elsewhere and drop "
                            f"the .p7s into {pol.dir}, replacing the current file, then 'iped reload'.")
    from iped.trustpath import check_private_key, error_line

    try:  # the rule 'iped sign' and the daemon apply to the key: said before anything is planned
        check_private_key(pol.signing_key)
    except OSError as e:
        raise RollbackError(e.errno or errno.EIO, error_line(e)) from None
    try:
        target_digest = next((d for d in reversed(rec.plan_log.chain(cur.name))
                              if d != cur.text_digest and rec.plan_log.load_text(d) is not None), None)
    except OSError as e:  # never taken for "no history": say what cannot be read
        number = e.errno or errno.EIO
        raise RollbackError(number, f"cannot read the rollback history {e.filename or rec.plan_log.chain_file}: "
                                    f"{e.strerror or os.strerror(number)}") from None
    if target_digest is None:
        raise RollbackError(errno.ENOENT, f"no earlier content of {cur.name!r} in {rec.plan_log.chain_file} "
                                          "(it keeps the last [daemon] history deployments of each policy)")
    old = rec.plan_log.load_text(target_digest)
    assert old is not None
    decl = rec.scan()
    dp = decl.get(cur.name)
    if dp is None:
        raise RollbackError(errno.ENOENT,
                            f"no valid file in {pol.dir} declares the active policy {cur.name!r} ('iped status' "
                            "says why): rollback rolls a declared policy forward, and only while a file declares it")
    base = max(cur.version, dp.version, key=lambda v: v.as_u64())
    new_version = next_version(base)
    note = (f"rolled forward by 'iped rollback' {time.strftime('%Y-%m-%dT%H:%M:%S%z')}: content of "
            f"sha256:{target_digest[:16]} re-issued as {new_version} (was {cur.version})")
    text = restamp(old, new_version, note)
    try:
        parsed = parse_policy(text)
    except PolicyError as e:
        raise RollbackError(e.errno, f"the restamped text does not parse: {e}") from None
    if parsed.version != new_version:
        raise RollbackError(errno.EINVAL, "restamping the version failed")
    target = rec.plan_log.rolled_forward / f"{cur.name}{dp.source.suffix}"
    return RollbackPlan(cur.name, cur.version, new_version, target_digest, target, text)


def write(rec: Reconciler, plan: RollbackPlan) -> None:
    """Write the rolled-forward policy to the daemon's rolled-forward dir (re-signing a ``.p7s``),
    in the declaring file's format; the scan overlays it on the drop-in dir's file."""
    data = plan.text
    if plan.target.suffix != PLAIN_SUFFIX:
        from iped.pkcs7 import sign_policy

        pol = rec.settings.policies
        assert pol.signing_key is not None and pol.signing_cert is not None
        from iped.trustpath import error_line, read_private_key, read_trusted

        try:
            data = sign_policy(plan.text, read_private_key(pol.signing_key),
                               read_trusted(pol.signing_cert, "the signing certificate"))
        except OSError as e:
            raise RollbackError(e.errno or errno.EIO, error_line(e)) from None
    try:
        plan.target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for other in (SIGNED_SUFFIX, PLAIN_SUFFIX):  # one file per name: the other format's goes
            if other != plan.target.suffix:
                plan.target.with_suffix(other).unlink(missing_ok=True)
        atomic_write(plan.target, data, 0o600)
    except OSError as e:  # ENOSPC, EROFS, EACCES: say which and where, not "internal error"
        number = e.errno or errno.EIO
        # (the reply carries the errno's name; the message names the file, not a temp file's name)
        raise RollbackError(number, f"cannot write the rolled-forward policy {plan.target}: "
                                    f"{e.strerror or os.strerror(number)}; the kernel is untouched") from None
