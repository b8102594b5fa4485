"""Explanations: rule -> policy line via the kernel rendering, errnos, and --path evaluation."""

from __future__ import annotations

from iped.audit.explain import PolicyIndex, explain_access, explain_file, explain_load
from iped.audit.records import parse_access, parse_policy_load
from tests.helpers.paths import AUDIT_GOLDEN
from tests.helpers.policies import policy_text

GOLDEN = AUDIT_GOLDEN
POLICY = (GOLDEN / "policy.pol").read_bytes()
DIGEST = "FD88F2B8824E197F850BF4C5109BEA5CF0EE38104F710843BB72DA796BA5AF9E"


def access(rule: str, enforcing: int = 1) -> str:
    return f'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing={enforcing} pid=1 comm="sh" path="/x" dev="vda1" ino=2 rule="{rule}"'  # noqa: E501


def test_index_maps_every_rule_and_default() -> None:
    idx = PolicyIndex.from_text(POLICY, "p.pol")
    assert (idx.name, idx.version) == ("golden", "1.2.3")
    # the policy spells the digest in lower case; the kernel record prints upper case, quoted alg
    loc = idx.locate(f'op=EXECUTE fsverity_digest="sha256":{DIGEST} action=ALLOW')
    assert loc is not None and (loc.line, loc.kind) == (7, "rule")
    assert str(idx.locate("DEFAULT op=KMODULE action=DENY")) == "p.pol:4"
    assert idx.locate("op=EXECUTE action=ALLOW") is None


def test_first_of_identical_rules_wins() -> None:
    text = policy_text("d", "0.0.1", *["op=EXECUTE boot_verified=TRUE action=DENY"] * 2)
    loc = PolicyIndex.from_text(text, "d").locate("op=EXECUTE boot_verified=TRUE action=DENY")
    assert loc is not None and loc.line == 3


def test_explain_permissive_denial() -> None:
    idx = PolicyIndex.from_text(POLICY, "p.pol")
    ex = explain_access(parse_access(access("DEFAULT action=DENY", enforcing=0)), idx)
    assert (ex.decision, ex.blocked, ex.match) == ("DENY", False, "global_default")
    assert "permissive" in ex.summary and ex.summary.endswith("p.pol:3")


def test_explain_rule_not_in_file() -> None:
    idx = PolicyIndex.from_text(POLICY, "p.pol")
    ex = explain_access(parse_access(access("op=EXECUTE dmverity_signature=FALSE action=DENY")), idx)
    assert ex.location is None and "active policy differs" in ex.summary


def test_explain_load_errnos() -> None:
    body = "policy_name=? policy_version=? policy_digest=? auid=0 ses=1 lsm=ipe res=0 errno=-{}"
    assert explain_load(parse_policy_load(body.format(116))).startswith(
        "policy load/update failed: ESTALE (anti-rollback"
    )
    assert "EKEYREJECTED (signature verification failed" in explain_load(parse_policy_load(body.format(129)))
    assert "ENOKEY (signer not trusted" in explain_load(parse_policy_load(body.format(126)))


def test_explain_file_denied_names_failed_property() -> None:
    from iped.emulator import FileInfo

    info = FileInfo("/usr/bin/tool", "vda1", 9, fsverity_digest=("sha256", bytes(32)))
    res = explain_file(POLICY, "p.pol", info, "EXECUTE")
    assert (res.decision, res.decided_by, res.location.line) == ("DENY", "global DEFAULT", 3)
    assert [(c.line, c.failed) for c in res.allowing] == [
        (6, "boot_verified=TRUE"),
        (7, f"fsverity_digest=sha256:{DIGEST}"),
        (8, "dmverity_signature=TRUE"),
    ]
    assert res.lines()[1].startswith("  p.pol:6 would allow it if boot_verified=TRUE held")


def test_explain_file_allowed_by_rule() -> None:
    from iped.emulator import FileInfo

    info = FileInfo("/t", "vda1", 9, fsverity_digest=("sha256", bytes.fromhex(DIGEST)))
    res = explain_file(POLICY, "p.pol", info, "EXECUTE")
    assert (res.decision, res.decided_by, res.location.line) == ("ALLOW", "rule", 7)
    assert res.checks[1].failed is None
