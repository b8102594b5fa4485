"""One reconcile: scan declared state, read actual state, plan, execute, record.

This is the business logic the loop calls; it owns no file descriptors. Every call starts from
the kernel (or emulator) as it is now and the files as they are now -- never from a record.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from iped.backend import Backend
from iped.daemon.apply import ApplyResult, Outcome, execute
from iped.daemon.log import Reporter
from iped.daemon.plan import Plan, drift, make_plan
from iped.daemon.settings import PolicySettings, Settings
from iped.daemon.state import (
    ActualState,
    DeclaredPolicy,
    DeclaredState,
    DeclError,
    LoadedPolicy,
    load_policy_file,
    read_actual,
    scan_declared,
)
from iped.daemon.store import Store
from iped.policyfile import SigningMaterial

STATUS_SCHEMA_VERSION = 1


def _loaded_dict(p: LoadedPolicy | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"name": p.name, "version": str(p.version), "text_digest": p.text_digest, "blob_digest": p.blob_digest}


def load_signing(pol: PolicySettings, extra_anchors: tuple[bytes, ...] = ()) -> SigningMaterial | DeclError:
    """Read anchors and the signing key; the signing cert is an anchor too (we trust what we sign)."""
    try:
        anchors = [p.read_bytes() for p in pol.trust_anchors]
        key = pol.signing_key.read_bytes() if pol.signing_key else None
        cert = pol.signing_cert.read_bytes() if pol.signing_cert else None
    except OSError as e:
        return DeclError(e.filename or "?", None, e.errno or errno.EIO, f"cannot read key material: {e.strerror}")
    if (key is None) != (cert is None):
        return DeclError(str(pol.signing_key or pol.signing_cert), None, errno.EINVAL,
                         "signing_key and signing_cert must be configured together")
    if cert is not None:
        anchors.append(cert)
    return SigningMaterial(tuple(anchors) + extra_anchors, key, cert)


class Reconciler:
    """Declared -> actual for one backend; keeps counters and the last results for status."""

    def __init__(self, settings: Settings, backend: Backend, store: Store, reporter: Reporter,
                 extra_anchors: tuple[bytes, ...] = ()) -> None:
        self.settings = settings
        self.backend = backend
        self.store = store
        self.reporter = reporter
        self.extra_anchors = extra_anchors
        self.declared: DeclaredState | None = None
        self.counters: dict[str, int] = {"reconciles": 0, **{str(o): 0 for o in Outcome}}
        self.last: dict[str, Any] | None = None
        self.config_error: list[str] = []
        # (path, content sha256, key material) -> result: unchanged files are not re-signed or
        # re-verified on every scan; any change to the bytes or the keys misses the cache.
        self._file_cache: dict[tuple[object, ...], DeclaredPolicy | DeclError] = {}

    # -- declared state ---------------------------------------------------------------
    def scan(self) -> DeclaredState:
        pol = self.settings.policies
        signing = load_signing(pol, self.extra_anchors)
        base = DeclaredState((), pol.active, pol.enforce, pol.success_audit, pol.protect)
        if isinstance(signing, DeclError):
            return replace(base, errors=(signing,))
        fresh: dict[tuple[object, ...], DeclaredPolicy | DeclError] = {}

        def loader(path: Path) -> DeclaredPolicy | DeclError:
            try:
                raw = path.read_bytes()
            except OSError:
                return load_policy_file(path, signing)
            key = (str(path), hashlib.sha256(raw).digest(), signing)
            got = self._file_cache.get(key)
            if got is None:  # the result is computed from exactly the bytes the key names
                got = load_policy_file(path, signing, raw)
            fresh[key] = got
            return got

        decl = scan_declared(pol.dir, active=pol.active, enforce=pol.enforce, success_audit=pol.success_audit,
                             signing=signing, protect=pol.protect, loader=loader)
        self._file_cache = fresh
        if self.config_error:
            errs = tuple(DeclError(str(self.settings.path), None, errno.EINVAL, e) for e in self.config_error)
            decl = replace(decl, errors=errs + decl.errors)
        return decl

    def compute(self) -> tuple[DeclaredState, ActualState, Plan]:
        decl = self.scan()
        actual = read_actual(self.backend)
        return decl, actual, make_plan(decl, actual)

    # -- reconcile --------------------------------------------------------------------
    def reconcile(self, trigger: str, record_unchanged: bool = True) -> dict[str, Any]:
        """Make the kernel match the files; returns the plan record (also stored unless noise)."""
        t0 = time.monotonic()
        decl, before, plan = self.compute()
        self.declared = decl
        result: ApplyResult = execute(plan, self.backend, self.reporter)
        after = read_actual(self.backend) if result.done else before
        for step in result.done:
            if step.kind in ("load", "update") and step.text_digest:
                p = decl.get(step.name or "")
                if p is not None:
                    self.store.save_text(p.text_digest, p.text)
        if before.active is not None and decl.get(before.active.name) is not None:
            p = decl.get(before.active.name)
            if p is not None and p.text_digest == before.active.text_digest:
                self.store.save_text(p.text_digest, p.text)
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "trigger": trigger,
            "outcome": str(result.outcome),
            "backend": self.backend.kind,
            "steps": [s.as_dict() for s in plan.steps],
            "done": len(result.done),
            "failure": result.failure.as_dict() if result.failure else None,
            "errors": [e.as_dict() for e in plan.errors],
            "active_before": _loaded_dict(before.active),
            "active_after": _loaded_dict(after.active),
            "declared": [{"name": p.name, "version": str(p.version), "source": str(p.source),
                          "text_digest": p.text_digest, "blob_digest": p.blob_digest, "signer": p.signer}
                         for p in decl.policies],
            "duration_ms": round((time.monotonic() - t0) * 1000, 3),
        }
        self.counters["reconciles"] += 1
        self.counters[str(result.outcome)] += 1
        if result.outcome != Outcome.UNCHANGED or record_unchanged:
            try:
                record["seq"] = self.store.record(record)
            except OSError as e:
                self.reporter.log("error", f"cannot record plan in {self.store.plans}: {e}")
        self.last = record
        return record

    # -- status -----------------------------------------------------------------------
    def status(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        actual = read_actual(self.backend)
        decl = self.declared if self.declared is not None else self.scan()
        sources = {p.name: str(p.source) for p in decl.policies}
        lines = drift(decl, actual)
        return {
            "schema_version": STATUS_SCHEMA_VERSION,
            "backend": {"kind": self.backend.kind, "reason": self.backend.reason},
            "enforce": actual.enforce,
            "success_audit": actual.success_audit,
            "active": _loaded_dict(actual.active),
            "policies": [
                {"name": p.name, "version": str(p.version), "active": p.active, "text_digest": p.text_digest,
                 "blob_digest": p.blob_digest, "source": sources.get(p.name),
                 "declared": decl.get(p.name) is not None}
                for p in actual.policies
            ],
            "declared": {
                "dir": str(self.settings.policies.dir),
                "active": decl.active,
                "enforce": decl.enforce,
                "success_audit": decl.success_audit,
                "policies": [{"name": p.name, "version": str(p.version), "source": str(p.source),
                              "text_digest": p.text_digest} for p in decl.policies],
                "errors": [e.as_dict() for e in decl.errors],
            },
            "in_sync": not lines,
            "drift": lines,
            "last_plans": self.store.recent(5),
            "counters": dict(self.counters),
            "config": str(self.settings.path) if self.settings.path else None,
            "pid": os.getpid(),
            **(extra or {}),
        }
