"""Record the corpus truth from real kernels: ``python -m tests.lab.record_truth`` (from the checkout).

Explicit on purpose (never run by CI): the truth is what the lab's kernels did, and changing
it is a reviewed commit.  By default it boots every series once (corpus only, a few minutes
each) and rewrites ``tests/corpus/truth/<series>.json``; ``--from DIR`` takes an existing
``corpus-results.json`` (e.g. the out dir of a lab pytest session) instead of booting.
The summary lists the cases whose truth changed, so the diff can be reviewed case by case.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.lab import GUEST_OUT, SERIES, LabError, vm
from tests.lab.corpus.cases import REPO, load_cases
from tests.lab.corpus.truth import RESULTS_FILE, dump_json, truth_from_results, truth_path


def boot_corpus(series: str, outdir: Path, timeout: float = 900.0) -> Path:
    """Host side: boot ``series`` in the lab and run only the corpus; returns the results file.

    Raises :class:`tests.lab.LabError` (with the guest's log tail) when the kernel cannot be
    obtained or booted, or the guest wrote no results.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / RESULTS_FILE).unlink(missing_ok=True)
    result = vm.boot(series, [sys.executable, "-m", "tests.lab.corpus.in_guest", "--out", GUEST_OUT],
                     timeout=timeout, outdir=outdir, cwd=REPO)
    target = outdir / RESULTS_FILE
    if result.returncode != 0 or not target.is_file():
        raise LabError(f"the corpus run on {result.release} failed (rc={result.returncode})\n{result.tail()}")
    return target


def record(series: str, results: Path) -> list[str]:
    """Write the truth of ``series`` from ``results``; returns the ids whose record changed."""
    new = truth_from_results(json.loads(results.read_text()), load_cases())
    if new["_meta"].get("abi") != series:
        raise SystemExit(f"{results} was recorded on {new['_meta'].get('release')}, not a {series} kernel")
    path = truth_path(series)
    old = json.loads(path.read_text()) if path.exists() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_json(new))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", action="append", choices=SERIES, help="series to record (default: all)")
    parser.add_argument("--from", dest="source", type=Path,
                        help=f"directory holding {RESULTS_FILE} (only with one --kernel)")
    args = parser.parse_args(argv)
    series_list: list[str] = args.kernel or list(SERIES)
    if args.source is not None and len(series_list) != 1:
        parser.error("--from needs exactly one --kernel")
    for series in series_list:
        if args.source is not None:
            results = args.source / RESULTS_FILE
        else:
            results = boot_corpus(series, Path(tempfile.mkdtemp(prefix=f"iped-corpus-{series}-")))
        changed = record(series, results)
        print(f"{series}: {truth_path(series)} written from {results}; {len(changed)} entries changed",
              file=sys.stderr)
        for case_id in changed[:40]:
            print(f"  {case_id}", file=sys.stderr)
        if len(changed) > 40:
            print(f"  ... and {len(changed) - 40} more (git diff {truth_path(series)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
