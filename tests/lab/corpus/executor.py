"""The step executor: runs cases in one long-lived kernel (or emulator) and returns
normalised, JSON-ready results (see :mod:`tests.lab.corpus` for the epoch rules)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.lab.corpus.backend import Backend, errno_text
from tests.lab.corpus.blobs import build_blob, housekeeping_blob
from tests.lab.corpus.cases import Case, Probe, Step, final_epoch
from tests.lab.corpus.normalise import Normaliser, fact_placeholders, render_audit, render_bytes
from tests.lab.corpus.template import expand

#: Audit record types the corpus keeps (IPE's three + MAC_STATUS for enforce toggles).
IPE_TYPES = (1420, 1421, 1422, 1404)
#: The size bisection gives up above this (the guest has 2 GiB of RAM).
SIZE_LIMIT_CAP = 1 << 26


def _write_all(backend: Backend, path: str, data: bytes) -> str:
    try:
        n = backend.write(path, data)
    except OSError as exc:
        return errno_text(exc)
    return "0" if n == len(data) else f"short:{n}"


def _housekeeping(backend: Backend, kind: str, epoch: int) -> None:
    """Load and activate an allow-all policy; errors here mean the run is broken."""
    backend.write("new_policy", housekeeping_blob(kind, epoch))
    backend.write(f"policies/corpus-{kind}-{epoch}/active", b"1")


def _delete_inactive(backend: Backend, keep: Iterable[str] = ()) -> None:
    try:
        names = backend.listdir("policies")
    except OSError:
        return
    for n in names:
        if n in keep:
            continue
        try:
            if backend.read(f"policies/{n}/active") == b"0":
                backend.write(f"policies/{n}/delete", b"1")
        except OSError:
            pass


@dataclass
class CaseRun:
    """State of one running case: its normaliser and its built blobs by label."""

    case: Case
    facts: Mapping[str, str]
    norm: Normaliser = field(default_factory=Normaliser)
    blobs: dict[str, bytes] = field(default_factory=dict)


def _probe_name(p: Probe) -> str:
    extra = f" {p.prot}" if p.kind != "exec" else ""
    if p.kind == "mprotect":
        extra += f"->{p.to}"
    return f"{p.kind} {p.target}{extra}"


def _size_limit(backend: Backend, path: str) -> dict[str, Any]:
    """Bisect the largest single write ``path`` still parses (junk blob: EBADMSG, else ENOMEM...).

    Junk (0x30 bytes) is never a valid PKCS#7, so every size the kernel accepts into its
    buffer fails with the parser's errno; the first size it refuses fails differently.
    """
    def attempt(n: int) -> str:
        return _write_all(backend, path, b"0" * n)

    small = attempt(1)
    lo, hi = 1, 1 << 16
    while attempt(hi) == small:
        if hi >= SIZE_LIMIT_CAP:
            return {"largest": f">={hi}", "errno_at_largest": small}
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attempt(mid) == small:
            lo = mid
        else:
            hi = mid
    backend.drain_audit(None)  # the step keeps only the records of the two boundary writes
    return {"largest": lo, "errno_at_largest": attempt(lo), "errno_above": attempt(hi)}


def run_step(backend: Backend, run: CaseRun, step: Step) -> dict[str, Any]:
    """Execute one step and return its normalised record (audit included)."""
    case = run.case
    path = expand(step.path, case, run.facts)
    out: dict[str, Any] = {}
    probe_pid: int | None = None
    if step.verb == "write":
        if step.blob is not None:
            text = expand(step.blob.text, case, run.facts).encode("latin-1")
            data = build_blob(step.blob, text)
            run.blobs[step.blob.label] = data
            run.norm.add_blob(step.blob.label, data)
            out["step"] = f"write {path} <{step.blob.label}>"
        else:
            data = step.data or b""
            out["step"] = f"write {path} " + json.dumps(data.decode("latin-1"))
        results = [_write_all(backend, path, data) for _ in range(step.repeat)]
        out["result"] = results[0] if step.repeat == 1 else results
    elif step.verb == "read":
        out["step"] = f"read {path}"
        try:
            data = backend.read(path)
        except OSError as exc:
            out["result"] = errno_text(exc)
        else:
            out["result"] = "0"
            label = next((lb for lb, b in run.blobs.items() if b == data and data), None)
            out["data"] = "{blob:" + label + "}" if label else render_bytes(run.norm.apply(data))
    elif step.verb == "listdir":
        out["step"] = f"listdir {path}"
        try:
            names = backend.listdir(path)
        except OSError as exc:
            out["result"] = errno_text(exc)
        else:
            out["result"] = "0"
            out["data"] = [render_audit(0, n.encode("latin-1"))[2:] for n in sorted(names)]
    elif step.verb == "stat":
        out["step"] = f"stat {path}"
        try:
            mode = backend.stat(path)
        except OSError as exc:
            out["result"] = errno_text(exc)
        else:
            out["result"] = "0"
            kind = "dir" if (mode & 0o170000) == 0o040000 else "file"
            out["data"] = f"{kind} {mode & 0o7777:04o}"
    elif step.verb == "size_limit":
        out["step"] = f"size_limit {path}"
        out["result"] = "0"
        out["data"] = _size_limit(backend, path)
    else:
        assert step.probe is not None
        out["step"] = _probe_name(step.probe)
        outcome = backend.probe(step.probe)
        out["result"] = outcome.result
        probe_pid = outcome.pid
    out["audit"] = _step_audit(backend.drain_audit(probe_pid), run, step, probe_pid)
    return out


def _step_audit(records: list[tuple[int, bytes]], run: CaseRun, step: Step, probe_pid: int | None) -> list[str]:
    """The IPE records of one step, normalised: the probe's pid and inode become placeholders."""
    subs: list[tuple[bytes, bytes]] = []
    if probe_pid is not None:
        subs.append((f" pid={probe_pid} ".encode(), b" pid={pid} "))
        ino = run.facts.get(f"{step.probe.target}.ino") if step.probe is not None else None
        if ino is not None:
            subs.append((f" ino={ino} ".encode(), b" ino={ino} "))
    audit: list[str] = []
    for rtype, raw in records:
        if rtype not in IPE_TYPES:
            continue
        body = raw
        for needle, placeholder in subs:
            body = body.replace(needle, placeholder)
        audit.append(render_audit(rtype, run.norm.apply(body)))
    return audit


