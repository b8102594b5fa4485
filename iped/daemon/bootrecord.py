"""What was in force when the boot reached iped: the record ``iped boot-check`` writes at boot.

``iped-boot.service`` runs ``iped boot-check`` after local-fs.target and before iped.service, so
the kernel state it reads is what PID 1's loader (systemd >= 257, ``/etc/ipe/*.p7b``) or the
initramfs left, before iped wrote anything. The record (``[boot] record``, default
``/run/iped-boot/boot.json``, gone at the next boot) says which policy was active, whether PID 1
loaded it (its blob is byte for byte a ``*.p7b`` of the boot copy directory), and whether that is
the declared active policy; ``loaded_by: initramfs`` when the initramfs script activated exactly
that blob before ``switch_root`` (its record, :data:`iped.paths.INITRAMFS_RECORD`); ``iped status``
and ``iped plan`` show it. docs/boot.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iped.backend import Backend
from iped.daemon.actual import ActualState, read_actual
from iped.daemon.bootcopy import read_copy
from iped.daemon.initramfs import read_record as read_initramfs
from iped.settings import BootSettings

RECORD_SCHEMA_VERSION = 1
#: in the daemon's state dir: name, version and sha256 of the blob it last wrote to the boot copy
DEPLOYED_FILE = "boot-copy.json"
#: kernel command line switch: fail closed whatever iped.toml says (a signed UKI's command line
#: cannot be edited by whoever can edit /etc)
CMDLINE_SWITCH = "iped.fail_closed"


def cmdline_fail_closed(cmdline: str) -> bool:
    """``iped.fail_closed`` or ``iped.fail_closed=1|yes|true`` on the command line (only turns it on)."""
    for word in cmdline.split():
        key, _, value = word.partition("=")
        if key == CMDLINE_SWITCH and value.lower() in ("", "1", "yes", "true", "on"):
            return True
    return False


@dataclass(frozen=True, slots=True)
class BootVerdict:
    """The check's outcome: is the declared policy in force, and does the boot stop."""

    in_force: bool
    fail_closed: bool
    stops_boot: bool
    reason: str


def verdict(record: dict[str, Any]) -> BootVerdict:
    """Whether the declared active policy was active before iped, and what fail-closed does with it.

    With ``enforce = false`` declared nothing is protected anyway: fail-closed reports, never halts.
    """
    declared = record["declared"]["active"]
    active = record["kernel"]["active"]
    deployed = record.get("deployed") or {}
    fail_closed = bool(record["fail_closed"])
    if declared is None:
        return BootVerdict(True, fail_closed, False, "no active policy is declared")
    now = f"{active['name']} {active['version']}" if active else "none"
    older = active is not None and deployed.get("name") == active["name"] and \
        _version(active["version"]) < _version(str(deployed.get("version")))
    if active is not None and active["name"] == declared and not older:
        how = {"pid1": f"loaded by PID 1 from {record['loaded_from']}",
               "initramfs": f"activated by {record['loaded_from']} before switch_root"}.get(
            str(record["loaded_by"]), "loaded before iped (not from the boot copy: initramfs or an earlier iped at "
                                      "this boot)")
        return BootVerdict(True, fail_closed, False, f"declared policy {declared!r} in force at boot ({now}), {how}")
    files = ", ".join(f"{f['path']} ({f.get('error') or f['name']})" for f in record["boot_copy_files"]) or "none"
    reason = (f"declared policy {declared!r} was NOT active before iped.service (kernel's active policy: {now}; "
              f"*.p7b in {record['boot_copy_dir']}: {files})")
    if older:
        reason = (f"declared policy {declared!r} was active before iped.service at version {active['version']}, "
                  f"LOWER than {deployed['version']} that iped last wrote to the boot copy (an older blob put back?)")
    stops = fail_closed and bool(record["declared"]["enforce"])
    if fail_closed and not stops:
        reason += "; fail-closed does not stop the boot: enforce = false is declared"
    return BootVerdict(False, fail_closed, stops, reason)


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split("."))
    except ValueError:
        return ()


def read_deployed(state_dir: Path) -> dict[str, Any] | None:
    """What the daemon last wrote to the boot copy (``state_dir/boot-copy.json``), or None."""
    try:
        got = json.loads((state_dir / DEPLOYED_FILE).read_text())
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) else None


