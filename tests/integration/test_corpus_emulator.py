"""The emulator against the recorded kernel truth: one item per corpus case per kernel series.

Each item replays one case on a fresh :class:`iped.emulator.Emulator` of the matching ABI,
fed with the facts the lab measured (``_facts``), and compares every step (errno, bytes read
back, audit bodies) with ``tests/corpus/truth/<series>.json``.  A mismatch is a real
emulator bug (or a kernel change to model): the failure shows the differing bytes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.policies import policy_text
from tests.lab.corpus.blobs import build_blob
from tests.lab.corpus.cases import BlobSpec, Case, CorpusError, Step, load_cases
from tests.lab.corpus.executor import run_cases
from tests.lab.corpus.normalise import Normaliser, fact_placeholders, render_bytes
from tests.lab.corpus.template import expand
from tests.lab.corpus.truth import compare, load_truth, stale_truth, truth_path
from tests.lab.emulator_backend import ABI_OF_SERIES, EmulatorBackend

CASES = load_cases()


@functools.cache
def _truth(series: str) -> dict[str, Any]:
    if not truth_path(series).exists():
        pytest.fail(f"{truth_path(series)} is missing: record it with python -m tests.lab.record_truth")
    return load_truth(series)


@pytest.mark.parametrize("series", sorted(ABI_OF_SERIES))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_emulator_matches_kernel_truth(case: Case, series: str) -> None:
    truth = _truth(series)
    stale = stale_truth(case, truth)
    assert not stale, f"{series}: {stale}"
    backend = EmulatorBackend(series, truth["_facts"])
    observed = run_cases(backend, [case], finish=False)[case.id]
    diffs = compare(truth[case.id], observed)
    header = f"emulator ({series}) differs from the kernel on {case.id}: {case.description}"
    assert not diffs, header + "\n" + "\n".join(diffs)


def test_corpus_size_and_truth_coverage() -> None:
    """The corpus keeps its promised size and every case has truth for every series."""
    assert len(CASES) >= 280
    for series in ABI_OF_SERIES:
        truth = _truth(series)
        missing = [c.id for c in CASES if c.id not in truth]
        stale = sorted(set(truth) - {c.id for c in CASES} - {"_meta", "_facts"})
        assert not missing, f"{series}: cases without truth: {missing}"
        assert not stale, f"{series}: truth for cases that no longer exist: {stale}"


# --------------------------------------------------------------------------- the corpus machinery


def _write_cases(tmp_path: Path, body: str) -> Path:
    (tmp_path / "10-x.toml").write_text(body)
    return tmp_path


def test_loader_orders_epoch_cases_last(tmp_path: Path) -> None:
    d = _write_cases(tmp_path, """
[[case]]
id = "late"
epoch = 7
steps = [{read = "enforce"}]
[[case]]
id = "early"
epoch = 3
steps = [{read = "enforce"}]
[[case]]
id = "plain"
steps = [{set = {enforce = "0"}}]
""")
    cases = load_cases(d)
    assert [c.id for c in cases] == ["plain", "early", "late"]
    assert cases[0].steps[0] == Step("write", path="enforce", data=b"0")
    assert cases[1].name == "c-early"


@pytest.mark.parametrize(("body", "message"), [
    ('[[case]]\nid = "a"\nepoch = 1\nsteps = [{read = "x"}]\n[[case]]\nid = "b"\nepoch = 1\nsteps = [{read = "x"}]\n',
     "epochs must be unique"),
    ('[[case]]\nid = "a"\nsteps = [{read = "x"}]\n[[case]]\nid = "a"\nsteps = [{read = "x"}]\n', "duplicate case id"),
    ('[[case]]\nid = "a"\nepoch = 1\nsteps = [{read = "x"}]\n[[case]]\nid = "b"\nepoch = 2\nbase = false\n'
     'steps = [{read = "x"}]\n', "only the lowest epoch"),
    ('[[case]]\nid = "a"\nsteps = [{write = "new_policy"}]\n', "exactly one of data, data_hex, blob"),
    ('[[case]]\nid = "a"\nsteps = [{exec = "nowhere"}]\n', "unknown target"),
    ('[[case]]\nid = "a"\nsteps = [{read = "x", write = "y", data = ""}]\n', "exactly one of"),
    ('[[case]]\nid = "A b"\nsteps = [{read = "x"}]\n', "id must be"),
    ('[[case]]\nid = "a"\nsteps = [{write = "x", data = "\\u20ac"}]\n', r"above U\+00FF"),
], ids=["duplicate-epoch", "duplicate-id", "base-false", "write-without-data", "unknown-target", "two-verbs",
        "bad-id", "non-latin1"])
def test_loader_rejects(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CorpusError, match=message):
        load_cases(_write_cases(tmp_path, body))


def test_blob_transformations() -> None:
    text = policy_text("t", "0.0.0")
    der = build_blob(BlobSpec("a", ""), text)
    assert der[:1] == b"\x30" and text in der
    assert build_blob(BlobSpec("a", "", sign="none"), text) == text
    assert build_blob(BlobSpec("a", "", transform=("truncated:10",)), text) == der[:-10]
    assert build_blob(BlobSpec("a", "", transform=("trailing:00ff",)), text) == der + b"\x00\xff"
    assert build_blob(BlobSpec("a", "", transform=("double",)), text) == der + der
    pem = build_blob(BlobSpec("a", "", transform=("pem",)), text)
    assert pem.startswith(b"-----BEGIN PKCS7-----\n")
    assert base64.b64decode(b"".join(pem.splitlines()[1:-1])) == der
    tampered = build_blob(BlobSpec("a", "", transform=("tampered",)), text)
    assert len(tampered) == len(der) and sum(x != y for x, y in zip(tampered, der, strict=True)) == 1
    assert text not in tampered
    detached = build_blob(BlobSpec("a", "", transform=("detached",)), text)
    assert text not in detached
    padded = build_blob(BlobSpec("a", "", sign="none", transform=("pad:100",)), text)
    assert len(padded) == 100 and padded.startswith(text)
    sha1 = build_blob(BlobSpec("a", "", hash="sha1"), text)
    assert text in sha1 and bytes.fromhex("06052b0e03021a") in sha1  # OID 1.3.14.3.2.26 (sha1)


def test_normaliser_and_templates() -> None:
    norm = Normaliser()
    blob = b"some blob"
    norm.add_blob("p", blob)
    digest = hashlib.sha256(blob).hexdigest().upper().encode()
    assert norm.apply(b"policy_digest=sha256:" + digest + b" x") == b"policy_digest=sha256:{sha256:p|upper} x"
    facts = {"fsverity:plain.digest": "ab01"}
    fact_placeholders(norm, facts)
    upper = b'fsverity_digest="sha256":{fact:fsverity:plain.digest|upper} '
    assert norm.apply(b'fsverity_digest="sha256":AB01 ') == upper
    case = Case("x", "g", "", (Step("read", path="enforce"),), name="nm", epoch=12)
    assert expand("{name} {epoch}.0.0 {fact:fsverity:plain.digest|upper} {}", case, facts) == "nm 12.0.0 AB01 {}"
    assert render_bytes(b"a\tb\n") == "a\tb\n" and render_bytes(b"\xff") == {"hex": "ff"}
