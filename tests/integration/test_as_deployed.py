"""iped as the packaged systemd unit runs it (issue 10): what ``systemctl reload`` sees, rollback
under ``ProtectSystem=strict``, a declared policy the kernel refuses at start, and a MESSAGE_ID on
every journal entry. Real daemon processes; systemd's side is played by what systemd itself
reads: the ExecReload= command's exit status, datagrams on ``$NOTIFY_SOCKET``, datagrams on
journald's native socket, and a read-only bind mount of the policy dir."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from iped.backend import EmulatorBackend
from iped.config import load_settings
from iped.daemon import runtime
from iped.daemon.actual import read_actual
from iped.daemon.log import LEVEL_MESSAGE_IDS, MESSAGE_IDS, NullReporter
from iped.daemon.loop import Daemon
from iped.daemon.notify import Notifier
from iped.daemon.readiness import EXIT_START_REFUSED
from iped.pkcs7 import sign_policy
from iped.settings import AuditSource
from tests.helpers.backends import PosingAsKernel
from tests.helpers.daemon import DaemonProc, Site, iped, start_daemon, wait_child, wait_for
from tests.helpers.iped_with_hooks import Fault, FaultyEmulatorBackend
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text, unparsable

UNIT = ROOT / "systemd" / "iped.service"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace (unshare --mount) needs root")


def exec_reload(site: Site) -> subprocess.CompletedProcess[str]:
    """The unit's ExecReload= command line as systemd runs it, /usr/bin/iped being this checkout."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecReload="))
    argv = shlex.split(line.removeprefix("ExecReload="))
    assert argv[:2] == ["/usr/bin/iped", "reload"], argv
    return iped(*argv[1:], "--socket", str(site.socket))


def test_systemctl_reload_succeeds_on_applied_and_unchanged_fails_on_rejected(site: Site) -> None:
    site.debounce_ms = 60000  # file events stay pending: only the explicit reloads below act
    site.write_config()
    d = start_daemon(site)
    try:
        r = exec_reload(site)
        assert r.returncode == 0, f"nothing to change must be a successful reload: {r.stdout}{r.stderr}"
        assert "unchanged" in r.stdout
        assert iped("reload", "--socket", str(site.socket)).returncode == 9  # the documented code stays
        site.put("extra.pol", policy_text("extra", "0.0.1"))
        r = exec_reload(site)
        assert (r.returncode, "applied" in r.stdout) == (0, True), r.stdout + r.stderr
        (site.policies / "broken.pol").write_bytes(unparsable())
        r = exec_reload(site)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "rejected" in r.stdout and "broken.pol" in r.stdout
        st = d.status()
        # what systemctl status shows (STATUS=, the same line): the errno and the file
        assert st["status_line"].startswith("DEGRADED: declared state rejected (reload)"), st["status_line"]
        assert f"{site.policies / 'broken.pol'}:2: EBADMSG" in st["status_line"]
        assert {p["name"] for p in st["policies"]} == {"base", "extra"}
    finally:
        d.stop()


def test_systemctl_reload_after_inotify_applied_the_change(daemon: DaemonProc) -> None:
    s = daemon.site
    s.put("extra.pol", policy_text("extra", "0.0.1"))
    wait_for(lambda: any(p["name"] == "extra" for p in daemon.status()["policies"]), what="inotify to load extra")
    r = exec_reload(s)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(iped("reload", "--socket", str(s.socket), "--json").stdout)["outcome"] == "unchanged"


def notify_socket(path: Path) -> socket.socket:
    """What systemd listens on for sd_notify datagrams (Type=notify)."""
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(os.fspath(path))
    rx.settimeout(30)  # bounds a broken daemon's silence; systemd's own bound is TimeoutStartSec=
    return rx


