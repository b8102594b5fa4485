"""The corpus case model and its loader: ``tests/corpus/*.toml`` -> :class:`Case` list.

The ordering rules for cases that carry an ``epoch`` are in :mod:`tests.lab.corpus`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
CORPUS_DIR = REPO / "tests" / "corpus"

#: Step verbs and probe kinds the case format knows.
VERBS = ("write", "read", "listdir", "stat", "set", "exec", "mmap", "mprotect", "size_limit")
PROBE_TARGETS = (
    "initramfs", "tmpfs", "anon",
    "fsverity:plain", "fsverity:signed", "fsverity:none",
    "dmverity:plain", "dmverity:signed",
)


class CorpusError(ValueError):
    """A case file is malformed or breaks the ordering rules (message names file and case)."""


@dataclass(frozen=True)
class BlobSpec:
    """How to build the bytes written to ``new_policy``/``update``.

    ``text`` is the policy text; each character stands for one byte (latin-1), so TOML
    ``\\u00FF`` is the byte 0xFF and ``\\u0000`` a NUL.  ``sign`` is ``rsa``, ``ec``,
    ``untrusted``, ``leaf`` (issued by the enrolled lab CA) or ``none`` (the raw text);
    ``hash`` the PKCS#7 digest algorithm;
    ``transform`` the named transformations applied in order (see :func:`build_blob`).
    """

    label: str
    text: str
    sign: str = "rsa"
    hash: str = "sha256"
    transform: tuple[str, ...] = ()


@dataclass(frozen=True)
class Probe:
    """A real action performed by a child process with comm :data:`PROBE_COMM`.

    ``kind`` is ``exec``, ``mmap`` or ``mprotect``; ``target`` one of :data:`PROBE_TARGETS`;
    ``prot`` the protection of mmap (or the initial one of mprotect), ``to`` the mprotect one.
    """

    kind: str
    target: str
    prot: str = "rx"
    to: str = ""


@dataclass(frozen=True)
class Step:
    """One step: ``verb`` plus its arguments (``path`` relative to the IPE securityfs root)."""

    verb: str
    path: str = ""
    data: bytes | None = None
    blob: BlobSpec | None = None
    probe: Probe | None = None
    repeat: int = 1


@dataclass(frozen=True)
class Case:
    """One corpus case: independent, named, run once per kernel and once per emulator ABI."""

    id: str
    group: str
    description: str
    steps: tuple[Step, ...]
    #: Policy name substituted for ``{name}``.
    name: str
    #: Activation epoch (``None``: the case never activates a policy).
    epoch: int | None = None
    #: Activate ``corpus-base-<epoch>`` first (only the lowest epoch may say false).
    base: bool = True
    #: Fixtures the case needs (``fsverity``, ``dmverity``...), for error messages.
    needs: tuple[str, ...] = ()


def policy_name_for(case_id: str) -> str:
    """The default policy name of a case: ``c-`` + the id (ids are [a-z0-9-] only)."""
    return "c-" + case_id


def _latin1(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise CorpusError(f"{where}: expected a string, got {type(value).__name__}")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise CorpusError(f"{where}: characters above U+00FF; write raw bytes as \\u00XX") from exc


def _parse_blob(raw: Any, where: str, counter: list[int]) -> BlobSpec:
    if not isinstance(raw, dict):
        raise CorpusError(f"{where}: blob must be a table")
    unknown = set(raw) - {"text", "sign", "hash", "transform", "label"}
    if unknown:
        raise CorpusError(f"{where}: unknown blob keys {sorted(unknown)}")
    _latin1(raw.get("text", ""), where)
    counter[0] += 1
    transform = raw.get("transform", [])
    if isinstance(transform, str):
        transform = [transform]
    sign = str(raw.get("sign", "rsa"))
    if sign not in ("rsa", "ec", "untrusted", "leaf", "none"):
        raise CorpusError(f"{where}: sign must be rsa, ec, untrusted, leaf or none")
    return BlobSpec(
        label=str(raw.get("label", f"b{counter[0]}")), text=str(raw.get("text", "")), sign=sign,
        hash=str(raw.get("hash", "sha256")), transform=tuple(str(t) for t in transform),
    )


def _parse_probe(kind: str, raw: Any, where: str) -> Probe:
    if isinstance(raw, str):
        raw = {"target": raw}
    if not isinstance(raw, dict) or "target" not in raw:
        raise CorpusError(f"{where}: {kind} needs a target")
    target = str(raw["target"])
    if target not in PROBE_TARGETS:
        raise CorpusError(f"{where}: unknown target {target!r}; known: {', '.join(PROBE_TARGETS)}")
    if kind == "exec" and target == "anon":
        raise CorpusError(f"{where}: cannot exec anonymous memory")
    return Probe(kind, target, str(raw.get("prot", "rx")), str(raw.get("to", "")))


def _parse_step(raw: Any, where: str, counter: list[int]) -> Step:
    if not isinstance(raw, dict):
        raise CorpusError(f"{where}: a step is a table")
    verbs = [v for v in VERBS if v in raw]
    if len(verbs) != 1:
        raise CorpusError(f"{where}: a step needs exactly one of {', '.join(VERBS)}")
    verb = verbs[0]
    value = raw[verb]
    repeat = int(raw.get("repeat", 1))
    if verb in ("exec", "mmap", "mprotect"):
        return Step(verb, probe=_parse_probe(verb, value, where))
    if verb == "set":
        if not isinstance(value, dict) or len(value) != 1:
            raise CorpusError(f"{where}: set = {{enforce|success_audit = \"VALUE\"}}")
        (key, val), = value.items()
        if key not in ("enforce", "success_audit"):
            raise CorpusError(f"{where}: set only knows enforce and success_audit")
        return Step("write", path=key, data=_latin1(val, where))
    if verb == "size_limit":
        return Step("size_limit", path=str(value))
    if not isinstance(value, str):
        raise CorpusError(f"{where}: {verb} takes a path string")
    if verb == "write":
        has = [k for k in ("data", "data_hex", "blob") if k in raw]
        if len(has) != 1:
            raise CorpusError(f"{where}: write needs exactly one of data, data_hex, blob")
        if "blob" in raw:
            return Step("write", path=value, blob=_parse_blob(raw["blob"], where, counter), repeat=repeat)
        data = bytes.fromhex(str(raw["data_hex"])) if "data_hex" in raw else _latin1(raw["data"], where)
        return Step("write", path=value, data=data, repeat=repeat)
    return Step(verb, path=value)


def parse_case_file(path: Path) -> list[Case]:
    """All cases of one TOML file (group = file stem without a leading ``NN-``)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CorpusError(f"{path.name}: {exc}") from exc
    group = re.sub(r"^\d+-", "", path.stem)
    cases: list[Case] = []
    for i, raw in enumerate(doc.get("case", [])):
        where = f"{path.name}: case #{i + 1}"
        unknown = set(raw) - {"id", "description", "steps", "name", "epoch", "base", "needs"}
        if unknown:
            raise CorpusError(f"{where}: unknown keys {sorted(unknown)}")
        case_id = str(raw.get("id", ""))
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", case_id):
            raise CorpusError(f"{where}: id must be [a-z0-9-]+, got {case_id!r}")
        where = f"{path.name}: {case_id}"
        counter = [0]
        steps = tuple(_parse_step(s, f"{where} step {j + 1}", counter)
                      for j, s in enumerate(raw.get("steps", [])))
        if not steps:
            raise CorpusError(f"{where}: no steps")
        labels = [s.blob.label for s in steps if s.blob is not None]
        if len(labels) != len(set(labels)):
            raise CorpusError(f"{where}: blob labels must be unique within a case")
        name = _latin1(raw.get("name", policy_name_for(case_id)), where).decode("latin-1")
        epoch = raw.get("epoch")
        cases.append(Case(
            id=case_id, group=group, description=str(raw.get("description", "")), steps=steps,
            name=name, epoch=None if epoch is None else int(epoch), base=bool(raw.get("base", True)),
            needs=tuple(str(n) for n in raw.get("needs", [])),
        ))
    return cases


