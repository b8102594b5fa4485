"""The differential conformance corpus: one set of cases, run on real kernels and on the emulator.

Cases live in ``tests/corpus/*.toml`` (human-readable, one file per group); the observed
behaviour of each kernel series is recorded in ``tests/corpus/truth/<series>.json``.  This
module holds everything both sides share:

* the case model (:class:`Case`, :class:`Step`, :class:`BlobSpec`, :class:`Probe`) and
  :func:`load_cases`, which checks the ordering rules below;
* :func:`build_blob`: policy blobs made from a case description (signing with the committed
  TEST keys, then named transformations such as ``pem`` or ``truncated:10``);
* the :class:`Backend` protocol and the step executor :func:`run_cases`, which runs cases in
  one long-lived kernel (or emulator) and returns normalised, JSON-ready results;
* normalisation (:class:`Normaliser`): run-varying values become placeholders (``{pid}``,
  ``{ino:tmpfs}``, ``{sha256:<blob label>}``, ``{blob:<label>}``) so truth is stable;
* :func:`run_kernel`, called inside the lab guest, writing ``corpus-results.json``.

IPE state is monotonic (no deactivation; activation needs a version >= the active one), so
cases that activate carry an ``epoch`` and run after every other case, in increasing epoch
order.  Before such a case the executor activates an allow-all *base* policy
``corpus-base-<epoch>`` (version ``<epoch-1>.65535.65535``); the case's own policies use
major version ``<epoch>`` (``{epoch}`` in policy text) and minor < 65535; afterwards an
allow-all ``corpus-after-<epoch>`` (``<epoch>.65535.65535``) is activated before enforce is
restored.  Each case therefore starts from a state that depends only on itself, which is
what lets the emulator replay one case on a fresh instance.
"""

from __future__ import annotations

import base64
import errno as errno_mod
import functools
import hashlib
import json
import re
import signal
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

#: Repository paths (the corpus is data kept next to the tests).
REPO = Path(__file__).resolve().parents[2]
CORPUS_DIR = REPO / "tests" / "corpus"
TRUTH_DIR = CORPUS_DIR / "truth"
RESULTS_FILE = "corpus-results.json"

#: Step verbs and probe kinds the case format knows.
VERBS = ("write", "read", "listdir", "stat", "set", "exec", "mmap", "mprotect", "size_limit")
PROBE_TARGETS = (
    "initramfs", "tmpfs", "anon",
    "fsverity:plain", "fsverity:signed", "fsverity:none",
    "dmverity:plain", "dmverity:signed",
)
#: Audit record types the corpus keeps (IPE's three + MAC_STATUS for enforce toggles).
IPE_TYPES = (1420, 1421, 1422, 1404)
#: Version minor reserved for the executor's housekeeping policies.
RESERVED_MINOR = 65535
PROBE_COMM = "ipe-probe"
#: The size bisection gives up above this (the guest has 2 GiB of RAM).
SIZE_LIMIT_CAP = 1 << 26

_TEMPLATE = re.compile(r"\{(name|epoch|fact:[A-Za-z0-9_.:-]+(?:\|upper)?)\}")


class CorpusError(ValueError):
    """A case file is malformed or breaks the ordering rules (message names file and case)."""


# --------------------------------------------------------------------------- case model


@dataclass(frozen=True)
class BlobSpec:
    """How to build the bytes written to ``new_policy``/``update``.

    ``text`` is the policy text; each character stands for one byte (latin-1), so TOML
    ``\\u00FF`` is the byte 0xFF and ``\\u0000`` a NUL.  ``sign`` is ``rsa``, ``ec``,
    ``untrusted`` or ``none`` (the raw text); ``hash`` the PKCS#7 digest algorithm;
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
    if sign not in ("rsa", "ec", "untrusted", "none"):
        raise CorpusError(f"{where}: sign must be rsa, ec, untrusted or none")
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


# --------------------------------------------------------------------------- templating


def expand(text: str, case: Case, facts: Mapping[str, str]) -> str:
    """Replace ``{name}``, ``{epoch}`` and ``{fact:KEY}`` (``{fact:KEY|upper}``) in text and paths."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "name":
            return case.name
        if key == "epoch":
            if case.epoch is None:
                raise CorpusError(f"{case.id}: {{epoch}} used in a case without an epoch")
            return str(case.epoch)
        fact, _, modifier = key.removeprefix("fact:").partition("|")
        if fact not in facts:
            return "{missing-fact:" + fact + "}"
        return facts[fact].upper() if modifier == "upper" else facts[fact]

    return _TEMPLATE.sub(sub, text)


