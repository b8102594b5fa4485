# The C block scanner (_scan.c), its items documented in iped.audit.bulk; the netlink reader of
# iped.audit.netlink and the follower's grouping (_netlink.c): one extension module.
#
# Generic in the classes the callers hand in (RawRecord, IpeAccess, Syscall, Proctitle, Event of
# iped.audit.records and iped.audit.group), so that this stub imports nothing from iped: the
# compiled module imports nothing either, and the import graph stays acyclic for the type checker.
from collections.abc import Callable
from types import NotImplementedType
from typing import Any, TypeVar

_Raw = TypeVar("_Raw", bound=tuple[int, int, int, int, str])  # RawRecord: (type, sec, msec, serial, body)
_Access = TypeVar("_Access")
_Syscall = TypeVar("_Syscall")
_Proctitle = TypeVar("_Proctitle")
_Event = TypeVar("_Event")

def scan_block(
    text: str,
    raw_record: type[_Raw],
    ipe_access: type[_Access],
    syscall: type[_Syscall],
    proctitle: type[_Proctitle],
    event: type[_Event],
    /,
) -> (
    list[
        str
        | tuple[
            int,
            int,
            int,
            tuple[_Raw, _Raw, _Raw],
            str,
            str,
            tuple[_Access, _Syscall, _Proctitle] | None,
            _Event | None,
        ]
    ]
    | None
): ...
def recv_records(
    fd: int,
    raw_record: type[_Raw],
    parse_stamped: Callable[[int, str], _Raw],
    record_error: type[Exception],
    kernel_only: bool,
    max_datagrams: int,
    runs: bool,
    /,
) -> tuple[list[_Raw] | list[list[_Raw]], int, int, int, int, int]: ...
def parse_access(body: str, ipe_access: type[_Access], /) -> _Access | None: ...
def digest_parts(rule: str, /) -> tuple[str, str, str] | NotImplementedType | None: ...
def group_runs(
    runs: list[list[_Raw]],
    start: int,
    inflight: dict[tuple[int, int, int], Any],
    done: dict[tuple[int, int, int], float],
    last_serial: int | None,
    track_gaps: bool,
    now: float,
    event: type[_Event],
    ipe_access: type[_Access],
    keys: list[tuple[int, int, int]],
    ipe_events: list[_Event],
    accesses: list[_Access],
    uncounted: list[_Event],
    /,
) -> tuple[int, int | None, int, int]: ...
def cache_stats() -> dict[str, tuple[int, int]]: ...