def load_cases(directory: Path = CORPUS_DIR) -> list[Case]:
    """Every case, in run order: non-activating cases (file order), then by epoch.

    Raises :class:`CorpusError` for duplicate ids or epochs, or ``base = false`` anywhere but
    on the lowest epoch.
    """
    cases: list[Case] = []
    for path in sorted(directory.glob("*.toml")):
        cases.extend(parse_case_file(path))
    seen: dict[str, str] = {}
    for c in cases:
        if c.id in seen:
            raise CorpusError(f"duplicate case id {c.id!r} ({seen[c.id]} and {c.group})")
        seen[c.id] = c.group
    epochs = [c.epoch for c in cases if c.epoch is not None]
    if len(epochs) != len(set(epochs)) or any(e < 1 or e >= 60000 for e in epochs):
        raise CorpusError("epochs must be unique integers in 1..59999")
    plain = [c for c in cases if c.epoch is None]
    active = sorted((c for c in cases if c.epoch is not None), key=lambda c: c.epoch or 0)
    for c in active[1:]:
        if not c.base:
            raise CorpusError(f"{c.id}: only the lowest epoch may run without a base policy")
    return plain + active


def final_epoch(cases: Sequence[Case]) -> int:
    """The epoch of the ``corpus-end`` policy left active after a run (max epoch + 1)."""
    return max((c.epoch or 0 for c in cases), default=0) + 1
