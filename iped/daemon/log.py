"""Reporters: the daemon's events go to journald (with a MESSAGE_ID on every entry) or stderr.

Under systemd (``JOURNAL_STREAM`` or ``INVOCATION_ID`` set) events are sent with
``systemd.journal.send`` so ``journalctl MESSAGE_ID=...`` finds them; otherwise one line per
event on stderr. The core only sees the :class:`Reporter` protocol. Both escape control
characters and undecodable bytes (policy names, paths, kernel messages) with
:func:`iped.textsafe.escape_controls`: a log line is never an instruction to a terminal. Every entry carries a
MESSAGE_ID: its event's (:data:`MESSAGE_IDS`), or, for a line that is no named event, the generic
one of its level (:data:`LEVEL_MESSAGE_IDS`). Both tables are documented in docs/daemon.md.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Literal, Protocol

from iped.textsafe import escape_controls

if TYPE_CHECKING:
    from iped.daemon.plan import Step

Kind = Literal["policy_loaded", "policy_updated", "policy_activated", "policy_deleted", "setting_changed",
               "plan_rejected", "apply_failed", "daemon_started", "daemon_ready", "daemon_stopping",
               "policy_rolled_forward", "rolled_forward_superseded", "boot_copy_written", "boot_copy_failed"]

#: Fixed MESSAGE_IDs of named events (journalctl MESSAGE_ID=<id>); stable, documented in docs/daemon.md.
MESSAGE_IDS: dict[Kind, str] = {
    "policy_loaded": "4e85e2caa5ea4630b4b769ac37a8cd93",
    "policy_updated": "099874aaef534d60bb269271f11decf6",
    "policy_activated": "e01ef155bfc045c0ba3635e7cd124585",
    "policy_deleted": "03c47b4f4c01476da80a56cedb250fc4",
    "setting_changed": "7e35c773f1464f418e573ae6967b4f8d",
    "plan_rejected": "a2a6413031754dd0877a1c1e7230cbb0",
    "apply_failed": "0300455ebc6549f09b49d94de6cd65fc",
    "daemon_started": "18d37666b072409e95bc52155feb8b68",
    "daemon_ready": "0238e581d7f2471c8cadab9f2f0345ed",
    "daemon_stopping": "b562a945f3884449ae94481cb29d3508",
    "policy_rolled_forward": "5da1ed26a9b84493a543f6a10ea8ab30",
    "rolled_forward_superseded": "4987cec9e4f14d41822484c69c229f37",
    "boot_copy_written": "182681e2301947d885cabfa6c522523b",
    "boot_copy_failed": "303088ad10504883b817c6fddaca00b8",
}

#: The MESSAGE_ID of a line that is no named event, by level (a warning about a directory that
#: cannot be watched, a handler that failed): ``journalctl MESSAGE_ID=`` finds every such warning.
LEVEL_MESSAGE_IDS: dict[str, str] = {
    "error": "b94248d2f5ac449b8a8bed80f474060d",
    "warning": "9732ca0b50f14d278e4c8ea1493c5f87",
    "notice": "7341bf19609e4d4b8efdfdd6c8a1d96e",
    "info": "7ebb1a05db584a3cb0528ca3d0a1beae",
}

_PRIORITY = {"error": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}


class Reporter(Protocol):
    def policy_loaded(self, step: Step) -> None: ...
    def policy_updated(self, step: Step) -> None: ...
    def policy_activated(self, step: Step) -> None: ...
    def policy_deleted(self, step: Step) -> None: ...
    def plan_rejected(self, message: str) -> None: ...
    def apply_failed(self, message: str) -> None: ...
    def log(self, level: str, message: str, kind: Kind | None = None) -> None: ...


class _Base:
    def policy_loaded(self, step: Step) -> None:
        self._event("policy_loaded", "info", f"loaded policy {step.name} {step.version} from {step.source}", step)

    def policy_updated(self, step: Step) -> None:
        self._event("policy_updated", "info",
                    f"updated policy {step.name} {step.old_version} -> {step.version} from {step.source}", step)

    def policy_activated(self, step: Step) -> None:
        self._event("policy_activated", "notice", f"activated policy {step.name} {step.version}", step)

    def policy_deleted(self, step: Step) -> None:
        self._event("policy_deleted", "info", f"deleted policy {step.name} {step.version}", step)

    def plan_rejected(self, message: str) -> None:
        self.log("error", f"plan rejected, kernel untouched: {message}", "plan_rejected")

    def apply_failed(self, message: str) -> None:
        self.log("error", message, "apply_failed")

    def _event(self, kind: Kind, level: str, message: str, step: Step) -> None:
        self.log(level, message, kind)

    def log(self, level: str, message: str, kind: Kind | None = None) -> None:
        raise NotImplementedError


class NullReporter(_Base):
    """Drops every message (``iped plan`` computed locally, tests): nothing is kept, so a
    long-lived user does not grow."""

    def log(self, level: str, message: str, kind: Kind | None = None) -> None:
        pass


class StderrReporter(_Base):
    """One line per event on stderr: ``iped[pid]: level: message``."""

    def log(self, level: str, message: str, kind: Kind | None = None) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} iped[{os.getpid()}]: {level}: {escape_controls(message)}", file=sys.stderr, flush=True)


class JournalReporter(_Base):
    """systemd.journal.send with MESSAGE_ID, PRIORITY and IPE_* fields."""

    def __init__(self) -> None:
        import importlib

        self._send = importlib.import_module("systemd.journal").send

    def _event(self, kind: Kind, level: str, message: str, step: Step) -> None:
        self._send(escape_controls(message), MESSAGE_ID=MESSAGE_IDS[kind], PRIORITY=str(_PRIORITY[level]),
                   SYSLOG_IDENTIFIER="iped", IPE_POLICY_NAME=escape_controls(step.name or ""),
                   IPE_POLICY_VERSION=str(step.version or ""), IPE_POLICY_SOURCE=escape_controls(step.source or ""),
                   IPE_POLICY_TEXT_SHA256=step.text_digest or "")

    def log(self, level: str, message: str, kind: Kind | None = None) -> None:
        self._send(escape_controls(message), MESSAGE_ID=message_id(level, kind),
                   PRIORITY=str(_PRIORITY.get(level, 6)), SYSLOG_IDENTIFIER="iped")


def message_id(level: str, kind: Kind | None) -> str:
    """The MESSAGE_ID of an entry: its event's, else its level's (info for an unknown level)."""
    return MESSAGE_IDS[kind] if kind is not None else LEVEL_MESSAGE_IDS.get(level, LEVEL_MESSAGE_IDS["info"])


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def make_reporter() -> Reporter:
    """Journald when systemd started us (and systemd-python imports), stderr otherwise."""
    if under_systemd():
        try:
            return JournalReporter()
        except ImportError:
            pass
    return StderrReporter()