def test_declared_policy_refused_at_start_fails_the_start_at_once(site: Site, tmp_path: Path) -> None:
    """The kernel refuses the declared policy (a signer iped trusts, the kernel does not: ENOKEY).
    ``systemctl start`` must return at once, not after TimeoutStartSec: no READY=1 (READY means
    the declared policy is active), STATUS= naming the errno and the file, the previously active
    policy kept, and an exit status the unit does not restart on (no restart loop)."""
    settings = load_settings(site.config)
    emulator = runtime.make_backend(settings)
    # the kernel as the previous boot left it: base 1.0.0 active
    assert runtime.make_reconciler(settings, NullReporter(), emulator).reconcile("previous boot").outcome == "applied"
    site.put("fleet.pol", policy_text("fleet", "1.0.0"))
    site.active = "fleet"
    site.write_config()
    settings = load_settings(site.config)
    settings = dataclasses.replace(settings, audit=dataclasses.replace(settings.audit, source=AuditSource.NONE))
    assert isinstance(emulator, EmulatorBackend)
    refusing = PosingAsKernel(FaultyEmulatorBackend(emulator.emulator, "refuses the next load",
                                              Fault("new_policy", 1, errno.ENOKEY)))
    rx = notify_socket(tmp_path / "notify.sock")
    pid = os.fork()
    if pid == 0:  # the daemon as systemd starts it (the suite runs no threads, so fork is safe)
        code = 70
        try:
            rec = runtime.make_reconciler(settings, NullReporter(), refusing)
            code = Daemon(rec, Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}), NullReporter()).run()
        finally:
            os._exit(code)
    try:
        wstatus = wait_child(pid, 60)  # it ends by itself: READY=1 or a hang would fail here
        rx.settimeout(0)
        got: list[str] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(rx.recv(4096).decode())
    finally:
        rx.close()
    assert os.waitstatus_to_exitcode(wstatus) == EXIT_START_REFUSED
    assert not any(line == "READY=1" for m in got for line in m.splitlines()), got
    status = [line.split("=", 1)[1] for m in got for line in m.splitlines() if line.startswith("STATUS=")][-1]
    assert status.startswith("FAILED:") and "'fleet'" in status, status
    assert "ENOKEY" in status and str(site.policies / "fleet.pol") in status, status
    unit = (ROOT / "systemd" / "iped.service").read_text()
    assert re.search(rf"^RestartPreventExitStatus=.*\b{EXIT_START_REFUSED}\b", unit, re.M), "no restart loop"
    # the kernel as it was: base 1.0.0 still active, fleet never loaded
    after = read_actual(emulator)
    assert after.active is not None and (after.active.name, str(after.active.version)) == ("base", "1.0.0")
    assert after.get("fleet") is None