# --------------------------------------------------------------------------- blobs


@functools.cache
def _signer(name: str) -> tuple[Any, Any]:
    """(certificate, private key) of a lab signer; loaded once (RSA key checks are slow)."""
    from tests.lab import keys

    signer = {"rsa": keys.RSA_SIGNER, "ec": keys.EC_SIGNER, "untrusted": keys.UNTRUSTED_SIGNER}[name]
    return signer.certificate(), signer.private_key()


def _sign_sha1(text: bytes, spec: BlobSpec) -> bytes:
    """SHA-1 SignedData built by hand: cryptography's builder refuses SHA-1 digests."""
    from asn1crypto import algos, cms
    from asn1crypto import x509 as ax509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    cert, key = _signer(spec.sign)
    acert = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature, sig_alg = key.sign(text, ec.ECDSA(hashes.SHA1())), "sha1_ecdsa"
    else:
        signature, sig_alg = key.sign(text, padding.PKCS1v15(), hashes.SHA1()), "rsassa_pkcs1v15"
    digest_alg = algos.DigestAlgorithm({"algorithm": "sha1"})
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": acert.issuer, "serial_number": acert.serial_number})}),
        "digest_algorithm": digest_alg,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": sig_alg}),
        "signature": signature,
    })
    signed = cms.SignedData({
        "version": "v1", "digest_algorithms": [digest_alg],
        "encap_content_info": {"content_type": "data", "content": text},
        "certificates": [] if "no_certs" in spec.transform else [acert],
        "signer_infos": [signer_info],
    })
    blob: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return blob


def _sign(text: bytes, spec: BlobSpec) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    if spec.hash == "sha1":
        return _sign_sha1(text, spec)

    options = [pkcs7.PKCS7Options.Binary]
    if "signed_attrs" not in spec.transform:
        options.append(pkcs7.PKCS7Options.NoAttributes)
    if "no_certs" in spec.transform:
        options.append(pkcs7.PKCS7Options.NoCerts)
    if "detached" in spec.transform:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    algs: dict[str, Any] = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    cert, key = _signer(spec.sign)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(text).add_signer(cert, key, algs[spec.hash])
    return builder.sign(serialization.Encoding.DER, options)


#: Transformations applied while signing (the rest are applied to the finished blob).
_SIGN_OPTIONS = ("signed_attrs", "no_certs", "detached")


def build_blob(spec: BlobSpec, text: bytes) -> bytes:
    """The bytes to write for ``spec`` with the (already expanded) policy ``text``.

    Transformations: ``pad:N`` (before signing: pad the text with a trailing comment line to
    N bytes), ``signed_attrs``/``no_certs``/``detached`` (signing options), ``pem`` (PEM
    armour), ``tampered`` (flip the last byte of the embedded text), ``truncated:N`` (drop
    the last N bytes), ``trailing:HEX`` (append bytes), ``double`` (the blob twice).
    """
    for t in spec.transform:
        if t.startswith("pad:"):
            target = int(t[4:])
            pad = target - len(text) - 2
            if pad < 0:
                raise CorpusError(f"pad:{target} is shorter than the text ({len(text)} bytes)")
            text = text + b"\n#" + b"x" * pad
    blob = text if spec.sign == "none" else _sign(text, spec)
    for t in spec.transform:
        if t in _SIGN_OPTIONS or t.startswith("pad:"):
            continue
        if t == "pem":
            body = base64.encodebytes(blob).replace(b"\n", b"")
            lines = [body[i:i + 64] for i in range(0, len(body), 64)]
            blob = b"-----BEGIN PKCS7-----\n" + b"\n".join(lines) + b"\n-----END PKCS7-----\n"
        elif t == "tampered":
            at = blob.rfind(text[-8:]) if len(text) >= 8 else -1
            if at < 0:
                raise CorpusError("tampered: the text is not embedded in the blob")
            pos = at + 7
            blob = blob[:pos] + bytes([blob[pos] ^ 0x01]) + blob[pos + 1:]
        elif t.startswith("truncated:"):
            blob = blob[: len(blob) - int(t[10:])]
        elif t.startswith("trailing:"):
            blob = blob + bytes.fromhex(t[9:])
        elif t == "double":
            blob = blob + blob
        else:
            raise CorpusError(f"unknown blob transformation {t!r}")
    return blob


