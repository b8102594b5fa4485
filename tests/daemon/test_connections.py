"""iped.daemon.connections in-process, on a real listening socket: out of descriptors (a real
EMFILE under a lowered RLIMIT_NOFILE), the client cap, idle time-outs, and the fuzzed decoder."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import selectors
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iped.daemon.connections import LISTENER_PAUSE, MAX_CLIENTS, Clients, client_cap
from iped.daemon.control import AccessPolicy, ControlServer, PeerCred
from iped.daemon.throttle import Throttle
from tests.helpers.daemon import RecordingReporter
from tests.helpers.paths import UNIT

FUZZ_EXAMPLES = 5000 if os.environ.get("IPED_FUZZ_LONG") else 150


def make_clients(path: Path, idle_timeout: float = 30.0) -> tuple[Clients, RecordingReporter]:
    def status(req: dict[str, Any], cred: PeerCred) -> Any:
        return {"ok": 1}

    reporter = RecordingReporter()
    server = ControlServer(path, {"status": status, "ping": status, "reload": status, "rollback": status},
                           AccessPolicy(frozenset({os.getuid()}), None))
    clients = Clients(selectors.DefaultSelector(), server, reporter, idle_timeout)
    clients.listen()
    return clients, reporter


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "control.sock"


@contextlib.contextmanager
def no_free_descriptor() -> Iterator[None]:
    """Lower RLIMIT_NOFILE to the highest open fd and fill the holes below it: the next
    open/accept fails with EMFILE, for real."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    fillers = []
    try:
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_many(path: Path, count: int) -> list[socket.socket]:
    out = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.fspath(path))
        out.append(s)
    return out


def test_out_of_descriptors_drops_pending_connections_and_logs_once(sock_path: Path) -> None:
    clients, reporter = make_clients(sock_path)
    peers = connect_many(sock_path, 20)
    with no_free_descriptor():
        clients.on_listener()
    try:
        # the reserved descriptor let each pending connection be accepted and dropped
        assert clients.dropped["no_fd"] == 20 and not clients.conns
        warnings = [m for level, m, _ in reporter.messages if "accept failed" in m]
        assert len(warnings) == 1 and "Too many open files" in warnings[0]
        for p in peers:
            assert p.recv(1) == b""  # closed, not left hanging in the queue
    finally:
        for p in peers:
            p.close()
        clients.close()


def test_without_a_reserve_the_listener_pauses_instead_of_spinning(sock_path: Path) -> None:
    clients, _ = make_clients(sock_path)
    os.close(clients.reserve or -1)
    clients.reserve = None
    peer = connect_many(sock_path, 1)
    with no_free_descriptor():
        clients.on_listener()
        assert clients.listener is not None
        with pytest.raises(KeyError):
            clients.sel.get_key(clients.listener)  # not polled while paused
        assert clients.paused_until is not None
        assert 0 < (clients.timeout(clients.paused_until - LISTENER_PAUSE) or 0) <= LISTENER_PAUSE
    clients.on_timeout(clients.paused_until)
    assert clients.sel.get_key(clients.listener).data.kind == "listener"
    clients.on_listener()
    assert len(clients.conns) == 1
    peer[0].close()
    clients.close()


def test_over_the_cap_the_idlest_client_is_closed(sock_path: Path) -> None:
    clients, _ = make_clients(sock_path)
    clients.max_clients = 3
    peers = connect_many(sock_path, 5)
    clients.on_listener()
    assert len(clients.conns) == 3 and clients.dropped["over_cap"] == 2
    first = json.loads(peers[0].recv(4096))
    assert first["errno"] == errno.EBUSY
    for p in peers:
        p.close()
    clients.close()


def test_over_the_cap_clients_of_the_read_group_go_before_admins(sock_path: Path) -> None:
    clients, _ = make_clients(sock_path)
    clients.max_clients = 2
    peers = connect_many(sock_path, 2)
    clients.on_listener()
    oldest, newer = sorted(clients.conns.values(), key=lambda c: c.last_active)
    newer.cred = PeerCred(newer.cred.pid, os.getuid() + 12345, newer.cred.gid)  # a read-group member
    peers += connect_many(sock_path, 1)
    clients.on_listener()
    assert oldest in clients.conns.values() and newer not in clients.conns.values()
    for p in peers:
        p.close()
    clients.close()


def test_idle_clients_are_timed_out(sock_path: Path) -> None:
    clients, _ = make_clients(sock_path, idle_timeout=5.0)
    peers = connect_many(sock_path, 2)
    clients.on_listener()
    last = max(c.last_active for c in clients.conns.values())
    clients.on_timeout(last + 4.0)
    assert len(clients.conns) == 2
    clients.on_timeout(last + 5.0)
    assert not clients.conns and clients.dropped["idle"] == 2
    for p in peers:
        assert p.recv(1) == b""
        p.close()
    clients.close()


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20), _containers,
                     max_leaves=20)
_requests = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"op": st.sampled_from(["status", "reload", "rollback", "ping", "plan", "x"])},
                          optional={"dry_run": _json, "extra": _json}).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(_requests)
def test_fuzzed_requests_get_one_clean_reply(line: bytes) -> None:
    calls: list[dict[str, Any]] = []

    def record(req: dict[str, Any], cred: PeerCred) -> Any:
        calls.append(req)
        return {}

    srv = ControlServer(None, {op: record for op in
                               ("status", "reload", "rollback", "ping")}, AccessPolicy(frozenset({0}), None))
    reply = json.loads(srv.handle_line(line, PeerCred(1, 0, 0)))
    assert set(reply) in ({"ok", "result"}, {"ok", "errno", "errno_name", "error"})
    if not reply["ok"]:
        assert reply["errno"] in (errno.EBADMSG, errno.EINVAL), reply  # never EIO: no crash inside
    else:
        assert len(calls) == 1 and set(calls[0]) <= {"op", "dry_run"}


def test_unit_sets_a_descriptor_limit_the_client_cap_fits_under() -> None:
    unit = UNIT
    limits = [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith("LimitNOFILE=")]
    assert len(limits) == 1, "LimitNOFILE must be set deliberately in the unit"
    # with the daemon's usual ~30 own descriptors the client cap, not EMFILE, bounds a flood
    assert client_cap(int(limits[0]), 30) == MAX_CLIENTS


def test_repeated_log_lines_are_rate_limited() -> None:
    reporter = RecordingReporter()
    throttle = Throttle(reporter, interval=3600)
    logged = [throttle.log("error", "listener handler", f"listener handler failed #{i}") for i in range(1000)]
    assert logged.count(True) == 1 and [m for _, m, _ in reporter.messages] == ["listener handler failed #0"]
    assert throttle.log("error", "other", "another kind is not held back")
    throttle._next["listener handler"] = float("-inf")  # the interval is over
    assert throttle.log("error", "listener handler", "failed again")
    assert reporter.messages[-1][1] == "failed again (999 similar messages suppressed)"