def parse_journal_native(data: bytes) -> dict[str, str]:
    """One datagram of journald's native protocol: ``KEY=value\\n``, or for a value holding a
    newline ``KEY\\n`` + its size (64-bit little-endian) + the value + ``\\n``."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key, size = line, int.from_bytes(data[nl + 1:nl + 9], "little")
            value = data[nl + 9:nl + 9 + size]
            assert data[nl + 9 + size:nl + 10 + size] == b"\n", data
            i = nl + 10 + size
        fields[key.decode()] = value.decode()
    return fields


def collect_datagrams(sock: socket.socket, out: Path) -> int:
    """Fork a reader that drains ``sock`` into ``out`` until it receives ``END`` (a datagram
    socket queues only a few messages, then the sender blocks, as on a journald that is stuck);
    returns its pid. Each record: 4-byte length, 1 byte "had ancillary data", the datagram."""
    pid = os.fork()
    if pid == 0:
        try:
            with open(out, "wb") as f:
                while (got := sock.recvmsg(1 << 20, socket.CMSG_SPACE(64)))[0] != b"END":
                    f.write(len(got[0]).to_bytes(4, "little") + bytes([bool(got[1])]) + got[0])
                    f.flush()
        finally:
            os._exit(0)
    return pid


def read_datagrams(path: Path) -> list[tuple[bool, bytes]]:
    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        size = int.from_bytes(data[i:i + 4], "little")
        out.append((bool(data[i + 4]), data[i + 5:i + 5 + size]))
        i += 5 + size
    return out


def documented_message_ids() -> set[str]:
    """Every MESSAGE_ID docs/daemon.md lists in its tables."""
    text = (ROOT / "docs" / "daemon.md").read_text()
    return set(re.findall(r"^\|[^|\n]+\| `([0-9a-f]{32})` \|", text, re.M))


def start_with_private_mounts(site: Site, mounts: str, arg: str, **env: str) -> DaemonProc:
    """``iped daemon`` in a private mount namespace (as systemd's sandboxing gives it one) after the
    shell commands ``mounts`` ran there with ``$0`` = ``arg``; ``env`` added to its environment."""
    return start_daemon(site, wrapper=("unshare", "--mount", "sh", "-c", f'{mounts} && exec "$@"', arg),
                        extra_env=env)


@needs_root
def test_rollback_through_the_service_with_the_drop_in_dir_read_only(site: Site) -> None:
    """ProtectSystem=strict: /etc (and the drop-in dir in it) is read-only for the daemon; the
    rollback it runs for ``iped rollback`` must not need to write there."""
    site.put("base.p7s", sign_policy(policy_text("base", "1.0.0"), site.key.read_bytes(), site.cert.read_bytes()))
    (site.policies / "base.pol").unlink()
    d = start_with_private_mounts(site, 'mount --bind -o ro "$0" "$0"', str(site.policies))
    try:
        mountinfo = Path(f"/proc/{d.proc.pid}/mountinfo").read_text().splitlines()
        assert any(f" {site.policies} " in m and " ro," in m for m in mountinfo), "the daemon's view is not read-only"
        site.put("base.p7s", sign_policy(policy_text("base", "1.1.0", "op=KMODULE action=DENY"),
                                         site.key.read_bytes(), site.cert.read_bytes()))
        assert iped("reload", "--socket", str(site.socket)).returncode in (0, 9)
        wait_for(lambda: d.status()["active"]["version"] == "1.1.0", what="update to 1.1.0")
        r = iped("rollback", "--socket", str(site.socket), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        assert res["target"] == str(site.state / "rolled-forward" / "base.p7s") and res["new_version"] == "1.1.1"
        st = d.status()
        assert (st["active"]["version"], st["in_sync"], st["policies"][0]["source"]) == ("1.1.1", True, res["target"])
        assert b"policy_version=1.1.0" in (site.policies / "base.p7s").read_bytes(), "the drop-in dir is untouched"
    finally:
        err = d.stop()
    assert d.proc.returncode == 0, err


@needs_root
def test_every_journal_entry_has_a_documented_message_id(site: Site, tmp_path: Path) -> None:
    """The daemon under systemd (INVOCATION_ID set) through a whole life: start, reload, an
    update, a rollback, a rejected plan, a kernel error, stop. journald is played by a datagram
    socket at its native path, /run/systemd/journal/socket, bind-mounted in a private mount
    namespace, so libsystemd's real sd_journal_sendv() writes the entries."""
    site.debounce_ms = 60000  # only the explicit reloads below act
    site.env["IPED_EMULATOR_FAULT"] = "active:2:EIO"
    site.write_config()
    jdir = tmp_path / "journal"
    jdir.mkdir()
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(os.fspath(jdir / "socket"))
    collector = collect_datagrams(rx, tmp_path / "journal.bin")
    mounts = 'mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && mount --bind "$0" /run/systemd/journal'
    d = start_with_private_mounts(site, mounts, str(jdir), INVOCATION_ID="0123456789abcdef0123456789abcdef")
    proc = d.proc
    try:
        sock = str(site.socket)
        assert iped("reload", "--socket", sock).returncode == 9
        site.put("base.pol", policy_text("base", "1.1.0", "op=KMODULE action=DENY"))
        assert iped("reload", "--socket", sock).returncode == 0
        assert iped("rollback", "--socket", sock).returncode == 0
        (site.policies / "broken.pol").write_bytes(unparsable())
        assert iped("reload", "--socket", sock).returncode == 1
        (site.policies / "broken.pol").unlink()
        site.put("next.pol", policy_text("next", "2.0.0"))
        site.active = "next"
        site.write_config()
        assert iped("reload", "--socket", sock).returncode == 4  # the injected EIO at the activation
        assert iped("reload", "--socket", sock).returncode == 0
    finally:
        out = d.stop()
        rx.sendto(b"END", os.fspath(jdir / "socket"))
        wait_child(collector, 60)
        rx.close()
    assert proc.returncode == 0, out
    assert out == "", f"stderr would be journal entries without MESSAGE_ID: {out}"
    datagrams = read_datagrams(tmp_path / "journal.bin")
    assert not any(anc for anc, _ in datagrams), "an entry passed as a memfd: not expected for small entries"
    entries = [parse_journal_native(data) for _, data in datagrams]
    assert entries, "the daemon wrote nothing to the journal socket"
    missing = [e["MESSAGE"] for e in entries if "MESSAGE_ID" not in e]
    assert not missing, f"journal entries without MESSAGE_ID: {missing}"
    documented = documented_message_ids()
    assert set(MESSAGE_IDS.values()) | set(LEVEL_MESSAGE_IDS.values()) <= documented
    assert {e["MESSAGE_ID"] for e in entries} <= documented
    by_id = {kind: [e for e in entries if e["MESSAGE_ID"] == mid] for kind, mid in MESSAGE_IDS.items()}
    for kind in ("daemon_started", "daemon_ready", "policy_loaded", "policy_activated", "policy_updated",
                 "policy_rolled_forward", "plan_rejected", "apply_failed", "daemon_stopping"):
        assert by_id[kind], f"no {kind} entry (MESSAGE_ID={MESSAGE_IDS[kind]})"
    # journalctl MESSAGE_ID=<activated> finds the apply, with the policy's own fields
    assert {e["IPE_POLICY_NAME"] for e in by_id["policy_activated"]} == {"base", "next"}
    assert all(e["SYSLOG_IDENTIFIER"] == "iped" and e["PRIORITY"].isdigit() for e in entries)
