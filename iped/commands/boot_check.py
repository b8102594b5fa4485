"""``iped boot-check``: at boot, before iped.service, record what PID 1 loaded; fail closed when asked.

Run by ``iped-boot.service`` (docs/boot.md). It reads the kernel's IPE state (never writes it),
writes the record (:mod:`iped.daemon.bootrecord`) and prints one line. Exit 1 only when the
declared policy is not active *and* fail-closed is on (``[boot] fail_closed`` or
``iped.fail_closed`` on the kernel command line) *and* enforce is declared: then the drop-in
``fail-closed.conf`` halts the boot. Everything else -- an unreadable configuration without the
command line switch, a kernel without IPE -- is reported and exits 0, so a machine that never
opted in never halts because of this check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from iped.commands import ExitCode
from iped.paths import INITRAMFS_RECORD

if TYPE_CHECKING:
    from iped.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default="/etc/iped/iped.toml", help="iped.toml to read")
    parser.add_argument("--ipe-root", metavar="DIR", default="/sys/kernel/security/ipe",
                        help="the IPE securityfs directory to read (default: %(default)s)")
    parser.add_argument("--cmdline", metavar="FILE", default="/proc/cmdline",
                        help="the kernel command line to read iped.fail_closed=1 from (default: %(default)s)")
    parser.add_argument("--initramfs-record", metavar="FILE", default=INITRAMFS_RECORD,
                        help="what the initramfs activated before switch_root (default: %(default)s)")
    parser.add_argument("--initramfs-blobs", action="store_true",
                        help="record nothing; print 'NAME SHA256 PATH' of each blob the initramfs may carry "
                             "([boot] initramfs), or fail when one is unsafe (the initramfs-tools hook)")


def _say(line: str) -> None:
    sys.stderr.write(f"iped-boot: {line}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from iped.backend import SecurityfsBackend
    from iped.daemon.bootrecord import build_record, cmdline_fail_closed, current_boot_id, read_deployed
    from iped.fsutil import write_atomically
    try:
        cmdline = Path(args.cmdline).read_text()
    except OSError:
        cmdline = ""
    forced = cmdline_fail_closed(cmdline)
    from iped.settings import Settings

    settings = Settings()
    try:
        from iped.config import ConfigError, load_settings

        try:
            settings = load_settings(Path(args.config))
        except ConfigError as e:
            problems = "; ".join(str(p) for p in e.problems)
            if args.initramfs_blobs:  # the defaults ship nothing: a weaker initramfs, so refuse
                _say(f"initramfs: REFUSED: {args.config}: invalid: {problems}")
                return ExitCode.FAILED
            _say(f"{args.config}: invalid, checking with the defaults: {problems}")
    except FileNotFoundError:
        _say(f"{args.config}: not found, checking with the defaults")
    if args.initramfs_blobs:
        return _initramfs_blobs(settings, Path(args.ipe_root))
    fail_closed = forced or settings.boot.fail_closed
    from iped.daemon.bootrecord import read_record

    earlier = read_record(settings.boot.record, current_boot_id())
    if earlier is not None:  # started again later in this boot (iped restarted, upgraded): keep the boot's
        _say(f"recorded at this boot already ({earlier.get('recorded_at')}): {earlier.get('reason')}")
        return ExitCode.OK
    ipe_root = Path(args.ipe_root)
    if not ipe_root.is_dir():
        why = f"{ipe_root}: no IPE in this kernel (securityfs not mounted, or IPE not in lsm=)"
        _say(f"FAIL-CLOSED: {why}: stopping the boot" if fail_closed and settings.policies.enforce else why)
        return ExitCode.FAILED if fail_closed and settings.policies.enforce else ExitCode.OK
    try:
        record = build_record(SecurityfsBackend(ipe_root, "boot-check"), settings.boot.copy_dir,
                              settings.policies.active, settings.policies.enforce, fail_closed=fail_closed,
                              boot_id=current_boot_id() or "", deployed=read_deployed(settings.daemon.state_dir),
                              initramfs_record=Path(args.initramfs_record))
    except OSError as e:
        _say(f"{ipe_root}: cannot read the IPE state: {e}")
        return ExitCode.FAILED if fail_closed and settings.policies.enforce else ExitCode.OK
    try:
        import json

        settings.boot.record.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(settings.boot.record, json.dumps(record, indent=1, sort_keys=True) + "\n", 0o644,
                         exact_mode=True)
    except OSError as e:
        _say(f"{settings.boot.record}: cannot write the boot record: {e.strerror or e}")
    if record["stops_boot"]:
        _say(f"FAIL-CLOSED: {record['reason']}: stopping the boot")
        return ExitCode.FAILED
    _say(record["reason"] if record["in_force"] else f"WARNING: {record['reason']}")
    return ExitCode.OK


def _initramfs_blobs(settings: Settings, ipe_root: Path) -> int:
    """For the initramfs-tools hook: the blobs to carry on stdout, a note on stderr; exit 1 when
    unsafe (update-initramfs fails and keeps the old image: never weaker, never lower)."""
    from iped.backend import SecurityfsBackend
    from iped.daemon.initramfs import RefusedError, blobs_to_ship

    backend = SecurityfsBackend(ipe_root, "boot-check") if (ipe_root / "policies").is_dir() else None
    try:
        blobs, note = blobs_to_ship(settings.boot, backend)
    except RefusedError as e:
        _say(f"initramfs: REFUSED: {e}")
        return ExitCode.FAILED
    except OSError as e:
        _say(f"initramfs: REFUSED: {ipe_root}: cannot read the IPE state: {e.strerror or e}")
        return ExitCode.FAILED
    _say(f"initramfs: {note}")
    for blob in blobs:
        sys.stdout.write(f"{blob.name} {blob.sha256} {blob.path}\n")
    return ExitCode.OK
