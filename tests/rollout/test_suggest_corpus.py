"""Survey and suggest on the real records of the lab corpus: what Debian's 6.12 and 7.x kernels wrote.

Each evaluation case of the corpus loads one policy, activates it and runs probes; the truth
file holds the exact 1420 bodies the kernel wrote and the measured facts of each probe target.
Fed those records, ``survey`` must reach the kernel's own decision and name the kernel's own
rule for every access, and ``suggest`` must turn every kernel denial of a file with a property
into a rule that the replay (and the kernel's semantics) then allows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from iped.audit.records import parse_access
from iped.rollout.facts import FactsResolver
from iped.rollout.observe import Observations
from iped.rollout.policies import starter_policy
from iped.rollout.suggest import suggest
from iped.rollout.survey import survey
from tests.lab.corpus.cases import PROBE_TARGETS, Case, load_cases
from tests.lab.corpus.template import expand
from tests.lab.corpus.truth import load_truth
from tests.lab.emulator_backend import EmulatorBackend

SERIES = ("6.12", "7")
_PLACEHOLDER = re.compile(r"\{(pid|ino|fact:[^}]*|sha256:[^}]*)\}")


def _concrete(body: str, facts: dict[str, str]) -> str:
    def value(m: re.Match[str]) -> str:
        kind, _, label = m.group(1).partition(":")
        if kind in ("pid", "ino"):
            return "4242" if kind == "pid" else "17"
        label, bar, case = label.partition("|")  # "|upper": the kernel printed the digest upper-case
        text = facts[label] if kind == "fact" else hashlib.sha256(label.encode()).hexdigest()
        return text.upper() if bar and case == "upper" else text

    return _PLACEHOLDER.sub(value, body)


def _policy_text(case: Case, facts: dict[str, str]) -> bytes | None:
    """The one policy a case loads and activates, or None (several policies, or none)."""
    blobs = [s.blob for s in case.steps if s.blob is not None]
    if len(blobs) != 1 or blobs[0].transform or blobs[0].sign not in ("rsa", "ec"):
        return None
    return expand(blobs[0].text, case, facts).encode("latin-1")


def _cases(series: str) -> Iterator[tuple[Case, bytes, list[str]]]:
    truth = load_truth(series)
    facts = truth["_facts"]
    for case in load_cases():
        recorded: dict[str, Any] | None = truth.get(case.id)
        if case.group != "evaluation" or recorded is None:
            continue
        text = _policy_text(case, facts)
        if text is None or any(step["result"] != "0" for step in recorded["steps"][:2]):
            continue
        bodies = [
            _concrete(rec.partition(" ")[2], facts)
            for step in recorded["steps"]
            for rec in step.get("audit", [])
            if rec.startswith("1420 ")
        ]
        if bodies:
            yield case, text, bodies


def _resolver(series: str) -> FactsResolver:
    backend = EmulatorBackend(series, load_truth(series)["_facts"])
    infos = [backend.file_info(t) for t in PROBE_TARGETS]
    return FactsResolver({i.path: i for i in infos if i is not None})


@pytest.mark.parametrize("series", SERIES)
def test_survey_reaches_the_kernels_decision_and_rule(series: str) -> None:
    resolver = _resolver(series)
    compared = 0
    for case, text, bodies in _cases(series):
        obs = Observations()
        kernel: dict[object, set[str | None]] = {}
        for n, body in enumerate(bodies):
            rec = parse_access(body)
            obs.add(rec, float(n))
            kernel.setdefault((rec.op, rec.hook, rec.path, rec.dev, rec.ino), set()).add(rec.rule)
        report = survey(text, case.id, obs, resolver, obs.records)
        for verdict in report.verdicts:
            rules = kernel[verdict.observation.key]
            assert rules == {verdict.rule}, f"{series}:{case.id}: kernel {rules}, survey {verdict.rule}"
            compared += 1
    assert compared >= 30, compared  # the corpus holds dozens of evaluation records per kernel


@pytest.mark.parametrize("series", SERIES)
def test_suggest_from_everything_the_kernel_saw_run(series: str) -> None:
    """Every access of every evaluation case, against the starter policy (deny EXECUTE by default)."""
    facts = load_truth(series)["_facts"]
    obs = Observations()
    for _, _, bodies in _cases(series):
        for body in bodies:
            obs.add(parse_access(body), 0.0)
    result = suggest(starter_policy("site"), "starter", obs, _resolver(series), obs.records)
    assert sorted(r.text for r in result.rules) == sorted([
        "op=EXECUTE boot_verified=TRUE action=ALLOW",
        # dm-0 (plain) and dm-1 (signed) carry the same image: one root hash covers both volumes
        f"op=EXECUTE dmverity_roothash=sha256:{facts['dmverity.roothash']} action=ALLOW",
        # fsv/plain and fsv/signed have the same content: one digest
        f"op=EXECUTE fsverity_digest=sha256:{facts['fsverity:plain.digest']} action=ALLOW",
    ])  # fmt: skip
    flagged = {(f.verdict.observation.path, f.kind) for f in result.flagged}
    assert {path for path, kind in flagged if kind == "no_property"} == {
        facts["tmpfs.path"],
        facts["fsverity:none.path"],
    }
    assert {kind for _, kind in flagged} == {"no_property", "no_file"}
    assert not result.replay.unexpected and len(result.replay.still_denied) == len(result.flagged)