def housekeeping_text(kind: str, epoch: int) -> bytes:
    """Allow-all policies the executor activates around epoch cases (see module docstring)."""
    if kind == "base":
        version = f"{epoch - 1}.{RESERVED_MINOR}.{RESERVED_MINOR}"
    elif kind == "after":
        version = f"{epoch}.{RESERVED_MINOR}.{RESERVED_MINOR}"
    else:
        version = f"{epoch}.0.0"
    return f"policy_name=corpus-{kind}-{epoch} policy_version={version}\nDEFAULT action=ALLOW\n".encode()


# --------------------------------------------------------------------------- backend protocol


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe child reported: ``result`` (``0``, an errno name, ``mmap:EACCES``,
    ``signal:SIGSEGV``) and the child's pid (for ``{pid}``)."""

    result: str
    pid: int


class Backend(Protocol):
    """One IPE implementation the executor can drive: the real securityfs or the emulator.

    * ``abi`` is the kernel series the results belong to (``6.12`` or ``7``);
    * paths are relative to the IPE securityfs root and spelled as latin-1 strings (one
      character per byte), as are the names ``listdir`` returns;
    * ``write`` performs ONE write() call and returns its count, or raises ``OSError`` with
      the kernel's errno; ``read`` returns the whole content; ``stat`` the ``st_mode``;
    * ``probe`` performs one exec/mmap/mprotect as a task with comm :data:`PROBE_COMM`;
    * ``drain_audit`` returns the records (type, body without ``audit(...): ``) emitted since
      the last drain, with 1420 records kept only when they name ``probe_pid``;
    * ``facts`` are the measured properties of the probe targets (path, dev, ino, digests).
    """

    @property
    def abi(self) -> str: ...

    def write(self, path: str, data: bytes) -> int: ...

    def read(self, path: str) -> bytes: ...

    def listdir(self, path: str) -> list[str]: ...

    def stat(self, path: str) -> int: ...

    def probe(self, probe: Probe) -> ProbeOutcome: ...

    def drain_audit(self, probe_pid: int | None) -> list[tuple[int, bytes]]: ...

    def facts(self) -> Mapping[str, str]: ...


# --------------------------------------------------------------------------- normalisation


@dataclass
class Normaliser:
    """Byte substitutions turning run-varying values into placeholders.

    Longest needles are replaced first, so a digest is never half-replaced by a shorter one.
    """

    subs: dict[bytes, bytes] = field(default_factory=dict)

    def add(self, needle: bytes, placeholder: str) -> None:
        """Register ``needle``; the first placeholder registered for a needle stays."""
        if needle and needle not in self.subs:
            self.subs[needle] = placeholder.encode()

    def add_blob(self, label: str, blob: bytes) -> None:
        digest = hashlib.sha256(blob).hexdigest()
        self.add(digest.upper().encode(), "{sha256:" + label + "}")
        self.add(digest.encode(), "{sha256:" + label + "}")

    def apply(self, data: bytes) -> bytes:
        for needle in sorted(self.subs, key=len, reverse=True):
            data = data.replace(needle, self.subs[needle])
        return data


def fact_placeholders(norm: Normaliser, facts: Mapping[str, str]) -> None:
    """Register every measured fact whose value varies between runs (digests, root hashes).

    Inode numbers are not registered here: several targets can share one number, so only
    the probed target's inode becomes ``{ino}`` (in :func:`run_step`).
    """
    for key, value in sorted(facts.items()):  # sorted: equal digests get the first key's name
        if key.endswith(".digest") or key.endswith(".roothash"):
            norm.add(value.encode(), "{fact:" + key + "}")
            norm.add(value.upper().encode(), "{fact:" + key + "}")


def render_bytes(data: bytes) -> str | dict[str, str]:
    """Text when the bytes are printable ASCII (plus \\n, \\t), else ``{"hex": ...}``."""
    if all(0x20 <= b < 0x7F or b in (0x09, 0x0A) for b in data):
        return data.decode("ascii")
    return {"hex": data.hex()}


def render_audit(rtype: int, body: bytes) -> str:
    return f"{rtype} " + body.decode("ascii", "backslashreplace")


