"""One reconcile: scan declared state, read actual state, plan, execute, record.

This is the business logic the loop calls; it owns no file descriptors. Every call starts from
the kernel (or emulator) as it is now and the files as they are now -- never from a record.
"""

from __future__ import annotations

import errno
import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from iped.backend import Backend
from iped.daemon.actual import ActualState, LoadedPolicy, read_actual
from iped.daemon.apply import ApplyResult, StepFailure, StepObserver, execute, state_after
from iped.daemon.bootcopy import BootCopy
from iped.daemon.declared import DeclaredPolicy, DeclaredState, DeclError, fs_error
from iped.daemon.dropin import read_policy_file
from iped.daemon.log import Reporter
from iped.daemon.plan import Plan, Step, make_plan
from iped.daemon.planlog import PlanLog
from iped.daemon.scan import declare, load_policy_file
from iped.errnos import errno_name
from iped.outcome import RECONCILE_OUTCOMES, Outcome
from iped.policyfile import SigningMaterial
from iped.settings import PolicySettings, Settings


def loaded_dict(p: LoadedPolicy | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"name": p.name, "version": str(p.version), "text_digest": p.text_digest, "blob_digest": p.blob_digest}


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """What one reconcile did: the plan, how far it got, the active policy before and after.

    :meth:`as_dict` is the JSON form: the record in the state dir, the reply of ``reload``, the
    output of ``apply --once --json``.
    """

    time: str
    trigger: str
    outcome: Outcome
    backend: str
    steps: tuple[Step, ...]
    done: int
    failure: StepFailure | None
    errors: tuple[DeclError, ...]
    active_before: LoadedPolicy | None
    active_after: LoadedPolicy | None
    declared: tuple[DeclaredPolicy, ...]
    duration_ms: float
    seq: int | None = None  # set once the plan log kept it

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": self.time, "trigger": self.trigger, "outcome": str(self.outcome), "backend": self.backend,
            "steps": [s.as_dict() for s in self.steps], "done": self.done,
            "failure": self.failure.as_dict() if self.failure else None,
            "errors": [e.as_dict() for e in self.errors],
            "active_before": loaded_dict(self.active_before), "active_after": loaded_dict(self.active_after),
            "declared": [{"name": p.name, "version": str(p.version), "source": str(p.source),
                          "text_digest": p.text_digest, "blob_digest": p.blob_digest, "signer": p.signer}
                         for p in self.declared],
            "duration_ms": self.duration_ms,
        }
        if self.seq is not None:
            out["seq"] = self.seq
        return out


@dataclass(frozen=True, slots=True)
class FailedRead:
    """A reconcile that could not start: reading securityfs itself failed (securityfs gone?)."""

    trigger: str
    errno: int
    message: str
    outcome: Outcome = Outcome.FAILED
    active_after: LoadedPolicy | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": str(self.outcome), "trigger": self.trigger,
                "failure": {"errno": self.errno, "message": self.message}}


#: the signer a blob the kernel already holds is recorded with (iped did not parse its certificate)
KERNEL_VERIFIED = "(verified by the kernel, which holds this exact blob)"


def held_blobs(backend: Backend) -> dict[bytes, str]:
    """The PKCS#7 blobs the kernel holds (``policies/NAME/pkcs7``), by content: {blob: NAME}.
    Empty when securityfs cannot be read: every file is then verified here."""
    out: dict[bytes, str] = {}
    try:
        names = backend.listdir("policies")
    except OSError:
        return out
    for name in names:
        try:
            out[backend.read(f"policies/{name}/pkcs7")] = name
        except OSError:
            continue  # a boot policy (ENOENT), or gone while we looked
    return out


