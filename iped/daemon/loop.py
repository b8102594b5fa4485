"""The one selector loop: inotify, udev, control socket, signals, audit follower. No threads.

Each source turns readiness into a typed event; reconciling is :class:`Reconciler`'s job. Bursts of
file events are debounced through the selector timeout (no sleeps), ``IN_Q_OVERFLOW`` forces a
full rescan, and idle means blocked in ``select()`` until an event or the next watchdog ping.
A handler that raises is logged and the loop goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from iped.daemon.control import AccessPolicy, Connection, ControlServer, PeerCred, resolve_group
from iped.daemon.log import Reporter
from iped.daemon.notify import Notifier
from iped.daemon.reconcile import Reconciler
from iped.daemon.settings import Settings
from iped.daemon.state import is_ignored


class Follower(Protocol):
    """The audit follower's side of the loop (iped.audit.follow.make_follower)."""

    def fileno(self) -> int: ...
    def on_readable(self) -> Any: ...
    def on_timeout(self, now: float) -> Any: ...
    def timeout(self) -> float | None: ...
    def counters(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class FollowerSettings:
    """The flat settings iped.audit.follow.make_follower reads (from [audit] and [daemon])."""

    audit_source: str
    state_dir: Path
    audit_metrics_path: Path | None
    audit_receive_buffer: int
    policy_file: Path | None = None


def follower_settings(settings: Settings) -> FollowerSettings:
    src = str(settings.audit.source)
    return FollowerSettings("off" if src == "none" else src, settings.daemon.state_dir,
                            settings.audit.prometheus_textfile, settings.audit.receive_buffer)


@dataclass(frozen=True, slots=True)
class Source:
    """What a selector key stands for."""

    kind: str
    conn: Connection | None = None


SettingsLoader = Callable[[], Settings]


class Daemon:
    """Wires the event sources to the reconciler."""

    def __init__(self, reconciler: Reconciler, notifier: Notifier, reporter: Reporter,
                 reload_settings: SettingsLoader | None = None) -> None:
        self.rec = reconciler
        self.notifier = notifier
        self.reporter = reporter
        self.reload_settings = reload_settings
        self.settings = reconciler.settings
        self.sel = selectors.DefaultSelector()
        self.running = False
        self.ready = False
        self.pending: str | None = None  # trigger of a debounced reconcile
        self.deadline: float | None = None
        self.next_ping: float | None = None
        self.started = time.time()
        self.events: dict[str, int] = {"inotify": 0, "udev": 0, "signals": 0, "requests": 0, "overflows": 0}
        self.inotify: Any = None
        self.watches: dict[int, str] = {}
        self.monitor: Any = None
        self.follower: Follower | None = None
        self.follower_error: str | None = None
        gid = resolve_group(self.settings.daemon.control_group)
        self.server = ControlServer(
            self.settings.daemon.control_socket,
            {"status": self._op_status, "reload": self._op_reload, "plan": self._op_plan, "ping": self._op_ping,
             "rollback": self._op_rollback},
            AccessPolicy(frozenset({0, os.geteuid()}), gid), gid)
        self._sigr, self._sigw = socket.socketpair()

    # -- setup ------------------------------------------------------------------------
    def _setup_signals(self) -> None:
        for s in (self._sigr, self._sigw):
            s.setblocking(False)
        signal.set_wakeup_fd(self._sigw.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)  # the wakeup fd carries the number
        self.sel.register(self._sigr, selectors.EVENT_READ, Source("signal"))

    def _setup_inotify(self) -> None:
        from inotify_simple import INotify, flags

        self.inotify = INotify(nonblocking=True)
        self._flags = flags
        self._add_watches()
        self.sel.register(self.inotify.fileno(), selectors.EVENT_READ, Source("inotify"))

    def _add_watches(self) -> None:
        f = self._flags
        mask = f.CLOSE_WRITE | f.MOVED_TO | f.MOVED_FROM | f.DELETE | f.CREATE | f.DELETE_SELF | f.MOVE_SELF
        dirs = {"policies": self.settings.policies.dir}
        if self.settings.path is not None:
            dirs["config"] = self.settings.path.parent
        for role, d in dirs.items():
            if role in self.watches.values():
                continue
            try:
                self.watches[self.inotify.add_watch(os.fspath(d), mask)] = role
            except OSError as e:
                self.reporter.log("warning", f"cannot watch {d}: {e.strerror}; changes there need 'iped reload'")

    def _setup_udev(self) -> None:
        try:
            import pyudev

            ctx = pyudev.Context()
            mon = pyudev.Monitor.from_netlink(ctx, source="udev")
            mon.filter_by("block")
            mon.start()
            self.sel.register(mon.fileno(), selectors.EVENT_READ, Source("udev"))
            self.monitor = mon
        except Exception as e:  # no libudev, no netlink permission: dm changes then need 'iped reload'
            self.reporter.log("warning", f"udev monitor unavailable ({e}); dm device changes are not followed")

    def _setup_follower(self) -> None:
        try:
            from iped.audit.follow import make_follower
        except ImportError as e:
            self.follower_error = f"audit follower not available: {e}"
            return
        try:
            follower: Follower | None = make_follower(follower_settings(self.settings), self.rec.backend)
            if follower is not None and follower.fileno() >= 0:
                self.sel.register(follower.fileno(), selectors.EVENT_READ, Source("audit"))
            self.follower = follower
        except Exception as e:
            self.follower_error = f"audit follower failed to start: {type(e).__name__}: {e}"
            self.reporter.log("warning", self.follower_error)

    def setup(self) -> None:
        self._setup_signals()
        self._setup_inotify()
        self._setup_udev()
        listener = self.server.listen()
        self.sel.register(listener, selectors.EVENT_READ, Source("listener"))
        self._setup_follower()
        if self.notifier.watchdog_interval:
            self.next_ping = time.monotonic()

    # -- control ops --------------------------------------------------------------------
    def _op_ping(self, req: dict[str, Any], cred: PeerCred) -> Any:
        return {"pong": True, "pid": os.getpid()}

    def _op_status(self, req: dict[str, Any], cred: PeerCred) -> Any:
        return self.status()

    def _op_plan(self, req: dict[str, Any], cred: PeerCred) -> Any:
        _, _, plan = self.rec.compute()
        return {"backend": self.rec.backend.kind, "steps": [s.as_dict() for s in plan.steps],
                "errors": [e.as_dict() for e in plan.errors],
                "outcome": "rejected" if plan.rejected else ("unchanged" if plan.unchanged else "would-apply")}

    def _op_reload(self, req: dict[str, Any], cred: PeerCred) -> Any:
        return self.reload("reload", record_unchanged=True)

    def _op_rollback(self, req: dict[str, Any], cred: PeerCred) -> Any:
        from iped.daemon.control import ProtocolError
        from iped.daemon.rollback import RollbackError, prepare, write

        try:
            plan = prepare(self.rec)
        except RollbackError as e:
            raise ProtocolError(e.errno, e.message) from None
        record: dict[str, Any] = {"outcome": "dry-run"}
        if not req.get("dry_run"):
            write(self.rec, plan)
            record = self.reload("rollback", record_unchanged=True)
        return {"target": str(plan.target), "name": plan.name, "from_version": str(plan.current),
                "new_version": str(plan.new_version), "content_digest": plan.from_digest, "record": record}

    def status(self) -> dict[str, Any]:
        audit: dict[str, Any] = {"follower": None, "error": self.follower_error}
        if self.follower is not None:
            try:
                audit["follower"] = self.follower.counters()
            except Exception as e:
                audit["error"] = f"counters failed: {e}"
        return self.rec.status({
            "ready": self.ready, "started": self.started, "uptime_s": round(time.time() - self.started, 3),
            "events": dict(self.events), "audit": audit, "dev": self.settings.dev,
            "control_socket": str(self.settings.daemon.control_socket),
            "state_dir": str(self.settings.daemon.state_dir),
        })

    # -- reconcile ----------------------------------------------------------------------
    def _refresh_settings(self) -> None:
        if self.reload_settings is None:
            return
        from iped.config import ConfigError

        try:
            new = self.reload_settings()
        except ConfigError as e:
            self.rec.config_error = [str(p) for p in e.problems]
            return
        self.rec.config_error = []
        if (new.daemon, new.audit) != (self.settings.daemon, self.settings.audit):
            self.reporter.log("warning", "[daemon]/[audit] changes take effect only after a restart")
        self.rec.settings = Settings(new.policies, self.settings.daemon, self.settings.audit,
                                     self.settings.path, self.settings.dev)
        self.settings = self.rec.settings
        if self.inotify is not None:
            self._add_watches()

    def reload(self, trigger: str, record_unchanged: bool = False) -> dict[str, Any]:
        """Reconcile now (RELOADING=1 ... READY=1 around it)."""
        self.pending = self.deadline = None
        if self.ready:
            self.notifier.reloading()
        try:
            self._refresh_settings()
            record = self.rec.reconcile(trigger, record_unchanged)
        except OSError as e:  # the backend itself failed (securityfs gone?)
            record = {"outcome": "failed", "trigger": trigger,
                      "failure": {"errno": e.errno or errno.EIO, "message": f"reading state failed: {e}"}}
            self.reporter.log("error", str(record["failure"]))
        self._update_readiness()
        if self.rec.backend.kind == "emulator":
            self._drain_follower()
        return record

    def _declared_active_ok(self) -> bool:
        want = self.settings.policies.active
        if want is None or self.rec.backend.kind == "emulator":
            return True
        try:
            from iped.daemon.state import read_actual

            act = read_actual(self.rec.backend).active
        except OSError:
            return False
        return act is not None and act.name == want

    def _update_readiness(self) -> None:
        last = self.rec.last or {}
        summary = (f"{last.get('outcome', '?')} ({last.get('trigger', '?')}); backend {self.rec.backend.kind}; "
                   f"active {(last.get('active_after') or {}).get('name')}")
        if not self.ready and self._declared_active_ok():
            self.ready = True
            self.notifier.ready(summary)
            self.reporter.log("notice", f"ready: {summary}", "daemon_ready")
        elif self.ready:
            self.notifier.ready(summary)
        else:
            self.notifier.status(f"NOT READY: declared policy {self.settings.policies.active!r} is not active; "
                                 f"{summary}")

    def schedule(self, trigger: str) -> None:
        self.pending = self.pending or trigger
        self.deadline = time.monotonic() + self.settings.daemon.debounce_ms / 1000

    # -- event handlers -------------------------------------------------------------------
    def _on_inotify(self) -> None:
        f = self._flags
        try:
            events = self.inotify.read(timeout=0)
        except BlockingIOError:
            return
        for ev in events:
            if ev.mask & f.Q_OVERFLOW:
                self.events["overflows"] += 1
                self.schedule("inotify-overflow")
                continue
            role = self.watches.get(ev.wd)
            if ev.mask & f.IGNORED:
                self.watches.pop(ev.wd, None)
                self.schedule("inotify")
                continue
            if role == "policies" and (not ev.name or not is_ignored(ev.name)):
                self.events["inotify"] += 1
                self.schedule("inotify")
            elif role == "config" and self.settings.path is not None and ev.name in (
                    self.settings.path.name, self.settings.policies.dir.name):
                self.events["inotify"] += 1
                self.schedule("config")

    def _on_udev(self) -> None:
        assert self.monitor is not None
        while (dev := self.monitor.poll(timeout=0)) is not None:
            if (dev.sys_name or "").startswith("dm-") or "DM_NAME" in dev.properties:
                self.events["udev"] += 1
                self.schedule("udev")

    def _on_signal(self) -> None:
        try:
            data = self._sigr.recv(64)
        except BlockingIOError:
            return
        for num in data:
            self.events["signals"] += 1
            if num == signal.SIGHUP:
                self.reload("sighup", record_unchanged=True)
            elif num in (signal.SIGTERM, signal.SIGINT):
                self.running = False

    def _on_ready(self, src: Source) -> None:
        match src.kind:
            case "signal":
                self._on_signal()
            case "inotify":
                self._on_inotify()
            case "udev":
                self._on_udev()
            case "listener":
                conn = self.server.accept()
                if conn is not None:
                    self.sel.register(conn.sock, selectors.EVENT_READ, Source("conn", conn))
            case "conn":
                assert src.conn is not None
                self.events["requests"] += 1
                if not self.server.on_readable(src.conn):
                    self.sel.unregister(src.conn.sock)
                    src.conn.sock.close()
            case "audit":
                assert self.follower is not None
                self.follower.on_readable()

    # -- the loop -------------------------------------------------------------------------
    def _follower_timeout(self) -> float | None:
        """Grouping deadlines of a kernel audit source. The emulator's records come only from our
        own writes, so its stream is drained right after each reconcile instead of polled."""
        if self.follower is None or self.rec.backend.kind == "emulator":
            return None
        try:
            return self.follower.timeout()
        except Exception:
            return None

    def _drain_follower(self) -> None:
        if self.follower is not None:
            try:
                self.follower.on_timeout(time.monotonic())
                flush = getattr(self.follower, "flush", None)
                if self.rec.backend.kind == "emulator" and flush is not None:
                    flush()  # each emulator record is a complete event: nothing to group
            except Exception as e:
                self.reporter.log("warning", f"audit follower: {type(e).__name__}: {e}")

    def _timeout(self) -> float | None:
        now = time.monotonic()
        waits = [t - now for t in (self.deadline, self.next_ping) if t is not None]
        ft = self._follower_timeout()
        if ft is not None:
            waits.append(ft)
        return max(0.0, min(waits)) if waits else None

    def run(self) -> int:
        self.setup()
        self.running = True
        self.reload("startup", record_unchanged=True)
        refused = None if self.ready else startup_refusal(self.rec.last, self.settings.policies.active)
        if refused is not None:
            # Waiting would hold the boot for TimeoutStartSec and then restart into the same
            # refusal: fail the start now, saying why (the unit's RestartPreventExitStatus=).
            # After stop(): its STOPPING status would replace this one in 'systemctl status'.
            self.stop()
            self.notifier.status(refused)
            self.reporter.apply_failed(refused)
            return EXIT_START_REFUSED
        while self.running:
            for key, _ in self.sel.select(self._timeout()):
                try:
                    self._on_ready(key.data)
                except Exception as e:
                    self.reporter.log("error", f"{key.data.kind} handler failed: {type(e).__name__}: {e}")
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline and self.pending:
                try:
                    self.reload(self.pending)
                except Exception as e:
                    self.reporter.log("error", f"reconcile failed: {type(e).__name__}: {e}")
            ft = self._follower_timeout()
            if ft is not None and ft <= 0:
                self._drain_follower()
            if self.next_ping is not None and now >= self.next_ping:
                self.notifier.watchdog()
                assert self.notifier.watchdog_interval is not None
                self.next_ping = now + self.notifier.watchdog_interval
        self.stop()
        return 0

    def stop(self) -> None:
        """Stop listening. The kernel keeps its active policy and enforce setting as they are."""
        self.notifier.stopping()
        self.reporter.log("info", "stopping; kernel state is left as it is (never weakened on stop)",
                         "daemon_stopping")
        self.server.close()
        signal.set_wakeup_fd(-1)
        with contextlib.suppress(Exception):
            self.sel.close()
        for s in (self._sigr, self._sigw):
            s.close()
        if self.inotify is not None:
            self.inotify.close()


#: Exit status of a daemon whose declared active policy was refused at start (sysexits'
#: EX_CONFIG); systemd/iped.service does not restart on it (RestartPreventExitStatus=).
EXIT_START_REFUSED = 78


def startup_refusal(record: dict[str, Any] | None, active: str | None) -> str | None:
    """Why the startup reconcile cannot make ``active`` active (rejected or failed plan), or None.

    Names the errno and the file, for the unit's status line (``systemctl status iped``).
    """
    if record is None or record.get("outcome") not in ("rejected", "failed"):
        return None
    failure = record.get("failure")
    if failure:
        step = failure.get("step") or {}
        where = step.get("source") or step.get("path") or "?"
        why = f"{failure.get('errno_name')} ({failure.get('errno')}) at {step.get('description')} from {where}: " \
              f"{failure.get('message')}"
    else:
        errors = record.get("errors") or [{}]
        why = "; ".join(str(e.get("message")) for e in errors[:3])
    return f"FAILED: declared active policy {active!r} not activated, {record.get('outcome')}: {why}"


def socket_dir_ok(path: Path) -> bool:
    return path.parent.is_dir()
