"""The daemon's follower: emulator source end to end, counters, Prometheus textfile, source choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from iped.audit.counters import AuditCounters, prometheus_text, write_textfile
from iped.audit.follow import EmulatorSource, Follower, make_follower
from iped.audit.group import Event
from iped.audit.records import IpeAccess, RawRecord
from iped.daemon.settings import AuditSettings, AuditSource

GOLDEN = Path(__file__).parent / "golden"


def emulator_with_policy() -> object:
    from iped.emulator import Emulator, KernelConfig

    return Emulator(config=KernelConfig(boot_policy=(GOLDEN / "policy.pol").read_bytes()))


def test_emulator_denial_to_event_with_policy_line(tmp_path: Path) -> None:
    from iped.emulator import FileInfo, Task

    emu = emulator_with_policy()
    settings = AuditSettings(source=AuditSource.AUTO, prometheus_textfile=tmp_path / "iped_audit.prom")
    follower = make_follower(settings, emu)
    assert follower is not None and follower.source.name == "emulator"
    with pytest.raises(PermissionError):
        emu.bprm_check(FileInfo("/tmp/evil", "vda1", 5), Task(77, "sh"))  # type: ignore[attr-defined]
    emu.bprm_check(FileInfo("/init", "rootfs", 6, boot_verified=True), Task(78, "sh"))  # type: ignore[attr-defined]
    events = follower.on_timeout(100.0)
    events += follower.on_timeout(200.0)  # single records without EOE complete by timeout
    accesses = [r for e in events for r in e.ipe if isinstance(r, IpeAccess)]
    assert [(a.path, a.action) for a in accesses] == [("/tmp/evil", "DENY")]
    c = follower.counters()
    assert c["source"] == "emulator" and c["decisions"] == {"allow": 0, "deny": 1}
    assert c["rules"] == {"DEFAULT action=DENY": 1}
    prom = (tmp_path / "iped_audit.prom").read_text()
    assert 'iped_audit_decisions_total{op="EXECUTE",hook="BPRM_CHECK",action="DENY",enforcing="1"} 1' in prom
    assert not list(tmp_path.glob(".*.tmp"))
    follower.close()


def test_fd_less_source_asks_for_polling() -> None:
    follower = Follower(EmulatorSource(lambda: []), clock=lambda: 0.0)
    t = follower.timeout()
    assert t is not None and 0 < t <= 1.0
    assert follower.fileno() >= 0
    follower.close()


def test_stamped_emulator_payload_kept() -> None:
    src = EmulatorSource(
        lambda: [
            (
                1422,
                "audit(5.006:7): policy_name=? policy_version=? policy_digest=? auid=0 ses=1 lsm=ipe res=0 errno=-129",
            )
        ]
    )
    assert src.read() == [
        RawRecord(1422, 5, 6, 7, "policy_name=? policy_version=? policy_digest=? auid=0 ses=1 lsm=ipe res=0 errno=-129")
    ]
    src.close()


def test_audit_off() -> None:
    assert make_follower(AuditSettings(source=AuditSource.NONE)) is None


def test_counters_loads_and_lost(tmp_path: Path) -> None:
    c = AuditCounters()
    c.count(
        Event(
            1,
            0,
            1,
            (
                RawRecord(
                    1422,
                    1,
                    0,
                    1,
                    "policy_name=? policy_version=? policy_digest=? auid=0 ses=1 lsm=ipe res=0 errno=-126",
                ),
            ),
            True,
        )
    )
    c.count(
        Event(
            1,
            0,
            2,
            (
                RawRecord(
                    1422,
                    1,
                    0,
                    2,
                    'policy_name="p" policy_version=1.0.0 policy_digest=sha256:00 auid=0 ses=1 lsm=ipe res=1 errno=0',
                ),
            ),
            True,
        )
    )
    c.enobufs = 3
    c.group.serial_gaps = 5
    d = c.as_dict()
    assert d["loads"] == [
        {"result": "failed", "errno": 126, "errno_name": "ENOKEY", "count": 1},
        {"result": "loaded", "errno": 0, "errno_name": None, "count": 1},
    ]
    assert d["lost"] == {"enobufs": 3, "serial_gaps": 5}
    text = prometheus_text(c)
    assert 'iped_audit_policy_loads_total{result="failed",errno="ENOKEY"} 1' in text
    assert 'iped_audit_lost_total{reason="enobufs"} 3' in text
    assert 'iped_audit_lost_total{reason="serial_gaps"} 5' in text
    target = tmp_path / "m.prom"
    write_textfile(c, target)
    assert target.read_text() == text
