"""The state dir's records under stress: concurrent writers keep every plan record, a corrupt
chain.json is reported and rebuilt, and a rollback that cannot write names the errno and path."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from iped.config import load_settings
from iped.daemon import runtime, service
from iped.daemon.planlog import PlanLog
from iped.daemon.reconcile import Reconciler
from tests.helpers.daemon import DaemonProc, RecordingReporter, Site, iped
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text


def reconciler(site: Site, reporter: RecordingReporter) -> Reconciler:
    settings = load_settings(site.config)
    return runtime.make_reconciler(settings, reporter)


WRITERS = 8
RECORDS_EACH = 12


def _write_records(state_dir: str, writer: int) -> None:
    log = PlanLog(Path(state_dir), keep=1000)
    for n in range(RECORDS_EACH):
        log.record({"writer": writer, "n": n})


def test_concurrent_writers_keep_every_plan_record(tmp_path: Path) -> None:
    """Processes recording at once each get their own sequence number: none overwrites another's."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_records, args=(str(tmp_path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    records = PlanLog(tmp_path, keep=1000).recent()
    assert len(records) == WRITERS * RECORDS_EACH
    assert sorted(r["seq"] for r in records) == list(range(1, WRITERS * RECORDS_EACH + 1))
    assert {(r["writer"], r["n"]) for r in records} == {(w, n) for w in range(WRITERS) for n in range(RECORDS_EACH)}


def test_concurrent_apply_once_runs_keep_every_plan_record(site: Site) -> None:
    """The issue's case: ``iped apply --once`` started several times at once, each one recorded."""
    runs = 6
    procs = [subprocess.Popen([sys.executable, "-m", "iped", "apply", "--once", "--config", str(site.config)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(runs)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * runs, errors
    seqs = sorted(json.loads(f.read_bytes())["seq"] for f in (site.state / "plans").glob("*.json"))
    assert seqs == list(range(1, runs + 1))


@pytest.mark.parametrize(("options", "name"), [("size=4k,nr_inodes=1", "ENOSPC"), ("ro", "EROFS")])
def test_rollback_that_cannot_write_names_the_errno_and_the_path(quiet_daemon: DaemonProc, options: str,
                                                                 name: str) -> None:
    """The rolled-forward dir on a full (ENOSPC) or read-only (EROFS) filesystem: the reply names
    the errno and the path, not "EIO: internal error: OSError"."""
    s = quiet_daemon.site
    s.put("base.pol", policy_text("base", "1.1.0", "op=KMODULE action=DENY"))
    assert iped("reload", "--socket", str(s.socket)).returncode == 0
    target = s.state / "rolled-forward"
    target.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs", str(target)], check=True,
                   timeout=120)
    try:
        r = iped("rollback", "--socket", str(s.socket))
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True, timeout=120)
    assert r.returncode != 0
    assert name in r.stderr and str(target / "base.pol") in r.stderr, r.stderr
    assert "internal error" not in r.stderr
    assert quiet_daemon.status()["active"]["version"] == "1.1.0"  # the kernel is untouched


def test_corrupt_chain_is_reported_kept_aside_and_rebuilt(site: Site) -> None:
    """A torn chain.json: the next deployment must not reset the rollback history to one link."""
    reporter = RecordingReporter()
    rec = reconciler(site, reporter=reporter)
    rec.reconcile("startup")
    versions = ["1.0.1", "1.0.2", "1.0.3"]
    for v in versions:
        site.put("base.pol", policy_text("base", v, f"# content {v}"))
        assert rec.reconcile("reload").outcome == "applied"
    before = rec.plan_log.chain("base")
    assert len(before) == 4
    torn = rec.plan_log.chain_file.read_bytes()[:40]
    rec.plan_log.chain_file.write_bytes(torn)

    rec = reconciler(site, reporter=reporter)  # what the daemon and every writing verb build at start
    site.put("base.pol", policy_text("base", "1.0.4", "# content 1.0.4"))
    assert rec.reconcile("reload").outcome == "applied"

    new = hashlib.sha256(policy_text("base", "1.0.4", "# content 1.0.4")).hexdigest()
    assert rec.plan_log.chain("base") == [*before, new]
    errors = [m for level, m, _ in reporter.messages if level == "error"]
    assert len(errors) == 1 and "was corrupt" in errors[0] and str(rec.plan_log.chain_file) in errors[0], errors
    aside = list(rec.plan_log.root.glob("chain.json.corrupt-*"))
    assert [p.read_bytes() for p in aside] == [torn] and str(aside[0]) in errors[0]
    st = service.status(rec)
    assert st["history"]["problems"] == [errors[0]]
    assert "WARNING" in st["status_line"] and "was corrupt" in st["status_line"]
    got = service.rollback(rec, dry_run=True)  # rollback still finds the earlier content
    assert got.content_digest == before[-1]


