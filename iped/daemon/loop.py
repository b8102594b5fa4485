"""The one selector loop: inotify, udev, control socket, signals, audit follower. No threads.

Each source turns readiness into a typed event; reconciling is :class:`Reconciler`'s job, which
file events ask for is :mod:`iped.daemon.watch`'s, when READY=1 is sent :mod:`iped.daemon.readiness`'s,
and what the backend needs (its audit drained after a reconcile) its :class:`Capabilities`.
Bursts of file events are debounced through the selector timeout (no sleeps), and idle means
blocked in ``select()`` until an event or the next watchdog ping. A handler that raises is
logged and the loop goes on.
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
from pathlib import Path
from typing import Any, Protocol

from iped.daemon import metrics, readiness, service
from iped.daemon.actual import ActualState
from iped.daemon.connections import Clients, Source
from iped.daemon.control import OPS, AccessPolicy, ControlServer, PeerCred, resolve_group
from iped.daemon.declared import DeclaredState
from iped.daemon.log import Reporter
from iped.daemon.notify import Notifier
from iped.daemon.plan import Plan
from iped.daemon.readiness import EXIT_START_REFUSED, startup_refusal
from iped.daemon.reconcile import FailedRead, PlanRecord, Reconciler
from iped.daemon.throttle import Throttle
from iped.daemon.watch import Watcher
from iped.settings import AuditSource, Settings


class Follower(Protocol):
    """The audit follower's side of the loop (iped.audit.follow.make_follower)."""

    def fileno(self) -> int: ...
    def on_readable(self) -> Any: ...
    def on_timeout(self, now: float) -> Any: ...
    def timeout(self) -> float | None: ...
    def counters(self) -> dict[str, Any]: ...


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
        self.watcher: Watcher | None = None
        self.state_metrics = metrics.StateMetrics()  # the textfile's, accumulated over this daemon's life
        self.monitor: Any = None
        self.follower: Follower | None = None
        self.follower_error: str | None = None
        gid = resolve_group(self.settings.daemon.control_group)
        if self.settings.daemon.control_group and gid is None:
            reporter.log("warning", f"control_group {self.settings.daemon.control_group!r} does not exist: only "
                                    f"root may use {self.settings.daemon.control_socket}")
        self.server = ControlServer(
            self.settings.daemon.control_socket,
            {op: getattr(self, f"_op_{op}") for op in OPS},  # one handler per declared op
            AccessPolicy(frozenset({0, os.geteuid()}), gid), gid)
        self.clients = Clients(self.sel, self.server, reporter)
        self.throttle = Throttle(reporter)
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
        self.watcher = Watcher(self.reporter)
        self.watcher.watch(self.settings)
        self.sel.register(self.watcher.fileno(), selectors.EVENT_READ, Source("inotify"))

    def _setup_udev(self) -> None:
        try:
            from iped.discovery import DmMonitor

            mon = DmMonitor()
            self.sel.register(mon.fileno(), selectors.EVENT_READ, Source("udev"))
            self.monitor = mon
        except Exception as e:  # no libudev, no netlink permission: dm changes then need 'iped reload'
            self.reporter.log("warning", f"udev monitor unavailable ({e}); dm device changes are not followed")

    def _setup_follower(self) -> None:
        if self.settings.audit.source is AuditSource.NONE:  # no follower: none of its modules either
            return
        try:
            from iped.audit.follow import make_follower
        except ImportError as e:
            self.follower_error = f"audit follower not available: {e}"
            return
        try:
            follower: Follower | None = make_follower(self.settings.audit, self.rec.backend,
                                                      state_dir=self.settings.daemon.state_dir)
            if follower is not None and follower.fileno() >= 0:
                self.sel.register(follower.fileno(), selectors.EVENT_READ, Source("audit"))
            self.follower = follower
        except Exception as e:
            self.follower_error = f"audit follower failed to start: {type(e).__name__}: {e}"
            self.reporter.log("warning", self.follower_error)

    def setup(self) -> None:
        self._setup_signals()
        self._setup_inotify()
        self.clients.listen()
        self._setup_follower()
        if self.notifier.watchdog_interval:
            self.next_ping = time.monotonic()

    # -- control ops --------------------------------------------------------------------
    def _op_ping(self, req: dict[str, Any], cred: PeerCred) -> Any:
        return {"pong": True, "pid": os.getpid()}

    def _op_status(self, req: dict[str, Any], cred: PeerCred) -> Any:
        self._refresh_after_fix("status")
        return self.status()

    def _op_plan(self, req: dict[str, Any], cred: PeerCred) -> Any:
        staged = req.get("config")
        if staged is not None and (self.settings.path is None
                                   or Path(staged).resolve() != self.settings.path.resolve()):
            return self._plan_staged(Path(staged), cred)
        self._refresh_settings()  # a plan after an edit of iped.toml must plan what the file says now
        computed = self.rec.compute()
        self._refresh_after_fix("plan", computed)
        return service.PlanPreview(self.rec.backend.kind, computed[1], computed[2],
                                   service.boot_facts(self.rec, computed[1])).as_dict()

    def _plan_staged(self, config: Path, cred: PeerCred) -> Any:
        """``iped plan --config STAGED``: the plan of another configuration (and the drop-in dir
        it names) against this daemon's backend, so config management can judge the state it is
        about to install before it changes a file in /etc. Root only: the daemon reads the files
        that configuration names. Nothing of the daemon's own state changes."""
        from iped.config import ConfigError
        from iped.daemon import runtime
        from iped.daemon.control import ProtocolError
        from iped.daemon.log import NullReporter
        from iped.errnos import errno_name

        if cred.uid not in (0, os.getuid()):
            raise ProtocolError(errno.EACCES, f"uid {cred.uid} may not plan another configuration ({config}): "
                                              "only root may (the daemon reads the files it names)")
        try:
            staged = runtime.load(config)
        except ConfigError as e:
            raise ProtocolError(errno.EINVAL, "; ".join(str(p) for p in e.problems)) from None
        except OSError as e:
            code = e.errno or errno.EIO
            raise ProtocolError(code, f"{config}: {errno_name(code)}: {e.strerror or e}") from None
        settings = Settings(policies=staged.policies, daemon=self.settings.daemon, audit=self.settings.audit,
                            boot=staged.boot, path=config, dev=self.settings.dev)
        rec = Reconciler(settings, self.rec.backend, self.rec.plan_log, NullReporter(), self.rec.extra_anchors)
        return {**service.plan(rec).as_dict(), "config": str(config)}

    def _refresh_after_fix(self, trigger: str,
                           computed: tuple[DeclaredState, ActualState, Plan] | None = None) -> None:
        """A rejected state put right with no reconcile since is reported as in sync (service.refresh)."""
        record = service.refresh(self.rec, trigger, computed)
        if record is not None:
            self.reporter.log("notice", f"declared state in effect again ({trigger}): {service.health(self.rec).line}")
            self._update_readiness(record)
            self._update_metrics(record)

    def _op_reload(self, req: dict[str, Any], cred: PeerCred) -> Any:
        return self.reload("reload", record_unchanged=True).as_dict()

    def _op_rollback(self, req: dict[str, Any], cred: PeerCred) -> Any:
        from iped.daemon.control import ProtocolError
        from iped.daemon.rollback import RollbackError

        try:
            result = service.rollback(self.rec, bool(req.get("dry_run")),
                                      lambda trigger: self.reload(trigger, record_unchanged=True))
        except RollbackError as e:
            raise ProtocolError(e.errno, e.message) from None
        return result.as_dict()

    def status(self) -> dict[str, Any]:
        audit: dict[str, Any] = {"follower": None, "error": self.follower_error}
        if self.follower is not None:
            try:
                audit["follower"] = self.follower.counters()
            except Exception as e:
                audit["error"] = f"counters failed: {e}"
        return service.status(self.rec, {
            "ready": self.ready, "started": self.started, "uptime_s": round(time.time() - self.started, 3),
            "events": dict(self.events), "control": self.clients.counters(), "audit": audit, "dev": self.settings.dev,
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
        from iped.daemon.runtime import trust_configured_certs

        trust_configured_certs(self.rec.backend, new)
        if (new.daemon, new.audit) != (self.settings.daemon, self.settings.audit):
            self.reporter.log("warning", "[daemon]/[audit] changes take effect only after a restart")
        self.rec.settings = Settings(new.policies, self.settings.daemon, self.settings.audit, new.boot,
                                     self.settings.path, self.settings.dev)
        self.settings = self.rec.settings
        if self.watcher is not None:
            self.watcher.watch(self.settings)

    def reload(self, trigger: str, record_unchanged: bool = False) -> PlanRecord | FailedRead:
        """Reconcile now (RELOADING=1 ... READY=1 around it)."""
        self.pending = self.deadline = None
        if self.ready:
            self.notifier.reloading()
        self._refresh_settings()
        record = service.reload(self.rec, trigger, record_unchanged)
        self._update_readiness(record)
        self._update_metrics(record)
        if self.rec.backend.capabilities.audit_from_own_writes:
            self._drain_follower()
        return record

    def _update_readiness(self, record: PlanRecord | FailedRead) -> None:
        """Tell systemd what :func:`readiness.after_reconcile` says (READY=1 or NOT READY); a start
        that cannot get ready does not wait for TimeoutStartSec: :meth:`run` exits with
        :data:`EXIT_START_REFUSED`."""
        health = service.health(self.rec)
        said = readiness.after_reconcile(self.ready, record, self.settings.policies.active, health.line)
        if not said.ready:
            self.notifier.status(said.status)
            return
        self.ready = True
        self.notifier.ready(said.status)
        if said.became_ready:
            self.reporter.log("notice" if health.in_effect else "warning", f"ready: {said.status}", "daemon_ready")

    def _update_metrics(self, record: PlanRecord | FailedRead) -> None:
        metrics.after_reconcile(self.state_metrics, record, self.rec, self.ready, self.reporter)

    def schedule(self, trigger: str) -> None:
        self.pending = self.pending or trigger
        self.deadline = time.monotonic() + self.settings.daemon.debounce_ms / 1000

    # -- event handlers -------------------------------------------------------------------
    def _on_inotify(self) -> None:
        assert self.watcher is not None
        for change in self.watcher.read(self.settings):
            if change.counter is not None:
                self.events[change.counter] += 1
            self.schedule(change.trigger)

    def _on_udev(self) -> None:
        assert self.monitor is not None
        for _ in self.monitor.poll():
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
                self.clients.on_listener()
            case "conn":
                assert src.conn is not None
                self.events["requests"] += 1
                self.clients.on_client(src.conn)
            case "audit":
                assert self.follower is not None
                self.follower.on_readable()

    # -- the loop -------------------------------------------------------------------------
    def _follower_timeout(self) -> float | None:
        """Grouping deadlines of the audit source. Records of this process's own writes (the
        emulator's) are drained right after each reconcile instead of polled."""
        if self.follower is None or self.rec.backend.capabilities.audit_from_own_writes:
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
                if self.rec.backend.capabilities.audit_from_own_writes and flush is not None:
                    flush()  # each record of our own writes is a complete event: nothing to group
            except Exception as e:
                self.reporter.log("warning", f"audit follower: {type(e).__name__}: {e}")

    def _timeout(self) -> float | None:
        now = time.monotonic()
        waits = [t - now for t in (self.deadline, self.next_ping) if t is not None]
        for t in (self._follower_timeout(), self.clients.timeout(now)):
            if t is not None:
                waits.append(t)
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
        # The dm monitor comes up after the startup reconcile: pyudev's import and context are
        # ~30 ms of CPU (ctypes.util, an ldconfig run) that READY=1 need not wait for. Nothing is
        # lost before it: a plan reads the drop-in files and securityfs, never the dm devices, so
        # the startup reconcile is the same whether a device came before or after it.
        self._setup_udev()
        while self.running:
            for key, _ in self.sel.select(self._timeout()):
                try:
                    self._on_ready(key.data)
                except Exception as e:  # rate-limited: a handler failing on every wake-up must not fill the log
                    self.throttle.log("error", f"{key.data.kind} handler",
                                      f"{key.data.kind} handler failed: {type(e).__name__}: {e}")
            now = time.monotonic()
            self.clients.on_timeout(now)
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
        self.clients.close()
        signal.set_wakeup_fd(-1)
        with contextlib.suppress(Exception):
            self.sel.close()
        for s in (self._sigr, self._sigw):
            s.close()
        if self.watcher is not None:
            self.watcher.close()
