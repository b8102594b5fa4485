"""Guest side of the corpus: run every case on the running kernel (``python -m tests.lab.corpus.in_guest``)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.lab import GUEST_TMP
from tests.lab.corpus.blobs import build_blob, housekeeping_blob
from tests.lab.corpus.cases import BlobSpec, load_cases
from tests.lab.corpus.executor import run_cases
from tests.lab.corpus.normalise import render_bytes
from tests.lab.corpus.truth import RESULTS_FILE, dump_json
from tests.lab.kernel_backend import KernelBackend


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
    """``python -m tests.lab.corpus.in_guest --out DIR``: :func:`run_kernel` alone (guest side)."""
    parser = argparse.ArgumentParser(prog="python -m tests.lab.corpus.in_guest")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    run_kernel(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
