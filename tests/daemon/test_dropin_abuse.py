"""Filesystem abuse of the drop-in dir: partial writes, symlinks, FIFOs, directories, huge files,
races with rename. The kernel must never see a half-written file, nothing outside the directory is
read through it, no byte of a file that is not a policy is echoed, and anything named like a
policy that cannot be read rejects the plan instead of counting as deleted."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from iped.config import load_settings
from iped.daemon import runtime, service
from iped.daemon.declared import DeclError
from iped.daemon.devkey import ensure_dev_key
from iped.daemon.dropin import writer_in_proc
from iped.daemon.log import Reporter
from iped.daemon.reconcile import PlanRecord, Reconciler
from tests.helpers.daemon import RecordingReporter, Site, make_site, request, start_daemon, wait_for
from tests.helpers.policies import policy_text, unparsable


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_dev_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def site(tmp_path: Path, keys: tuple[Path, Path]) -> Site:
    return make_site(tmp_path, keys)


SECRET = b"root:$6$S3CRETSALT$TOPSECRETHASHVALUE:19000:0:99999:7:::\n"


def reconciler(site: Site, reporter: Reporter | None = None) -> Reconciler:
    return runtime.make_reconciler(load_settings(site.config), reporter or RecordingReporter())


def by_file(errors: tuple[DeclError, ...]) -> dict[str, DeclError]:
    return {Path(e.file).name: e for e in errors}


def assert_no_secret(*outputs: Any) -> None:
    for out in outputs:
        text = out if isinstance(out, str) else json.dumps(out)
        assert "S3CRET" not in text and "TOPSECRET" not in text and "19000" not in text, text


# -- partial writes ------------------------------------------------------------------------------

STRICT_PREFIX = b"policy_name=strict policy_version=0.0.1\nDEFAULT action=ALLOW\n"
STRICT_REST = b"DEFAULT op=EXECUTE action=DENY\nop=EXECUTE boot_verified=TRUE action=ALLOW\n"


def test_half_written_policy_never_becomes_active(site: Site) -> None:
    # The scenario: the writer flushes an allow-everything prefix, pauses far longer than
    # the debounce, then appends the DENY rules. A reload asked for meanwhile must not take the
    # prefix either: the file is still open for writing.
    site.active = None  # a start declaring the missing 'strict' would exit 78, as on a kernel
    site.write_config()
    d = start_daemon(site)
    try:
        site.active = "strict"
        site.write_config()
        wait_for(lambda: d.status()["counters"]["rejected"] >= 1, what="the config change reconciled (no strict yet)")
        path = site.policies / "strict.pol"
        with open(path, "wb") as f:
            f.write(STRICT_PREFIX)
            f.flush()
            time.sleep(20 * site.debounce_ms / 1000)
            during = request(site.socket, "reload")
            f.write(STRICT_REST)
        full = hashlib.sha256(STRICT_PREFIX + STRICT_REST).hexdigest()
        wait_for(lambda: (d.status()["active"] or {}).get("text_digest") == full, what="the finished file active")
        plans = [json.loads(p.read_bytes()) for p in sorted((site.state / "plans").glob("*.json"))]
    finally:
        log = d.stop()
    prefix = hashlib.sha256(STRICT_PREFIX).hexdigest()
    assert during["ok"] and during["result"]["outcome"] == "rejected", during
    (err,) = [e for e in during["result"]["errors"] if e["file"] == str(path)]
    assert err["errno_name"] == "EBUSY" and "open for writing" in err["reason"]
    # the file's creation triggers nothing (IN_CLOSE_WRITE does): no reconcile tripped over it
    assert [r["outcome"] for r in plans if r["trigger"] == "inotify"] == ["applied"], plans
    for rec in plans:
        for snap in (rec["active_after"], *rec["declared"]):
            assert (snap or {}).get("text_digest") != prefix, rec
    assert "ESTALE" not in log


def test_file_open_for_writing_is_not_read(site: Site) -> None:
    # an in-place rewrite of a loaded policy: while the writer holds it, the old policy stays and
    # nothing is deleted (the plan is rejected, the kernel untouched)
    rec = reconciler(site)
    assert rec.reconcile("startup").outcome == "applied"
    with open(site.policies / "base.pol", "wb") as f:
        f.write(b"policy_name=base policy_version=2.0.0\n")
        f.flush()
        record = rec.reconcile("reload")
        assert record.outcome == "rejected" and record.done == 0
        assert by_file(record.errors)["base.pol"].errno == errno.EBUSY
        f.write(b"DEFAULT action=DENY\n")
    record = rec.reconcile("reload")
    assert record.outcome == "applied" and record.active_after is not None
    assert str(record.active_after.version) == "2.0.0"


# -- symlinks, and bytes of files that are not policies -------------------------------------------

def test_symlink_to_a_secret_is_refused_and_not_echoed(site: Site, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    (site.policies / "x.pol").symlink_to(secret)
    reporter = RecordingReporter()
    rec = reconciler(site, reporter)
    record = rec.reconcile("reload")
    assert record.outcome == "rejected"
    err = by_file(record.errors)["x.pol"]
    assert err.errno == errno.ELOOP and "symbolic link" in err.reason
    assert_no_secret(record.as_dict(), service.status(rec), "\n".join(reporter.lines))


def test_symlink_inside_the_directory_is_refused_too(site: Site) -> None:
    # all symlinks are refused (documented): a link inside the directory would declare one policy
    # twice, and telling "inside" apart needs the resolved path, which can change after the check
    (site.policies / "alias.pol").symlink_to("base.pol")
    record = reconciler(site).reconcile("reload")
    assert record.outcome == "rejected"
    assert by_file(record.errors)["alias.pol"].errno == errno.ELOOP


def test_hard_link_to_a_non_policy_echoes_no_byte(site: Site, tmp_path: Path) -> None:
    # a hard link is a regular file: it is read, but a file whose first line is no policy header
    # is not a policy, and no token of it may show in errors, status or log
    secret = site.root / "shadow"
    secret.write_bytes(SECRET)
    os.link(secret, site.policies / "y.pol")
    reporter = RecordingReporter()
    rec = reconciler(site, reporter)
    record = rec.reconcile("reload")
    err = by_file(record.errors)["y.pol"]
    assert err.errno == errno.EBADMSG and err.line == 1 and "not a policy" in err.reason
    assert_no_secret(record.as_dict(), service.status(rec), "\n".join(reporter.lines))


def test_policy_errors_after_the_header_keep_their_token(site: Site) -> None:
    (site.policies / "b.pol").write_bytes(unparsable("b"))
    err = by_file(reconciler(site).reconcile("reload").errors)["b.pol"]
    assert err.line == 2 and "'action=ALOW'" in err.reason


# -- names that cannot be read ---------------------------------------------------------------------

def loaded_then_replaced(site: Site, replace: Any) -> PlanRecord:
    """Load extra.pol, replace it with something unreadable, reconcile again."""
    site.put("extra.pol", policy_text("extra", "1.0.0"))
    rec = reconciler(site)
    assert rec.reconcile("startup").outcome == "applied"
    (site.policies / "extra.pol").unlink()
    replace(site.policies / "extra.pol")
    return rec.reconcile("reload")


def test_dangling_symlink_is_not_a_deletion(site: Site) -> None:
    record = loaded_then_replaced(site, lambda p: p.symlink_to(site.root / "gone.pol"))
    assert record.outcome == "rejected" and not any(s.kind == "delete" for s in record.steps[:record.done])
    assert by_file(record.errors)["extra.pol"].errno == errno.ELOOP


def test_symlink_loop_is_not_a_deletion(site: Site) -> None:
    def loop(p: Path) -> None:
        (site.policies / "other.pol").symlink_to(p.name)
        p.symlink_to("other.pol")

    record = loaded_then_replaced(site, loop)
    assert record.outcome == "rejected" and record.done == 0
    assert by_file(record.errors)["extra.pol"].errno == errno.ELOOP


def test_fifo_is_reported_and_never_blocks(site: Site) -> None:
    # opened without O_NONBLOCK, a FIFO with no writer would hang the scan; it must be reported
    record = loaded_then_replaced(site, os.mkfifo)
    assert record.outcome == "rejected" and record.done == 0
    err = by_file(record.errors)["extra.pol"]
    assert "not a regular file" in err.reason and "FIFO" in err.reason


def test_directory_named_like_a_policy_is_reported(site: Site) -> None:
    record = loaded_then_replaced(site, Path.mkdir)
    assert record.outcome == "rejected" and record.done == 0
    assert by_file(record.errors)["extra.pol"].errno == errno.EISDIR


# -- size -----------------------------------------------------------------------------------------

def test_huge_file_is_refused_by_size_without_reading(site: Site) -> None:
    big = site.policies / "big.pol"
    with open(big, "wb") as f:
        f.write(policy_text("big", "1.0.0"))
        f.truncate(64 << 20)  # sparse: stat says 64 MiB
    record = reconciler(site).reconcile("reload")
    err = by_file(record.errors)["big.pol"]
    assert err.errno == errno.EMSGSIZE and str(64 << 20) in err.reason and "65535" in err.reason
    assert str(big) in str(err)


def test_size_limit_is_the_kernels_new_policy_limit(site: Site) -> None:
    # the kernel takes a new_policy write of up to 65535 bytes: a .p7s of 65536 is refused by size;
    # text under the limit whose signed blob is over it is refused as the kernel would (EMSGSIZE)
    (site.policies / "over.p7s").write_bytes(b"\x30" + b"\0" * 65535)
    comment = b"#" + b"x" * 200 + b"\n"
    (site.policies / "fat.pol").write_bytes(policy_text("fat", "1.0.0") + comment * (65000 // len(comment)))
    record = reconciler(site).reconcile("reload")
    errs = by_file(record.errors)
    assert errs["over.p7s"].errno == errno.EMSGSIZE and "65536 bytes" in errs["over.p7s"].reason
    assert errs["fat.pol"].errno == errno.EMSGSIZE and record.done == 0


# -- races with rename ---------------------------------------------------------------------------------

def test_renames_during_scans_never_give_a_torn_or_missing_policy(site: Site) -> None:
    # config management replaces the file atomically (temp + rename) while the daemon scans:
    # every scan sees one whole version, never an error, never "no file declares base"
    stop = threading.Event()
    versions = [policy_text("base", f"1.0.{i}", *(["op=EXECUTE boot_verified=TRUE action=ALLOW"] * i))
                for i in range(8)]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            site.put("base.pol", versions[i % len(versions)])
            i += 1

    rec = reconciler(site)
    t = threading.Thread(target=writer)
    t.start()
    try:
        seen: set[bytes] = set()
        for n in range(5000):  # at least 60 scans, and on until the writer got a turn (a loaded host)
            if n >= 60 and len(seen) > 1:
                break
            decl = rec.scan()
            assert decl.errors == (), decl.errors
            (p,) = decl.policies
            assert p.text in versions
            seen.add(p.text)
    finally:
        stop.set()
        t.join()
    assert len(seen) > 1


def test_scan_of_abused_dir_is_quick_and_complete(site: Site, tmp_path: Path) -> None:
    # everything at once: each problem is reported once, by name, and nothing blocks
    d = site.policies
    (d / "link.pol").symlink_to(tmp_path / "nowhere")
    os.mkfifo(d / "fifo.pol")
    (d / "dir.p7s").mkdir()
    with open(d / "huge.p7s", "wb") as f:
        f.truncate(256 << 20)
    (d / ".hidden.pol").symlink_to("/etc/shadow")  # ignored names stay ignored, never opened
    names = sorted(by_file(reconciler(site).scan().errors))
    assert names == ["dir.p7s", "fifo.pol", "huge.p7s", "link.pol"]


def test_names_complete_at_creation_are_seen_without_close(site: Site, tmp_path: Path) -> None:
    # a symlink or FIFO gets IN_CREATE and nothing after it: the daemon reports it on that event
    d = start_daemon(site)
    try:
        (site.policies / "link.pol").symlink_to(tmp_path / "nowhere")
        os.mkfifo(site.policies / "fifo.pol")

        def reported() -> bool:
            errs = d.status()["declared"]["errors"]
            return {Path(e["file"]).name for e in errs} >= {"link.pol", "fifo.pol"}

        wait_for(reported, what="symlink and FIFO reported after IN_CREATE")
    finally:
        d.stop()


def test_proc_scan_finds_a_writer_where_no_lease_can_be_taken(tmp_path: Path) -> None:
    # the fallback for files the daemon may not lease (another owner, no CAP_LEASE; no leases on
    # the filesystem): the same answer from /proc/*/fd and fdinfo
    path = tmp_path / "p.pol"
    path.write_bytes(b"x")
    st = os.stat(path)
    with open(path, "rb"):
        assert not writer_in_proc(st)
    with open(path, "ab"):
        assert writer_in_proc(st)
    assert not writer_in_proc(st)
