"""A real daemon process for the abuse tests, optionally under a low RLIMIT_NOFILE; its CPU time,
RSS and log size read from /proc and its log file."""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonProc, Site, dev_keys, request, site, start_daemon

__all__ = ["dev_keys", "site"]


@dataclass
class Daemon(DaemonProc):
    log: Path = Path("/dev/null")

    def status_ok(self) -> bool:
        return bool(request(self.site.socket, "status")["ok"])

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon so far (/proc/PID/stat fields 14 and 15)."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a test may have stopped it
        return super().stop()


def spawn_daemon(site: Site, nofile: int | None = None) -> Daemon:
    """``iped daemon --config`` with its log in a file; ``nofile``: soft RLIMIT_NOFILE."""

    def limit() -> None:
        if nofile is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    log = site.root / "daemon.log"
    with open(log, "wb") as out:
        d = start_daemon(site, stderr=out, preexec=limit)
    return Daemon(site, d.proc, log)


@pytest.fixture
def abused(site: Site) -> Iterator[Daemon]:
    d = spawn_daemon(site)
    yield d
    d.stop()
