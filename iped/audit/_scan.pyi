from iped.audit.group import Event
from iped.audit.records import IpeAccess, Proctitle, RawRecord, Syscall

_Item = tuple[
    int,
    int,
    int,
    tuple[RawRecord, RawRecord, RawRecord],
    str,
    str,
    tuple[IpeAccess, Syscall, Proctitle] | None,
    Event | None,
]

def scan_block(
    text: str,
    raw_record: type[RawRecord],
    ipe_access: type[IpeAccess],
    syscall: type[Syscall],
    proctitle: type[Proctitle],
    event: type[Event],
    /,
) -> list[str | _Item] | None: ...
