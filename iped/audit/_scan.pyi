# The C block scanner (_scan.c), its items documented in iped.audit.bulk; the netlink reader of
# iped.audit.netlink.
from collections.abc import Callable
from typing import Any

from iped.audit.bulk import ScannedEvent
from iped.audit.group import Event
from iped.audit.records import IpeAccess, Proctitle, RawRecord, Syscall

def scan_block(
    text: str,
    raw_record: type[RawRecord],
    ipe_access: type[IpeAccess],
    syscall: type[Syscall],
    proctitle: type[Proctitle],
    event: type[Event],
    /,
) -> list[str | ScannedEvent] | None: ...
def recv_records(
    fd: int,
    raw_record: type[RawRecord],
    parse_stamped: Callable[[int, str], RawRecord],
    record_error: type[Exception],
    kernel_only: bool,
    max_datagrams: int,
    runs: bool,
    /,
) -> tuple[list[RawRecord] | list[list[RawRecord]], int, int, int, int, int]: ...
def parse_access(body: str, ipe_access: type[IpeAccess], /) -> IpeAccess | None: ...
def group_runs(
    runs: list[list[RawRecord]],
    start: int,
    inflight: dict[tuple[int, int, int], Any],
    done: dict[tuple[int, int, int], float],
    last_serial: int | None,
    track_gaps: bool,
    now: float,
    event: type[Event],
    ipe_access: type[IpeAccess],
    keys: list[tuple[int, int, int]],
    ipe_events: list[Event],
    accesses: list[IpeAccess],
    uncounted: list[Event],
    /,
) -> tuple[int, int | None, int, int]: ...
def cache_stats() -> dict[str, tuple[int, int]]: ...
