"""sd_notify(3) without libsystemd: READY/RELOADING/STOPPING/STATUS and the watchdog.

The protocol is one datagram per message to ``$NOTIFY_SOCKET`` (``@`` = abstract namespace).
``WATCHDOG_USEC``/``WATCHDOG_PID`` say whether and how often to ping; the loop pings at half
the interval, and only from the loop itself, so a stuck loop stops the pings.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Talks to systemd when ``NOTIFY_SOCKET`` is set; a silent no-op otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = ("\0" + addr[1:] if addr.startswith("@") else addr) or None
        usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        pid = env.get("WATCHDOG_PID")
        if pid and int(pid) != os.getpid():
            usec = 0
        self.watchdog_interval: float | None = usec / 2e6 if usec > 0 else None
        self.sent: list[str] = []  # what was sent, for status and tests

    def send(self, **fields: str | int) -> bool:
        msg = "\n".join(f"{k}={v}" for k, v in fields.items())
        self.sent.append(msg)
        del self.sent[:-50]
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(msg.encode(), self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def reloading(self) -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def stopping(self) -> None:
        self.send(STOPPING=1, STATUS="stopping; the kernel keeps the active policy and enforce as they are")

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)