_PID = re.compile(rb"\bpid=(\d+) ")


def errno_text(exc: OSError) -> str:
    return errno_mod.errorcode.get(exc.errno or 0, str(exc.errno))


# --------------------------------------------------------------------------- executor


def _write_all(backend: Backend, path: str, data: bytes) -> str:
    try:
        n = backend.write(path, data)
    except OSError as exc:
        return errno_text(exc)
    return "0" if n == len(data) else f"short:{n}"


def housekeeping_blob(kind: str, epoch: int) -> bytes:
    """The RSA-signed blob of :func:`housekeeping_text` (deterministic: PKCS#1 v1.5)."""
    return _sign(housekeeping_text(kind, epoch), BlobSpec(kind, ""))


def _housekeeping(backend: Backend, kind: str, epoch: int) -> None:
    """Load and activate an allow-all policy; errors here mean the run is broken."""
    backend.write("new_policy", housekeeping_blob(kind, epoch))
    backend.write(f"policies/corpus-{kind}-{epoch}/active", b"1")


def _delete_inactive(backend: Backend, keep: Iterable[str] = ()) -> None:
    try:
        names = backend.listdir("policies")
    except OSError:
        return
    for n in names:
        if n in keep:
            continue
        try:
            if backend.read(f"policies/{n}/active") == b"0":
                backend.write(f"policies/{n}/delete", b"1")
        except OSError:
            pass


@dataclass
class CaseRun:
    """State of one running case: its normaliser and its built blobs by label."""

    case: Case
    facts: Mapping[str, str]
    norm: Normaliser = field(default_factory=Normaliser)
    blobs: dict[str, bytes] = field(default_factory=dict)


def _probe_name(p: Probe) -> str:
    extra = f" {p.prot}" if p.kind != "exec" else ""
    if p.kind == "mprotect":
        extra += f"->{p.to}"
    return f"{p.kind} {p.target}{extra}"


def _size_limit(backend: Backend, path: str) -> dict[str, Any]:
    """Bisect the largest single write ``path`` still parses (junk blob: EBADMSG, else ENOMEM...).

    Junk (0x30 bytes) is never a valid PKCS#7, so every size the kernel accepts into its
    buffer fails with the parser's errno; the first size it refuses fails differently.
    """
    def attempt(n: int) -> str:
        return _write_all(backend, path, b"0" * n)

    small = attempt(1)
    lo, hi = 1, 1 << 16
    while attempt(hi) == small:
        if hi >= SIZE_LIMIT_CAP:
            return {"largest": f">={hi}", "errno_at_largest": small}
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attempt(mid) == small:
            lo = mid
        else:
            hi = mid
    backend.drain_audit(None)  # the step keeps only the records of the two boundary writes
    return {"largest": lo, "errno_at_largest": attempt(lo), "errno_above": attempt(hi)}


def run_step(backend: Backend, run: CaseRun, step: Step) -> dict[str, Any]:
    """Execute one step and return its normalised record (audit included)."""
    case = run.case
    path = expand(step.path, case, run.facts)
    out: dict[str, Any] = {}
    probe_pid: int | None = None
    if step.verb == "write":
        if step.blob is not None:
            text = expand(step.blob.text, case, run.facts).encode("latin-1")
            data = build_blob(step.blob, text)
            run.blobs[step.blob.label] = data
            run.norm.add_blob(step.blob.label, data)
            out["step"] = f"write {path} <{step.blob.label}>"
        else:
            data = step.data or b""
            out["step"] = f"write {path} " + json.dumps(data.decode("latin-1"))
        results = [_write_all(backend, path, data) for _ in range(step.repeat)]
        out["result"] = results[0] if step.repeat == 1 else results
    elif step.verb == "read":
        out["step"] = f"read {path}"
        try:
            data = backend.read(path)
        except OSError as exc:
            out["result"] = errno_text(exc)
        else:
            out["result"] = "0"
            label = next((lb for lb, b in run.blobs.items() if b == data and data), None)
            out["data"] = "{blob:" + label + "}" if label else render_bytes(run.norm.apply(data))
    elif step.verb == "listdir":
        out["step"] = f"listdir {path}"
        try:
            names = backend.listdir(path)
        except OSError as exc:
            out["result"] = errno_text(exc)
        else:
            out["result"] = "0"
            out["data"] = [render_audit(0, n.encode("latin-1"))[2:] for n in sorted(names)]
    elif step.verb == "stat":
        out["step"] = f"stat {path}"
        try:
            mode = backend.stat(path)
        except OSError as exc:
            out["result"] = errno_text(exc)
        else:
            out["result"] = "0"
            kind = "dir" if (mode & 0o170000) == 0o040000 else "file"
            out["data"] = f"{kind} {mode & 0o7777:04o}"
    elif step.verb == "size_limit":
        out["step"] = f"size_limit {path}"
        out["result"] = "0"
        out["data"] = _size_limit(backend, path)
    else:
        assert step.probe is not None
        out["step"] = _probe_name(step.probe)
        outcome = backend.probe(step.probe)
        out["result"] = outcome.result
        probe_pid = outcome.pid
    out["audit"] = _step_audit(backend.drain_audit(probe_pid), run, step, probe_pid)
    return out