def run_case(backend: Backend, case: Case, defaults: Mapping[str, bytes]) -> dict[str, Any]:
    """Run one case with its prologue/epilogue housekeeping; returns its result record."""
    facts = backend.facts()
    run = CaseRun(case, facts)
    fact_placeholders(run.norm, facts)
    if case.epoch is not None:
        run.norm.add_blob("corpus-base", housekeeping_blob("base", case.epoch))
    if case.epoch is not None and case.base:
        _housekeeping(backend, "base", case.epoch)
        _delete_inactive(backend)
    backend.drain_audit(None)
    steps: list[dict[str, Any]] = []
    error = ""
    try:
        for step in case.steps:
            steps.append(run_step(backend, run, step))
    except Exception as exc:  # a broken step must not stop the other cases
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if case.epoch is not None:
            try:
                _housekeeping(backend, "after", case.epoch)
            except OSError as exc:
                error = error or f"housekeeping failed: {errno_text(exc)}"
        for key, value in defaults.items():
            try:
                if backend.read(key) != value:
                    backend.write(key, value)
            except OSError:
                pass
        _delete_inactive(backend)
        backend.drain_audit(None)
    record: dict[str, Any] = {"group": case.group, "steps": steps}
    if error:
        record["error"] = error
    return record


def run_cases(backend: Backend, cases: Sequence[Case],
              progress: Callable[[str], None] | None = None, *, finish: bool = True) -> dict[str, Any]:
    """Run ``cases`` in order on one backend; returns ``{case id: record}``.

    With ``finish``, an allow-all ``corpus-end-<max+1>`` policy stays active after the last
    epoch case, so later guest tests run unhindered (they must activate versions >=
    ``<max+1>.0.0``).
    """
    defaults = {"enforce": backend.read("enforce"), "success_audit": backend.read("success_audit")}
    results: dict[str, Any] = {}
    for case in cases:
        if progress is not None:
            progress(case.id)
        results[case.id] = run_case(backend, case, defaults)
    if finish and any(c.epoch is not None for c in cases):
        _housekeeping(backend, "end", final_epoch(cases))
        _delete_inactive(backend)
        backend.drain_audit(None)
    return results
