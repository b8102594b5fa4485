"""A real daemon process for the abuse tests, optionally under a low RLIMIT_NOFILE; its CPU time,
RSS and log size read from /proc and its log file."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon.conftest import ROOT, Site, dev_keys, request, site, wait_for

__all__ = ["dev_keys", "site"]


@dataclass
class Daemon:
    site: Site
    proc: subprocess.Popen[bytes]
    log: Path

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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn_daemon(site: Site, nofile: int | None = None) -> Daemon:
    """``iped daemon --config`` with its log in a file; ``nofile``: soft RLIMIT_NOFILE."""

    def limit() -> None:
        if nofile is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    env = {**os.environ, **site.env}
    env.pop("NOTIFY_SOCKET", None)
    log = site.root / "daemon.log"
    argv = [sys.executable, "-m", "iped", "daemon", "--config", str(site.config)]
    with open(log, "wb") as out:  # preexec_fn: the suite starts no threads
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=out,
                                preexec_fn=limit)  # noqa: PLW1509
    d = Daemon(site, proc, log)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {log.read_text()}")
        return bool(request(site.socket, "ping")["ok"])

    wait_for(up, what="daemon to answer ping")
    return d


@pytest.fixture
def abused(site: Site) -> Iterator[Daemon]:
    d = spawn_daemon(site)
    yield d
    d.stop()