def _step_audit(records: list[tuple[int, bytes]], run: CaseRun, step: Step, probe_pid: int | None) -> list[str]:
    """The IPE records of one step, normalised: the probe's pid and inode become placeholders."""
    subs: list[tuple[bytes, bytes]] = []
    if probe_pid is not None:
        subs.append((f" pid={probe_pid} ".encode(), b" pid={pid} "))
        ino = run.facts.get(f"{step.probe.target}.ino") if step.probe is not None else None
        if ino is not None:
            subs.append((f" ino={ino} ".encode(), b" ino={ino} "))
    audit: list[str] = []
    for rtype, raw in records:
        if rtype not in IPE_TYPES:
            continue
        body = raw
        for needle, placeholder in subs:
            body = body.replace(needle, placeholder)
        audit.append(render_audit(rtype, run.norm.apply(body)))
    return audit


def run_case(backend: Backend, case: Case, defaults: Mapping[str, bytes]) -> dict[str, Any]:
    """Run one case with its prologue/epilogue housekeeping; returns its result record."""
    facts = backend.facts()
    run = CaseRun(case, facts)
    fact_placeholders(run.norm, facts)
    if case.epoch is not None:
        run.norm.add_blob("corpus-base", housekeeping_blob("base", case.epoch))
    if case.epoch is not None and case.base:
        _housekeeping(backend, "base", case.epoch)
        _delete_inactive(backend)
    backend.drain_audit(None)
    steps: list[dict[str, Any]] = []
    error = ""
    try:
        for step in case.steps:
            steps.append(run_step(backend, run, step))
    except Exception as exc:  # a broken step must not stop the other cases
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if case.epoch is not None:
            try:
                _housekeeping(backend, "after", case.epoch)
            except OSError as exc:
                error = error or f"housekeeping failed: {errno_text(exc)}"
        for key, value in defaults.items():
            try:
                if backend.read(key) != value:
                    backend.write(key, value)
            except OSError:
                pass
        _delete_inactive(backend)
        backend.drain_audit(None)
    record: dict[str, Any] = {"group": case.group, "steps": steps}
    if error:
        record["error"] = error
    return record


def run_cases(backend: Backend, cases: Sequence[Case],
              progress: Callable[[str], None] | None = None, *, finish: bool = True) -> dict[str, Any]:
    """Run ``cases`` in order on one backend; returns ``{case id: record}``.

    With ``finish``, an allow-all ``corpus-end-<max+1>`` policy stays active after the last
    epoch case, so later guest tests run unhindered (they must activate versions >=
    ``<max+1>.0.0``).
    """
    defaults = {"enforce": backend.read("enforce"), "success_audit": backend.read("success_audit")}
    results: dict[str, Any] = {}
    for case in cases:
        if progress is not None:
            progress(case.id)
        results[case.id] = run_case(backend, case, defaults)
    if finish and any(c.epoch is not None for c in cases):
        _housekeeping(backend, "end", final_epoch(cases))
        _delete_inactive(backend)
        backend.drain_audit(None)
    return results


# --------------------------------------------------------------------------- comparison