def held_by_kernel(backend: Backend, held: dict[bytes, str], path: Path, raw: bytes) -> DeclaredPolicy | None:
    """The declared policy of a signed file whose bytes the kernel already holds, without
    verifying the signature here: the kernel verified exactly these bytes against its keyrings
    when it took them (``policies/NAME/pkcs7`` reads back the blob as written), so importing
    the crypto stack would only repeat its verdict. The name, version and text are the
    kernel's read-back (``policies/NAME/policy``: the signed content), parsed here as any file
    is. None -- verify as usual -- when no policy holds these bytes, the text cannot be read
    or does not parse, or it names another policy than its directory."""
    from iped.policyfile import CheckedPolicy, SigningMaterial, check_policy

    name = held.get(raw)
    if name is None:
        return None
    try:
        text = backend.read(f"policies/{name}/policy")
    except OSError:
        return None
    got = check_policy(text, SigningMaterial(None, None, None))
    if not isinstance(got, CheckedPolicy) or got.signed or got.name != name:
        return None
    return DeclaredPolicy(got.name, got.version, got.text, raw, path, KERNEL_VERIFIED)


def load_signing(pol: PolicySettings, extra_anchors: tuple[bytes, ...] = ()) -> SigningMaterial | DeclError:
    """Read anchors and the signing key (:mod:`iped.trustpath`'s rule: the key private, all of
    them changeable by root or iped's user only); the signing cert is an anchor too (we trust what
    we sign)."""
    from iped.trustpath import UntrustedPathError, read_private_key, read_trusted

    try:  # each under the owner/mode rule: whoever could change them could sign in our name
        anchors = [read_trusted(p, "a trust anchor") for p in pol.trust_anchors]
        key = read_private_key(pol.signing_key) if pol.signing_key else None
        cert = read_trusted(pol.signing_cert, "the signing certificate") if pol.signing_cert else None
    except UntrustedPathError as e:
        return DeclError(e.filename, None, errno.EPERM, f"{e.why} (hint: {e.fix})", plain=True)
    except OSError as e:
        return fs_error(e.filename or "?", e, "cannot read key material")
    if (key is None) != (cert is None):
        return DeclError(str(pol.signing_key or pol.signing_cert), None, errno.EINVAL,
                         "signing_key and signing_cert must be configured together", plain=True)
    if cert is not None:
        anchors.append(cert)
    return SigningMaterial(tuple(anchors) + extra_anchors, key, cert)


