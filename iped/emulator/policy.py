"""Policy objects and their life cycle: load, update in place, activate (security/ipe/policy.c).

A :class:`~iped.emulator.types.Policy` (declared with the header types, as policy.h declares
``struct ipe_policy``) is immutable: the PKCS#7 blob as written (None for the boot policy), the
policy text (the PKCS#7 inner content, or the compiled-in text) and the parsed policy. A
:class:`PolicyNode` is the policy directory's ``i_private``: update swaps the policy inside it,
delete empties it.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iped.emulator.audit import (
    AUDIT_IPE_CONFIG_CHANGE,
    AUDIT_IPE_POLICY_LOAD,
    audit_policy_activation,
    audit_policy_load,
)
from iped.emulator.compiled import compile_policy
from iped.emulator.keyring import verify_pkcs7_signature
from iped.emulator.policy_parser import PolicyError, parse_policy
from iped.emulator.types import Policy, kernel_error

if TYPE_CHECKING:
    from iped.emulator.state import Ipe


@dataclass(eq=False)
class PolicyNode:
    """``root->i_private`` of ``policies/<name>/``: the policy, or None once deleted."""

    policy: Policy | None


def new_policy(emu: Ipe, text: bytes | None, pkcs7: bytes | None) -> Policy:
    """ipe_new_policy(): unsigned ``text`` (boot policy only) or a signed ``pkcs7`` blob.

    Raises OSError: EBADMSG/ENOPKG/EKEYREJECTED/ENOKEY/ENODATA from signature verification;
    EBADMSG/EINVAL/ERANGE from the parser (the PolicyError is chained as ``__cause__``).
    """
    if pkcs7 is not None:
        body = verify_pkcs7_signature(pkcs7, emu.keyrings, emu.config)
    else:
        assert text is not None
        nul = text.find(b"\0")
        body = text if nul < 0 else text[:nul]  # kstrdup()
    try:
        parsed = parse_policy(body)
    except PolicyError as e:
        raise kernel_error(e.errno, str(e)) from e
    return Policy(body, pkcs7, parsed)


def update_policy(emu: Ipe, node: PolicyNode, pkcs7: bytes) -> None:
    """ipe_update_policy(): replace ``node``'s policy with a signed, strictly newer one.

    Raises OSError: ENOENT deleted meanwhile; any new_policy() errno; EINVAL other name;
    ESTALE version not strictly higher than the policy being replaced (not the active one).
    On success: AUDIT_IPE_POLICY_LOAD for the new policy, then AUDIT_IPE_CONFIG_CHANGE if the
    old one was active (the new one is active from now on).
    """
    old = node.policy
    if old is None:
        raise kernel_error(errno.ENOENT, "the policy was deleted")
    new = new_policy(emu, None, pkcs7)
    if new.parsed.name != old.parsed.name:
        raise kernel_error(errno.EINVAL, "the update carries another policy_name")
    if old.parsed.version.as_u64() >= new.parsed.version.as_u64():
        raise kernel_error(errno.ESTALE, f"version {new.parsed.version} is not above {old.parsed.version}")
    node.policy = new
    emu.audit.log(AUDIT_IPE_POLICY_LOAD, audit_policy_load(new, emu.task, errno_field=emu.profile.policy_load_errno))
    if emu.state.active is old:
        _make_active(emu, new)
        emu.audit.log(AUDIT_IPE_CONFIG_CHANGE, audit_policy_activation(old, new, emu.task))


def _make_active(emu: Ipe, p: Policy) -> None:
    """rcu_assign_pointer(ipe_active_policy, p), with the policy compiled once here."""
    emu.state.compiled = compile_policy(p.parsed, emu.config)
    emu.state.active = p


def set_active_pol(emu: Ipe, p: Policy) -> None:
    """ipe_set_active_pol(): make ``p`` active; already active is a silent success.

    Raises OSError: EINVAL the active policy has a higher version (equal is allowed).
    """
    ap = emu.state.active
    if ap is p:
        return
    if ap is not None and ap.parsed.version.as_u64() > p.parsed.version.as_u64():
        raise kernel_error(errno.EINVAL, f"the active policy's version {ap.parsed.version} is higher")
    _make_active(emu, p)
    emu.audit.log(AUDIT_IPE_CONFIG_CHANGE, audit_policy_activation(ap, p, emu.task))


def activate_boot_policy(emu: Ipe, p: Policy) -> None:
    """ipe_init(): the boot policy becomes active directly, with no audit record."""
    _make_active(emu, p)
