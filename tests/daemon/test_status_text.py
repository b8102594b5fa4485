"""``iped status`` text: plain labelled lines from a status reply, whatever the reply holds."""

from __future__ import annotations

import re
from typing import Any

from iped.commands.remote import render_status as render  # what `iped status` prints

#: a reply as a --dev daemon gave it, after the kernel drifted from a reconcile that was in sync
REPLY: dict[str, Any] = {
    "schema_version": 1,
    "backend": {"kind": "emulator", "reason": "backend = emulator in the configuration"},
    "enforce": True, "success_audit": False,
    "policies": [
        {"name": "allow_all", "version": "0.0.4", "active": True, "blob_digest": "2eb73e9e6cba84eb" * 4,
         "source": "/etc/iped/policies.d/allow_all.pol"},
        {"name": "boot_verified", "version": "0.0.1", "active": False, "blob_digest": None, "source": None},
    ],
    "declared": {"dir": "/etc/iped/policies.d", "errors": []},
    "in_sync": False, "drift": ["policy 'extra' 0.0.1 declared but not loaded"],
    "status_line": "in sync: active allow_all 0.0.4, enforce on (applied, reload)",
    "last_plans": [{"seq": 7, "time": "2026-12-04T16:36:30+0000", "trigger": "reload", "outcome": "applied",
                    "steps": [{"kind": "update"}]}],
    "counters": {"reconciles": 1, "applied": 1, "unchanged": 0, "rejected": 0, "failed": 0},
    "audit": {"follower": {
        "source": "emulator", "source_description": "emulator: the emulator's own audit stream", "events": 1,
        "decisions": {"allow": 0, "deny": 0}, "decisions_by": [], "rules": {},
        "loads": [{"result": "loaded", "errno": 0, "errno_name": None, "count": 2},
                  {"result": "failed", "errno": 126, "errno_name": "ENOKEY", "count": 1}],
        "config_changes": 1, "enforce_changes": 0, "lost": {"enobufs": 0, "serial_gaps": 0, "unparsed": 0},
        "duplicates": 0, "incomplete_events": 3, "spurious_eoe": 0, "foreign_frames": 0}, "error": None},
    "ready": True, "dev": True, "pid": 10928, "uptime_s": 3725.2, "config": "/etc/iped/iped.toml",
}


def test_status_text_has_no_python_reprs_and_counts_with_their_nouns() -> None:
    text = render(REPLY)
    assert not re.search(r"True|False|None|\{'|\['|\(1 steps\)|\b1 events\b|\b1 executions\b", text), text
    assert "#7 2026-12-04T16:36:30+0000 reload: applied, 1 step" in text
    assert "daemon:         ready, pid 10928, up 1h 2m 5s, development mode (--dev)" in text
    assert "enforce:        on   success_audit: off" in text
    assert "1 event: 0 allowed, 0 denied; policy loads: 2 loaded, 1 failed (ENOKEY); 1 config change" in text
    assert "reconciles:     1 (1 applied, 0 unchanged, 0 rejected, 0 failed)" in text
    assert "    boot_verified  0.0.1  unsigned" in text and "(not declared)" in text


def test_live_drift_and_the_last_reconcile_are_two_labelled_lines_not_a_contradiction() -> None:
    lines = render(REPLY).splitlines()
    assert "now:            NOT in sync: 1 difference from the declared state (drift, below)" in lines
    assert "last reconcile: in sync: active allow_all 0.0.4, enforce on (applied, reload)" in lines
    assert not any(line.startswith(("in sync:", "ready:", "status:")) for line in lines)
    assert "  - policy 'extra' 0.0.1 declared but not loaded" in lines


def test_a_malformed_reply_renders_question_marks_and_escaped_controls() -> None:
    text = render({"backend": "x", "policies": [1, {"name": "a\x1b[2Jb"}], "counters": [], "in_sync": "yes",
                   "audit": {"follower": {"events": "many", "lost": {"x": "y"}}}})
    assert "a\\x1b[2Jb" in text and "\x1b" not in text
    assert "now:            ?" in text and "? events" in text and "lost ?" in text
    assert render({}).startswith("backend:        ? -- ?")


def test_count() -> None:
    from iped.daemon.status_text import count

    assert [count(0, "step"), count(1, "step"), count(2, "policy", "policies"), count(True, "step")] == [
        "0 steps", "1 step", "2 policies", "? steps"]