class Reconciler:
    """Declared -> actual for one backend; keeps counters and the last results for status."""

    def __init__(self, settings: Settings, backend: Backend, plan_log: PlanLog, reporter: Reporter,
                 extra_anchors: tuple[bytes, ...] = ()) -> None:
        self.settings = settings
        self.backend = backend
        self.plan_log = plan_log
        self.reporter = reporter
        self.extra_anchors = extra_anchors
        self.declared: DeclaredState | None = None
        self.counters: dict[str, int] = {"reconciles": 0, **{str(o): 0 for o in RECONCILE_OUTCOMES}}
        self.last: PlanRecord | FailedRead | None = None
        #: the kernel's state after the last reconcile (None: never reconciled, or securityfs unreadable)
        self.after: ActualState | None = None
        self.config_error: list[str] = []
        #: the boot copy after the last reconcile ([boot] keep_copy; None: off or never synced)
        self.boot_copy: BootCopy | None = None
        self.initramfs_copy: BootCopy | None = None
        #: rolled-forward files the drop-in dir superseded at the last scan (removed by reconcile)
        self.superseded: tuple[Path, ...] = ()
        #: told of every step of a plan done (None in iped itself; the tests' entry point sets it)
        self.after_step: StepObserver | None = None
        # (path, content sha256, key material) -> result: unchanged files are not re-signed or
        # re-verified on every scan; any change to the bytes or the keys misses the cache.
        self._file_cache: dict[tuple[object, ...], DeclaredPolicy | DeclError] = {}
        # the history's problems (a corrupt chain.json rebuilt) are log lines: those found while
        # the state dir was prepared, and every later one as it is found
        for message in plan_log.problems:
            reporter.log("error", message)
        plan_log.on_problem = lambda message: reporter.log("error", message)

    # -- declared state ---------------------------------------------------------------
    def scan(self) -> DeclaredState:
        pol = self.settings.policies
        signing = load_signing(pol, self.extra_anchors)
        base = DeclaredState((), pol.active, pol.enforce, pol.success_audit, pol.protect)
        if isinstance(signing, DeclError):
            return replace(base, errors=(signing,))
        fresh: dict[tuple[object, ...], DeclaredPolicy | DeclError] = {}
        held: dict[bytes, str] | None = None  # the kernel's blobs, read at the first signed file
        # a daemon that signs (--dev, a signing_key) with its IPE state in this process (the
        # emulator): the crypto stack is its floor anyway, and checking here keeps each reload
        # free of a child (and the emulator's verification with it: it verifies in this process
        # once the stack is loaded)
        signs_here = self.backend.capabilities.state_in_process and signing.key_pem is not None

        def loader(path: Path) -> DeclaredPolicy | DeclError:
            nonlocal held
            raw = read_policy_file(path)
            if isinstance(raw, DeclError):
                return raw
            key = (str(path), hashlib.sha256(raw).digest(), signing)
            got = self._file_cache.get(key)
            if got is None and raw[:1] == b"\x30":  # (DER: a signed blob; see held_by_kernel)
                if held is None:
                    held = held_blobs(self.backend)
                got = held_by_kernel(self.backend, held, path, raw)
            if got is None:  # the result is computed from exactly the bytes the key names
                got = load_policy_file(path, signing, raw, in_process=signs_here)
            fresh[key] = got
            return got

        overlaid = declare(pol, self.plan_log.rolled_forward, loader)
        decl, self.superseded = overlaid.state, overlaid.superseded
        self._file_cache = fresh
        if self.config_error:
            errs = tuple(DeclError(str(self.settings.path), None, errno.EINVAL, e, plain=True)
                         for e in self.config_error)
            decl = replace(decl, errors=errs + decl.errors)
        return decl

    def compute(self) -> tuple[DeclaredState, ActualState, Plan]:
        decl = self.scan()
        actual = read_actual(self.backend)
        return decl, actual, make_plan(decl, actual)

    # -- reconcile --------------------------------------------------------------------
    def reconcile(self, trigger: str, record_unchanged: bool = True,
                  computed: tuple[DeclaredState, ActualState, Plan] | None = None) -> PlanRecord:
        """Make the kernel match the files; returns the plan record (also stored unless noise).

        securityfs is read once, before planning: every step is read back as it runs, so the
        state after a plan that ran to its end follows from the steps. Only a failed plan (whose
        failing write may have half-happened) is read again. ``computed``: a :meth:`compute`
        result the caller just made (not scanned again).
        """
        t0 = time.monotonic()
        decl, before, plan = computed if computed is not None else self.compute()
        self.declared = decl
        result: ApplyResult = execute(plan, self.backend, self.reporter, self.after_step)
        failed = result.outcome == Outcome.FAILED
        after = read_actual(self.backend) if failed else state_after(before, result.done)
        record = PlanRecord(
            time=time.strftime("%Y-%m-%dT%H:%M:%S%z"), trigger=trigger, outcome=result.outcome,
            backend=self.backend.kind, steps=plan.steps, done=len(result.done), failure=result.failure,
            errors=plan.errors, active_before=before.active, active_after=after.active, declared=decl.policies,
            duration_ms=round((time.monotonic() - t0) * 1000, 3))
        self.counters["reconciles"] += 1
        self.counters[str(result.outcome)] += 1
        if result.outcome != Outcome.REJECTED:  # a rejected plan changes nothing, on disk either
            self._remove_superseded()
        try:  # the kernel's outcome stands whatever happens to the records of it
            # one writer at a time: another 'apply --once' pruning texts between this one's
            # save_text and extend_chain would remove the text just saved
            with self.plan_log.locked():
                new_texts = self._keep_history(decl, before, result.done)
                if result.outcome != Outcome.UNCHANGED or record_unchanged:
                    record = replace(record, seq=self.plan_log.record(record.as_dict()))
                if new_texts:
                    self.plan_log.prune_texts()
        except OSError as e:
            self.reporter.log("error", f"state_dir {self.plan_log.root}: {errno_name(e.errno or errno.EIO)}: "
                                       f"{e.strerror or e}: plan records and rollback history are not kept")
        self.last, self.after = record, after
        if result.outcome in (Outcome.APPLIED, Outcome.UNCHANGED):
            if self.settings.boot.keep_copy:
                self.boot_copy = self._sync_copy(after, self.settings.boot.copy_dir, "boot copy", self.boot_copy)
            if self.settings.boot.initramfs:
                self.initramfs_copy = self._sync_copy(after, self.settings.boot.initramfs_dir, "initramfs copy",
                                                      self.initramfs_copy)
        return record

    def _sync_copy(self, after: ActualState, copy_dir: Path, what: str, before: BootCopy | None) -> BootCopy:
        """PID 1's copy, or the initramfs copy, follows the kernel's active blob (never a refused
        one: only after a plan that ran to its end, and only the blob the kernel holds)."""
        from iped.daemon.bootcopy import sync

        bc = sync(self.backend, after, self.settings.policies.active, copy_dir)
        if bc.current:
            self._record_deployed(bc)
        if bc.state == "written":
            self.reporter.log("notice", f"{what} written: {bc.message}", "boot_copy_written")
        elif bc.state == "failed" and (before is None or before.message != bc.message):
            self.reporter.log("error", f"{what}: {bc.message}", "boot_copy_failed")
        for name in bc.removed:
            self.reporter.log("notice", f"{what}: removed {copy_dir / name} (it would be loaded at boot too)",
                              "boot_copy_written")
        return bc

    def _record_deployed(self, bc: BootCopy) -> None:
        """state_dir/boot-copy.json: the version iped-boot.service must find active at the next boot
        (an older blob put back in its place is reported as not in force)."""
        import json

        from iped.daemon.bootrecord import DEPLOYED_FILE
        from iped.fsutil import write_atomically

        text = json.dumps({"name": bc.name, "version": bc.version, "blob_digest": bc.blob_digest}, sort_keys=True)
        path = self.settings.daemon.state_dir / DEPLOYED_FILE
        try:
            if not path.is_file() or path.read_text() != text:
                write_atomically(path, text, 0o644, sync_dir=True, exact_mode=True)
        except OSError as e:
            self.reporter.log("warning", f"{path}: {errno_name(e.errno or errno.EIO)}: {e.strerror or e}: the "
                                         "version of the boot copy is not recorded", "boot_copy_failed")

    def _remove_superseded(self) -> None:
        """Rolled-forward files the drop-in dir has caught up with: the admin's file now rules."""
        for path in self.superseded:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                self.reporter.log("warning", f"cannot remove superseded {path}: {e.strerror or e}")
                continue
            self.reporter.log("notice", f"rolled-forward {path} superseded by the drop-in dir "
                                        f"{self.settings.policies.dir}: removed", "rolled_forward_superseded")
        self.superseded = ()

    def _keep_history(self, decl: DeclaredState, before: ActualState, done: tuple[Step, ...]) -> bool:
        """Keep the texts that are (or were, before this reconcile) deployed and extend the
        rollback chain with them; True if a text was new."""
        deployed: list[DeclaredPolicy] = []
        if before.active is not None:  # the content active at start, when its file still says it
            p = decl.get(before.active.name)
            if p is not None and p.text_digest == before.active.text_digest:
                deployed.append(p)
        for step in done:
            p = decl.get(step.name or "") if step.kind in ("load", "update") and step.text_digest else None
            if p is not None:
                deployed.append(p)
        new = [self.plan_log.save_text(p.text_digest, p.text) for p in deployed]
        self.plan_log.extend_chain([(p.name, p.text_digest) for p in deployed])
        return any(new)
