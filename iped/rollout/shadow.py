"""Shadow mode: what IPE would decide on a kernel without IPE, from fanotify exec notifications.

Each ``FAN_OPEN_EXEC`` notification (:mod:`iped.rollout.fanotify`: notification only, the exec
never waits for us) is evaluated against the declared policy by the emulator, with the file's
properties read from the event's own descriptor (no path race), as IPE's ``bprm_check`` hook
would evaluate it (op=EXECUTE, hook=BPRM_CHECK). Each decision is written as an auditd-format
event — the emulator's exact 1420 body, a SYSCALL record with ``key="iped-shadow"`` (the shadow
mark: exe, pid, ppid) and an EOE — so ``iped audit``, ``iped survey`` and ``iped suggest`` read a
shadow log with ``--source FILE`` unchanged. Counters are iped's audit counters
(:class:`iped.audit.counters.AuditCounters`) plus what only shadow mode can lose.

What fanotify cannot see that IPE does (so a shadow survey can say GO where IPE would deny):

* ``mmap(PROT_EXEC)`` of a file (shared libraries mapped by ld.so, dlopen(), JIT-loaded code):
  IPE's MMAP hook; fanotify reports it as a plain open, if at all;
* ``mprotect()`` adding PROT_EXEC (IPE's MPROTECT hook);
* executing anonymous memory (IPE: ``path=?`` records, denied by DEFAULT rules);
* kernel reads: modules (``finit_module``/``init_module``: KMODULE), firmware (FIRMWARE), kexec
  images and initramfs (KEXEC_*), IMA policies (POLICY), keys (X509_CERT);
* ``execveat(AT_EXECVE_CHECK)`` (BPRM_CREDS_FOR_EXEC), which executes nothing;
* the real inode under overlayfs (IPE evaluates ``d_real_inode``; the event's fd is the
  overlay's), and files on filesystems that are not marked (see :func:`default_watch_paths`);
* the ELF interpreter (``ld-linux``) is opened with FAN_OPEN_EXEC too, but IPE evaluates it
  through the MMAP hook: shadow mode records it as a BPRM_CHECK of its own.

A queue overflow (more than 16384 unread events) loses events; it is counted and reported.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from iped.audit.counters import AuditCounters
from iped.audit.records import AUDIT_EOE, AUDIT_IPE_ACCESS, AUDIT_SYSCALL, IpeAccess, RawRecord, parse_access
from iped.rollout import engine
from iped.rollout.facts import file_info_of_fd
from iped.rollout.observe import SHADOW_KEY

if TYPE_CHECKING:
    from iped.rollout.fanotify import Fanotify

#: filesystems nothing is executed from (marking them costs marks and shows nothing)
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "securityfs", "debugfs", "tracefs", "bpf", "pstore",
    "mqueue", "configfs", "fusectl", "hugetlbfs", "efivarfs", "binfmt_misc", "autofs", "rpc_pipefs", "nsfs",
    "selinuxfs", "ramfs", "devtmpfs",
})  # fmt: skip
_UNSET = 4294967295
_SYSCALL_EXECVE = 59  # x86_64; the number is informational only


@dataclass(frozen=True, slots=True)
class Process:
    """The process that opened a file for execution, as /proc shows it when the event is read."""

    pid: int
    ppid: int
    uid: int
    comm: str
    exe: str


def process_of(pid: int, path: str = "?") -> Process:
    """Who ``pid`` is, executing ``path``; never an error.

    A process that already exited (most short ones have, by the time the event is read) gets
    what the exec would have made it: comm the file's basename (cut to 15 bytes), exe ``path``;
    ppid -1 and uid unset.
    """
    comm, exe, ppid, uid = os.path.basename(path)[:15], path, -1, _UNSET
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        close = stat.rfind(b")")
        comm = stat[stat.find(b"(") + 1 : close].decode("utf-8", "surrogateescape")
        ppid = int(stat[close + 2 :].split(b" ", 2)[1])
        uid = os.stat(f"/proc/{pid}").st_uid
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError, IndexError):
        pass
    return Process(pid, ppid, uid, comm, exe)


def syscall_body(proc: Process) -> str:
    """A kernel-shaped SYSCALL body for the exec, marked ``key="iped-shadow"``."""
    u = proc.uid
    return (
        f"arch=c000003e syscall={_SYSCALL_EXECVE} success=yes exit=0 a0=0 a1=0 a2=0 a3=0 items=0 "
        f"ppid={proc.ppid} pid={proc.pid} auid={_UNSET} uid={u} gid={u} euid={u} suid={u} fsuid={u} "
        f"egid={u} sgid={u} fsgid={u} tty=(none) ses={_UNSET} comm={engine.audit_untrusted(proc.comm)} "
        f'exe={engine.audit_untrusted(proc.exe)} key="{SHADOW_KEY}"'
    )


@dataclass
class ShadowCounters:
    """iped's audit counters over the shadow events, plus what only shadow mode can lose."""

    audit: AuditCounters = field(default_factory=lambda: AuditCounters(source="shadow"))
    execs: int = 0
    unreadable: int = 0  # the file's properties could not be read: no event written
    overflows: int = 0  # FAN_Q_OVERFLOW: the kernel dropped events

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.audit.as_dict(),
            "shadow": {"execs": self.execs, "unreadable": self.unreadable, "overflows": self.overflows},
        }


