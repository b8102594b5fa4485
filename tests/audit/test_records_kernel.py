"""Every IPE audit body the real kernels wrote in the lab parses losslessly.

The corpus truth (tests/corpus/truth/*.json) holds the exact bodies that Debian's 6.12 and 7.2
kernels emitted, with run-varying values as placeholders. Each body is made concrete, parsed
into its typed record, and rendered back with the kernel's own formats: the bytes must come
back unchanged. A parser that drops, mangles or mis-decodes a field fails here on real data.
"""

from __future__ import annotations

import pytest

from iped.audit.records import (
    IpeAccess,
    IpeConfigChange,
    IpeMacStatus,
    IpePolicyLoad,
    parse_access,
    parse_config_change,
    parse_mac_status,
    parse_policy_load,
)
from iped.emulator.audit import audit_untrusted
from tests.helpers.records import kernel_bodies

UNSET = 4294967295
def _id(n: int | None) -> int:
    return UNSET if n is None else n


def _untrusted(s: str | None) -> str:
    assert s is not None
    return audit_untrusted(s.encode("latin-1")).decode("latin-1")


def render_access(r: IpeAccess) -> str:
    file = "path=? dev=? ino=?" if r.path is None else (
        f"path={_untrusted(r.path)} dev={_untrusted(r.dev)} ino={r.ino}"
    )
    return (f"ipe_op={r.op} ipe_hook={r.hook} enforcing={int(bool(r.enforcing))} pid={r.pid} "
            f"comm={_untrusted(r.comm)} {file} rule=\"{r.rule}\"")


def _policy(prefix: str, name: str | None, version: str | None, digest: str | None, which: str) -> str:
    if name is None:
        return f"{prefix}{which}name=? {prefix}{which}version=? {prefix.replace('active_', '')}policy_digest=?"
    return (f'{prefix}{which}name="{name}" {prefix}{which}version={version} '
            f"{prefix.replace('active_', '')}policy_digest={digest}")


def render_config_change(r: IpeConfigChange) -> str:
    old = _policy("old_active_", r.old_name, r.old_version, r.old_digest, "pol_")
    new = _policy("new_active_", r.new_name, r.new_version, r.new_digest, "pol_")
    return f"{old} {new} auid={_id(r.auid)} ses={_id(r.ses)} lsm=ipe res={r.res}"


def render_policy_load(r: IpePolicyLoad) -> str:
    head = _policy("", r.name, r.version, r.digest, "policy_")
    tail = "" if r.errno is None else f" errno={r.errno}"
    return f"{head} auid={_id(r.auid)} ses={_id(r.ses)} lsm=ipe res={r.res}{tail}"


def render_mac_status(r: IpeMacStatus) -> str:
    return (f"enforcing={int(bool(r.enforcing))} old_enforcing={int(bool(r.old_enforcing))} auid={_id(r.auid)} "
            f"ses={_id(r.ses)} enabled=1 old-enabled=1 lsm=ipe res={r.res}")


BODIES = list(kernel_bodies())


def test_truth_has_every_record_kind_from_both_kernels() -> None:
    kinds = {(where.split(":")[0], rtype) for where, rtype, _ in BODIES}
    for kernel in ("6.12", "7"):
        for rtype in (1420, 1421, 1422, 1404):
            assert (kernel, rtype) in kinds, f"no {rtype} record from kernel {kernel} in the truth"
    assert any(rtype == 1422 and "errno=-" in body for _, rtype, body in BODIES), "no failed load on 7.x"


@pytest.mark.parametrize(("where", "rtype", "body"), [pytest.param(*b, id=f"{b[0]}-{i}") for i, b in enumerate(BODIES)])
def test_kernel_body_round_trips(where: str, rtype: int, body: str) -> None:
    if rtype == 1420:
        rendered = render_access(parse_access(body))
    elif rtype == 1421:
        rendered = render_config_change(parse_config_change(body))
    elif rtype == 1422:
        rendered = render_policy_load(parse_policy_load(body))
    else:
        status = parse_mac_status(body)
        if status is None:  # the kernel's second, empty 1404 record of every enforce change
            assert body == ""
            return
        rendered = render_mac_status(status)
    assert rendered == body
