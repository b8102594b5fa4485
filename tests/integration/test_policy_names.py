"""Policy names the kernel takes but that are not plain text: bytes that are not UTF-8 (one
decoding for validate, the planner and the read-back) and control characters (escaped in every
text output and log line, never sent raw to a terminal)."""

from __future__ import annotations

import json
from pathlib import Path

from iped.config import load_settings
from iped.daemon import runtime
from iped.daemon.actual import read_actual
from tests.helpers.daemon import RecordingReporter, Site, iped, start_daemon

#: not UTF-8: the kernel loads it (tests/corpus/30-names.toml n-ff, truth of 6.12 and 7)
ODD = b"bad\xff\xfeutf8"
#: a terminal escape (set the window title, then red) inside a name: the kernel takes it as well
ESCAPING = b"x\x1b]0;pwned\x07\x1b[31mred"


def odd_policy(name: bytes, version: str = "1.0.0") -> bytes:
    return b"policy_name=" + name + f" policy_version={version}\nDEFAULT action=ALLOW\n".encode()


def test_non_utf8_name_loads_reads_back_and_stays_in_sync(site: Site) -> None:
    """Declared and read back alike: loaded once, then nothing to do (it failed on every reload)."""
    site.put("odd.pol", odd_policy(ODD))
    reporter = RecordingReporter()
    rec = runtime.make_reconciler(load_settings(site.config), reporter)
    first = rec.reconcile("startup")
    assert first.outcome == "applied", first.failure
    loaded = {p.name.encode("utf-8", "surrogateescape") for p in read_actual(rec.backend).policies}
    assert loaded == {b"base", ODD}
    again = rec.reconcile("reload")
    assert (again.outcome, again.steps) == ("unchanged", ())
    site.put("odd.pol", odd_policy(ODD, "1.0.1"))  # an update finds the loaded policy by that name
    update = rec.reconcile("reload")
    assert update.outcome == "applied" and [s.kind for s in update.steps] == ["update"]


def test_securityfs_read_back_of_a_non_utf8_name_matches_the_declared_one(tmp_path: Path) -> None:
    """The real backend on a tree laid out as the kernel lays it out (corpus n-ff: the directory
    and the ``name`` file hold the raw bytes): the read-back name is the name validate gives."""
    import hashlib
    import os

    from iped.backend import SecurityfsBackend
    from iped.commands.validate import check_blob

    text = odd_policy(ODD)
    node = os.path.join(os.fsencode(tmp_path), b"policies", ODD)
    os.makedirs(node)
    for leaf, data in ((b"name", ODD), (b"version", b"1.0.0"), (b"active", b"0"), (b"policy", text)):
        Path(os.fsdecode(os.path.join(node, leaf))).write_bytes(data)
    for switch in ("enforce", "success_audit"):
        (tmp_path / switch).write_bytes(b"1")
    (loaded,) = read_actual(SecurityfsBackend(root=tmp_path)).policies
    declared = check_blob("odd.pol", text, None)
    assert declared.valid and loaded.name == declared.policy_name
    assert loaded.text_digest == hashlib.sha256(text).hexdigest()


def test_validate_and_the_daemon_agree_on_a_non_utf8_name(site: Site) -> None:
    path = site.put("odd.pol", odd_policy(ODD))
    checked = json.loads(iped("validate", "--json", str(path)).stdout)
    d = start_daemon(site)
    try:
        st = d.status()
    finally:
        d.stop()
    assert st["in_sync"] is True, st["drift"]
    kernel = [p["name"] for p in st["policies"] if p["name"] != "base"]
    declared = [p["name"] for p in st["declared"]["policies"] if p["name"] != "base"]
    assert kernel == declared == [checked["policy_name"]]
    assert checked["policy_name"].encode("utf-8", "surrogateescape") == ODD


def _no_raw_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, text


def test_daemon_log_escapes_control_characters_in_names(site: Site) -> None:
    site.put("esc.pol", odd_policy(ESCAPING))
    site.put("odd.pol", odd_policy(ODD))
    d = start_daemon(site)
    assert d.status()["in_sync"] is True
    log = d.stop()
    _no_raw_controls(log)
    assert "loaded policy x\\x1b]0;pwned\\x07\\x1b[31mred 1.0.0" in log
    assert "loaded policy bad\\xff\\xfeutf8 1.0.0" in log


def test_validate_text_escapes_names_and_paths(tmp_path: Path) -> None:
    good = tmp_path / "esc.pol"
    good.write_bytes(odd_policy(ESCAPING))
    bad = tmp_path / "bad\x1b[2J.pol"  # a path that clears the screen, with a syntax error inside
    bad.write_bytes(odd_policy(ESCAPING) + b"op=EXECUTE action=ALOW\n")
    r = iped("validate", str(good), str(bad))
    assert r.returncode == 1
    _no_raw_controls(r.stdout + r.stderr)
    assert "OK policy_name=x\\x1b]0;pwned\\x07\\x1b[31mred" in r.stdout
    assert "bad\\x1b[2J.pol:3: " in r.stderr


def test_plan_text_escapes_names(site: Site) -> None:
    site.put("esc.pol", odd_policy(ESCAPING))
    r = iped("plan", "--no-daemon", "--config", str(site.config))
    _no_raw_controls(r.stdout + r.stderr)
    assert "x\\x1b]0;pwned\\x07\\x1b[31mred" in r.stdout


def test_error_lines_escape_paths(tmp_path: Path) -> None:
    r = iped("explain", "--source", str(tmp_path / "gone\x1b[2J"))
    assert r.returncode == 1
    _no_raw_controls(r.stderr)
    assert "gone\\x1b[2J" in r.stderr