class ShadowLog:
    """auditd-format events (1420, SYSCALL, EOE) appended to a text stream."""

    def __init__(self, out: TextIO, *, first_serial: int = 1) -> None:
        self.out = out
        self.serial = first_serial - 1

    def records(self, when: float, access_body: str, proc: Process) -> list[RawRecord]:
        self.serial += 1
        sec, msec = int(when), int(when * 1000) % 1000
        return [
            RawRecord(AUDIT_IPE_ACCESS, sec, msec, self.serial, access_body),
            RawRecord(AUDIT_SYSCALL, sec, msec, self.serial, syscall_body(proc)),
            RawRecord(AUDIT_EOE, sec, msec, self.serial, ""),
        ]

    def write(self, records: list[RawRecord]) -> None:
        self.out.write("".join(r.to_log_line() + "\n" for r in records))


class Shadow:
    """Evaluate executions against one policy and log them as IPE would have.

    ``success_audit`` False writes only would-be denials (the kernel's default); True writes
    every decision (what ``iped survey`` needs to see everything that ran).
    Raises PolicyError for a policy the kernel would reject.
    """

    def __init__(self, policy_text: bytes, log: ShadowLog, *, success_audit: bool = True) -> None:
        self.engine = engine.PolicyEngine(policy_text)
        self.log = log
        self.success_audit = success_audit
        self.counters = ShadowCounters()
        self._devices: dict[int, engine.DeviceFacts] = {}

    def on_exec(self, fd: int, pid: int, when: float | None = None) -> list[RawRecord] | None:
        """One execution (the event's fd, not closed here); the records written, or None."""
        self.counters.execs += 1
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
            info, _ = file_info_of_fd(fd, path, self._devices)
        except OSError:
            self.counters.unreadable += 1
            return None
        proc = process_of(pid, path)
        body = self.engine.evaluate_body("EXECUTE", "BPRM_CHECK", info, engine.Task(pid, proc.comm))
        if not self.success_audit and not body.endswith('action=DENY"'):
            return None
        records = self.log.records(time.time() if when is None else when, body, proc)
        self.log.write(records)
        self._count(parse_access(body))
        return records

    def _count(self, rec: IpeAccess) -> None:
        """What AuditCounters.count() tallies for this event, without re-parsing the records."""
        self.counters.audit.count_accesses([rec._replace(enforcing=False)])

    def drain(self, fan: Fanotify) -> int:
        """Handle every queued notification; returns how many executions were seen."""
        seen = 0
        while events := fan.read():
            for ev in events:
                if ev.overflow:
                    self.counters.overflows += 1
                    continue
                try:
                    self.on_exec(ev.fd, ev.pid)
                    seen += 1
                finally:
                    os.close(ev.fd)
            self.log.out.flush()
        return seen


def default_watch_paths(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """One mount point per filesystem that code could be executed from (pseudo filesystems skipped)."""
    seen: set[str] = set()
    out = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype = right.split()[0] if right else ""
            if len(fields) < 5 or fstype in PSEUDO_FILESYSTEMS or fields[2] in seen:
                continue
            seen.add(fields[2])
            out.append(fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\"))
    return out


def counters_line(counters: ShadowCounters) -> str:
    """A one-line summary for people."""
    from iped.daemon.status_text import count

    d = counters.as_dict()
    s = d["shadow"]
    return (
        f"shadow: {count(s['execs'], 'execution')} seen, {d['decisions']['allow']} allowed, {d['decisions']['deny']} "
        f"would be denied, {s['unreadable']} unreadable, {count(s['overflows'], 'queue overflow')}"
    )