def compare(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a truth record and an observed one (empty: equal)."""
    diffs: list[str] = []
    if "error" in actual:
        diffs.append(f"run error: {actual['error']}")
    exp_steps = expected.get("steps", [])
    act_steps = actual.get("steps", [])
    if len(exp_steps) != len(act_steps):
        diffs.append(f"{len(act_steps)} steps ran, truth has {len(exp_steps)}")
    for i, (e, a) in enumerate(zip(exp_steps, act_steps, strict=False), 1):
        for key in sorted(set(e) | set(a)):
            if e.get(key) != a.get(key):
                diffs.append(
                    f"step {i} ({e.get('step')}): {key}\n"
                    f"    truth:    {json.dumps(e.get(key), ensure_ascii=False)}\n"
                    f"    observed: {json.dumps(a.get(key), ensure_ascii=False)}"
                )
    return diffs


def dump_json(data: Mapping[str, Any]) -> str:
    """The diff-friendly on-disk form: sorted keys, indent=1, trailing newline."""
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def truth_path(series: str) -> Path:
    return TRUTH_DIR / f"{series}.json"


def load_truth(series: str) -> dict[str, Any]:
    """The recorded truth of one series: ``_meta``, ``_facts`` and one key per case id."""
    data: dict[str, Any] = json.loads(truth_path(series).read_text())
    return data


def truth_from_results(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a guest's ``corpus-results.json`` into the truth file's layout."""
    meta = {k: v for k, v in doc["meta"].items() if k != "seconds"}
    return {"_meta": meta, "_facts": dict(doc["facts"]), **doc["cases"]}


def boot_corpus(series: str, outdir: Path, timeout: float = 900.0) -> Path:
    """Host side: boot ``series`` in the lab and run only the corpus; returns the results file.

    Raises :class:`tests.lab.LabError` (with the guest's log tail) when the kernel cannot be
    obtained or booted, or the guest wrote no results.
    """
    import sys

    from tests.lab import GUEST_OUT, LabError, vm

    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / RESULTS_FILE).unlink(missing_ok=True)
    result = vm.boot(series, [sys.executable, "-m", "tests.lab.corpus", "--out", GUEST_OUT],
                     timeout=timeout, outdir=outdir, cwd=REPO)
    target = outdir / RESULTS_FILE
    if result.returncode != 0 or not target.is_file():
        raise LabError(f"the corpus run on {result.release} failed (rc={result.returncode})\n{result.tail()}")
    return target


# --------------------------------------------------------------------------- guest entry


def signal_text(status: int) -> str:
    try:
        return "signal:" + signal.Signals(status).name
    except ValueError:
        return f"signal:{status}"


def preload() -> None:
    """Import and load everything a case can need before any policy is active.

    Once a case's policy is active, a lazy import that maps a shared object could itself be
    evaluated (and, on a deny, fail): so signers, asn1crypto, PEM and JSON are touched now.
    """
    for sign in ("rsa", "ec", "untrusted"):
        for hash_ in ("sha1", "sha256"):
            build_blob(BlobSpec("preload", "x", sign, hash_, ("pem", "no_certs")), b"preload text")
    housekeeping_blob("base", 1)
    dump_json({"preload": render_bytes(b"\xff")})


def run_kernel(out_dir: Path) -> Path:
    """Guest entry point: run every case on the real kernel, write ``corpus-results.json``.

    The file holds ``{"meta": {...}, "facts": {...}, "cases": {id: record}}``; the host side
    (tests/lab/test_corpus_kernel.py) compares it with the recorded truth.
    """
    import os
    import platform
    import sys
    import time

    from tests.lab import GUEST_TMP
    from tests.lab.kernel_backend import KernelBackend

    out_dir.mkdir(parents=True, exist_ok=True)
    cases = load_cases()
    started = time.monotonic()
    preload()
    backend = KernelBackend.open(Path(os.environ.get("IPED_CORPUS_WORKDIR", GUEST_TMP)))
    try:
        results = run_cases(backend, cases, lambda cid: print(f"corpus: {cid}", file=sys.stderr, flush=True))
    finally:
        backend.close()
    seconds = round(time.monotonic() - started, 1)
    doc = {
        "meta": {"release": platform.release(), "abi": backend.abi, "cases": len(cases),
                 "seconds": seconds, "audit_sync": backend.sync_mode, "fixtures": backend.fixture_notes},
        "facts": dict(backend.facts()),
        "cases": results,
    }
    target = out_dir / RESULTS_FILE
    target.write_text(dump_json(doc))
    print(f"corpus: {len(cases)} cases in {seconds} s -> {target}", file=sys.stderr)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.lab.corpus --out DIR``: :func:`run_kernel` alone (guest side)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.lab.corpus")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    run_kernel(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
