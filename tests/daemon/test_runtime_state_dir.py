"""The state dir: checked at start (a clear error, never "kernel error"), stale temp files removed,
the rollback chain kept apart from the plan log, texts/ pruned to what is still referenced."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from iped.config import load_settings
from iped.daemon import runtime, service
from iped.daemon.reconcile import Reconciler
from tests.helpers.daemon import RecordingReporter, Site, iped
from tests.helpers.policies import policy_text


def unusable_state_dir(site: Site) -> Path:
    """state_dir under a regular file: it can be neither created nor written (even by root)."""
    (site.root / "blocker").write_text("a file, not a directory\n")
    text = site.config.read_text().replace('state_dir = "state"', 'state_dir = "blocker/state"')
    site.config.write_text(text)
    return site.root / "blocker" / "state"


def test_daemon_refuses_to_start_with_unusable_state_dir(site: Site) -> None:
    state = unusable_state_dir(site)
    r = iped("daemon", "--config", str(site.config), timeout=30)
    assert r.returncode == 1, r.stderr
    assert f"state_dir {state}" in r.stderr and "ENOTDIR" in r.stderr
    assert "deleted meanwhile" not in r.stderr and not site.socket.exists()


def test_apply_once_with_unusable_state_dir_is_not_a_kernel_error(site: Site) -> None:
    unusable_state_dir(site)
    r = iped("apply", "--once", "--config", str(site.config))
    assert r.returncode == 1, r.stdout + r.stderr  # never 4: the kernel was not even asked
    assert "state_dir" in r.stderr and "reading state failed" not in r.stdout + r.stderr


def reconciler(site: Site, history: int = 20, reporter: RecordingReporter | None = None) -> Reconciler:
    settings = load_settings(site.config)
    settings = dataclasses.replace(settings, daemon=dataclasses.replace(settings.daemon, history=history))
    return runtime.make_reconciler(settings, reporter or RecordingReporter())


def test_state_dir_lost_mid_run_keeps_the_kernel_outcome(site: Site) -> None:
    reporter = RecordingReporter()
    rec = reconciler(site, reporter=reporter)
    assert rec.reconcile("startup").outcome == "applied"
    for d in ("texts", "plans"):  # the state dir breaks under the running daemon
        for f in (rec.plan_log.root / d).iterdir():
            f.unlink()
        (rec.plan_log.root / d).rmdir()
        (rec.plan_log.root / d).write_text("")
    site.put("base.pol", policy_text("base", "1.0.1"))
    record = service.reload(rec, "reload")
    assert record.outcome == "applied" and record.active_after is not None
    assert str(record.active_after.version) == "1.0.1"
    assert rec.counters["applied"] == 2
    assert any(line.startswith(f"error: state_dir {rec.plan_log.root}: EEXIST: ") and "not kept" in line
               for line in reporter.lines), reporter.lines


def test_stale_temp_files_are_removed_at_start(site: Site) -> None:
    rec = reconciler(site)
    rec.reconcile("startup")
    dead = 999999999  # above any pid_max: no such process
    stale = [rec.plan_log.plans / f".0000000002.json.{dead}.tmp", rec.plan_log.texts / f".{'a' * 64}.pol.{dead}.tmp"]
    for p in stale:
        p.write_text("{torn")
    reconciler(site)  # what every writing verb and the daemon build at start
    assert not any(p.exists() for p in stale)


def test_rollback_survives_many_noop_reloads(site: Site) -> None:
    rec = reconciler(site, history=5)
    rec.reconcile("startup")
    first = hashlib.sha256(policy_text("base", "1.0.0")).hexdigest()
    site.put("base.pol", policy_text("base", "1.1.0", "op=KMODULE action=DENY"))
    assert rec.reconcile("reload").outcome == "applied"
    for _ in range(3 * 5 + 1):
        assert rec.reconcile("sighup").outcome == "unchanged"
    assert len(rec.plan_log.recent()) == 5  # the plan log is bounded ...
    got = service.rollback(rec, dry_run=True)  # ... the rollback chain is not lost to noise
    assert got.content_digest == first and got.new_version == "1.1.1"


def test_texts_are_pruned_to_what_chain_and_plans_reference(site: Site) -> None:
    rec = reconciler(site, history=3)
    rec.reconcile("startup")
    for i in range(1, 12):
        site.put("base.pol", policy_text("base", f"1.0.{i}", *(["op=KMODULE action=DENY"] * (i % 2))))
        assert rec.reconcile("reload").outcome == "applied"
    kept = {p.name.removesuffix(".pol") for p in rec.plan_log.texts.iterdir()}
    chain = set(rec.plan_log.chain("base"))
    assert len(chain) == 3 and chain <= kept and len(kept) <= 3 + 1
    got = service.rollback(rec, dry_run=True)
    assert got.content_digest == hashlib.sha256(policy_text("base", "1.0.10")).hexdigest()
    assert rec.plan_log.load_text(got.content_digest) is not None


def test_rollback_after_the_plan_log_rotated_and_the_daemon_restarted(site: Site) -> None:
    """The start prunes texts/ (PlanLog.prepare): a text only the rollback chain still names, its
    plan records rotated out, must survive it, or the first rollback after a restart is ENOENT."""
    rec = reconciler(site, history=5)
    rec.reconcile("startup")
    first = hashlib.sha256(policy_text("base", "1.0.0")).hexdigest()
    site.put("base.pol", policy_text("base", "1.1.0", "op=KMODULE action=DENY"))
    assert rec.reconcile("reload").outcome == "applied"
    for _ in range(5 + 1):
        assert rec.reconcile("sighup").outcome == "unchanged"
    assert all(first not in str(r) for r in rec.plan_log.recent())  # only the chain names it now
    # the daemon restarts on the same kernel: a new reconciler (PlanLog.prepare) over the same backend
    restarted = runtime.make_reconciler(rec.settings, RecordingReporter(), rec.backend)
    assert restarted.plan_log.load_text(first) == policy_text("base", "1.0.0")
    got = service.rollback(restarted, dry_run=False)
    assert got.content_digest == first and got.record is not None and got.record.outcome == "applied"


def test_a_rejected_plan_keeps_the_rolled_forward_policy(site: Site) -> None:
    """Issue 20: the drop-in file of a rolled-back policy moved out and straight back. While it
    is gone the plan is rejected (ENOENT: the active policy is declared by no file); that rejected
    plan must change nothing on disk either -- the rolled-forward file stays, and once the file is
    back the rolled-forward content is still in effect (not ESTALE: the drop-in's lower version)."""
    rec = reconciler(site)
    assert rec.reconcile("startup").outcome == "applied"
    site.put("base.pol", policy_text("base", "1.1.0", "op=KMODULE action=DENY"))
    assert rec.reconcile("reload").outcome == "applied"
    rolled = service.rollback(rec, dry_run=False)
    assert rolled.record is not None and rolled.record.outcome == "applied", rolled.record
    target = Path(rolled.target)
    assert target.exists() and rolled.new_version == "1.1.1"
    moved = site.root / "base.pol.away"
    (site.policies / "base.pol").rename(moved)
    assert rec.reconcile("inotify").outcome == "rejected"
    assert target.exists(), "a rejected plan removed the rolled-forward policy"
    moved.rename(site.policies / "base.pol")
    record = rec.reconcile("inotify")
    assert record.outcome == "unchanged", record.as_dict()
    assert record.active_after is not None and str(record.active_after.version) == "1.1.1"