def build_record(backend: Backend, copy_dir: Path, declared_active: str | None, declared_enforce: bool, *,
                 fail_closed: bool, boot_id: str, deployed: dict[str, Any] | None = None,
                 initramfs_record: Path | None = None) -> dict[str, Any]:
    """The record of the kernel's IPE state now (before iped), with its verdict; ``deployed``:
    :func:`read_deployed` (a lower version active than that is not "in force");
    ``initramfs_record``: what the initramfs script wrote (``loaded_by: initramfs`` when it
    activated exactly the active blob)."""
    actual = read_actual(backend)
    files = read_copy(copy_dir)
    active = actual.active
    activations = read_initramfs(initramfs_record) if initramfs_record is not None else None
    loaded_by, loaded_from = None, None
    if active is not None:
        match = [f for f in files if f["name"] == active.name and f.get("blob_digest") == active.blob_digest]
        by_initramfs = [a for a in activations or () if a.ok and a.name == active.name
                        and a.sha256 == active.blob_digest]
        if by_initramfs:
            loaded_by, loaded_from = "initramfs", f"the initramfs ({initramfs_record})"
        else:
            loaded_by = "pid1" if match else "before-iped"
            loaded_from = str(match[0]["path"]) if match else None
    record: dict[str, Any] = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "boot_id": boot_id,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel": {
            "enforce": actual.enforce,
            "active": {"name": active.name, "version": str(active.version), "blob_digest": active.blob_digest}
            if active else None,
            "policies": [{"name": p.name, "version": str(p.version), "active": p.active,
                          "blob_digest": p.blob_digest} for p in sorted(actual.policies, key=lambda p: p.name)],
        },
        "loaded_by": loaded_by,
        "loaded_from": loaded_from,
        "boot_copy_dir": str(copy_dir),
        "boot_copy_files": files,
        "declared": {"active": declared_active, "enforce": declared_enforce},
        "deployed": deployed,
        "fail_closed": fail_closed,
        "initramfs": None if activations is None else [
            {"name": a.name, "blob_digest": a.sha256, "load": a.load, "active": a.active} for a in activations],
    }
    v = verdict(record)
    record.update(in_force=v.in_force, stops_boot=v.stops_boot, reason=v.reason)
    return record


def read_record(path: Path, boot_id: str | None) -> dict[str, Any] | None:
    """This boot's record, or None (iped-boot.service did not run, or the file is of another boot)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or (boot_id is not None and record.get("boot_id") != boot_id):
        return None
    return record


def current_boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def summary_line(record: dict[str, Any] | None) -> str:
    """One line for ``iped status``: what PID 1 loaded at this boot."""
    if record is None:
        return "no record of this boot (iped-boot.service did not run)"
    return ("in force: " if record.get("in_force") else "FAILED: ") + str(record.get("reason"))


def boot_facts(settings: BootSettings, declared_active: str | None, actual: ActualState,
               last_sync: dict[str, Any] | None) -> dict[str, Any]:
    """The ``boot`` part of ``iped status --json`` and ``iped plan --json``.

    ``record``: this boot's record (None without one); ``copy``: the ``*.p7b`` PID 1 would load at
    the next boot and whether that is exactly the kernel's active blob (``current``); ``notes``:
    human lines, e.g. that PID 1 loaded a policy other than the declared one.
    """
    record = read_record(settings.record, current_boot_id())
    files = read_copy(settings.copy_dir)
    active = actual.active
    # current: the next boot loads exactly the declared policy's blob the kernel holds active now
    current = active is not None and active.name == declared_active and \
        [(f["name"], f.get("blob_digest")) for f in files] == [(active.name, active.blob_digest)]
    notes = []
    at_boot = record["kernel"]["active"] if record else None
    if at_boot is not None and declared_active is not None and at_boot["name"] != declared_active:
        by = record["loaded_by"] if record else None
        origin = f"PID 1 loaded it from {record['loaded_from']}" if record and by == "pid1" else \
            "the initramfs activated it" if by == "initramfs" else "it was loaded before iped"
        notes.append(f"at boot the active policy was {at_boot['name']} {at_boot['version']} ({origin}), "
                     f"not the declared {declared_active!r}")
    if settings.keep_copy and not current:
        notes.append(f"boot copy in {settings.copy_dir} is not the kernel's active blob: the next boot loads "
                     + (", ".join(f"{f['name']}" for f in files) or "nothing"))
    initramfs_files = read_copy(settings.initramfs_dir) if settings.initramfs else []
    initramfs_current = active is not None and active.name == declared_active and \
        [(f["name"], f.get("blob_digest")) for f in initramfs_files] == [(active.name, active.blob_digest)]
    if settings.initramfs and not initramfs_current:
        notes.append(f"initramfs copy in {settings.initramfs_dir} is not the kernel's active blob: the next "
                     "initramfs built carries " + (", ".join(f"{f['name']}" for f in initramfs_files) or "nothing"))
    return {
        "record": record,
        "summary": summary_line(record),
        "copy": {"enabled": settings.keep_copy, "dir": str(settings.copy_dir), "files": files, "current": current,
                 "last_sync": last_sync},
        "initramfs": {"enabled": settings.initramfs, "dir": str(settings.initramfs_dir), "files": initramfs_files,
                      "current": initramfs_current},
        "fail_closed": settings.fail_closed,
        "notes": notes,
    }
