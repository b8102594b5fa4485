# The C block scanner (_scan.c); its items are documented in iped.audit.bulk.
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
