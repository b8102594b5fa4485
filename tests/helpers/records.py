"""Audit record text for tests: the bodies real kernels wrote (the lab corpus truth), and auditd
log lines in the kernel's shape with every way to spoil them."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator

from tests.helpers.paths import CORPUS_TRUTH

_PLACEHOLDER = re.compile(r"\{(pid|ino|sha256:[^}]*|blob:[^}]*|fact:[^}]*)\}")


def _concrete(body: str) -> str:
    def value(m: re.Match[str]) -> str:
        kind, _, label = m.group(1).partition(":")
        if kind in ("pid", "ino"):
            return "4242" if kind == "pid" else "17"
        return hashlib.sha256(label.encode()).hexdigest().upper()

    return _PLACEHOLDER.sub(value, body)


def kernel_bodies() -> Iterator[tuple[str, int, str]]:
    """(``series:case``, record type, body) of every audit record the lab's kernels wrote in the
    corpus truth, its placeholders (pid, inode, digests) made concrete."""
    for truth in sorted(CORPUS_TRUTH.glob("*.json")):
        doc = json.loads(truth.read_text())
        for case_id, case in doc.items():
            if case_id.startswith("_"):
                continue
            for step in case["steps"]:
                for rec in step.get("audit", []):
                    rtype, _, body = rec.partition(" ")
                    yield f"{truth.stem}:{case_id}", int(rtype), _concrete(body)


SYSCALL = (
    "arch=c000003e syscall=59 success={ok} exit={exit} a0=55e a1=55f a2=560 a3=8 items=2 ppid=1 pid={pid} "
    "auid={auid} uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 "
    'comm={comm} exe="/usr/bin/bash" subj=unconfined key=(null)'
)


def access_body(i: int, comm: str, path: str, dev: str, rule: str) -> str:
    """An IPE_ACCESS (1420) body for an EXECUTE at BPRM_CHECK; the quoting of each field is the caller's."""
    return f"ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing={i % 2} pid={i} comm={comm} path={path} dev={dev} ino={i} rule={rule}"  # noqa: E501


def messy_lines() -> list[str]:
    """Access events in the kernel's shape (the bulk path's fast case) and every way to spoil them."""
    lines: list[str] = []
    tails: list[str] = []
    for i in range(240):
        stamp = f"{1700000000 + i // 6}.{i % 1000:03d}:{5000 + i + (i // 50) * 4}"  # some serial gaps
        atype = ("1420", "IPE_ACCESS", "UNKNOWN[1420]")[i % 3]
        comm = '"bash"' if i % 7 else "62617368"  # quoted or hex
        path = '"/usr/bin/tool"' if i % 5 else ("2F746D702F61206220" if i % 2 else "?")
        dev = '"vda1"' if i % 11 else "?"
        rule = '"DEFAULT action=DENY"' if i % 4 else '"op=EXECUTE fsverity_digest="sha256":AB12 action=ALLOW"'
        body = access_body(i, comm, path, dev, rule)
        if i % 23 == 9:
            body = body.replace(f"pid={i}", "pid=?")  # not a number: the general parser decides
        if i % 29 == 3:
            body = body[: body.index(" rule=")] + ' rule="DEFAULT act'  # truncated rule
        sc = SYSCALL.format(
            ok="no" if i % 4 else "yes",
            exit=-13 if i % 4 else 0,
            pid=i,
            auid=4294967295 if i % 13 == 0 else 1000,
            comm='"bash"' if i % 9 else "6261207368",
        )
        if i % 31 == 5:
            sc = sc.replace("a0=", "per=400000 a0=")
        title = "proctitle=2F7573722F62696E2F746F6F6C002D2D68656C70" if i % 8 else 'proctitle="tool"'
        if i % 37 == 1:
            title = "proctitle=ZZ"  # not hex
        recs = [f"type={atype} msg=audit({stamp}): {body}", f"type=SYSCALL msg=audit({stamp}): {sc}"]
        if i % 6 == 2:
            recs.append(f'type=CWD msg=audit({stamp}): cwd="/root"')
            recs.append(f'type=PATH msg=audit({stamp}): item=0 name="/usr/bin/tool" inode={i}')
        if i % 43 == 7:
            recs.append(f"type=FOO msg=audit({stamp}): junk")  # a type name auditd never prints
        if i % 47 == 11:
            recs.append(f"type=UNKNOWN[1320] msg=audit({stamp}): ")  # an EOE in the middle
        if i % 41 == 13:
            recs.append(recs[1])  # the same record twice inside the event
        recs.append(f"type=PROCTITLE msg=audit({stamp}): {title}")
        if i % 17 != 4:
            recs.append(f"type=EOE msg=audit({stamp}): ")  # else: missing EOE
        if i % 19 == 6:
            recs = [recs[0]] + [f"node=h {r}" for r in recs[1:]]
        if i % 53 == 8:
            recs[1] = recs[1] + '\x1dARCH=x86_64 AUID="root"'  # auditd's enriched format
        if i % 59 == 10:
            recs[0] = recs[0][:60]  # truncated line
        if i % 14 == 0:
            lines.extend(recs)
            lines.extend(recs)  # the whole event twice
        elif i % 10 == 3 and lines:
            # interleave with the previous event's tail
            tails = recs[2:]
            lines.extend(recs[:2])
        else:
            lines.extend(recs)
            lines.extend(tails)
            tails = []
        if i % 27 == 0:
            lines.append("----")
        if i % 33 == 2:
            lines.append(f"type=USER_AUTH msg=audit({stamp}): pid=1 uid=0 msg='op=x'")
    lines.extend(tails)
    lines.append("type=EOE msg=audit(1700000999.000:1): ")  # spurious
    lines.append(f"type=1420 msg=audit(1700001000.000:9999): {access_body(1, 'x', 'y', 'z', 'w')}")  # no newline
    return lines
