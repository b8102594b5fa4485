"""``python -m tests.lab``: drive the IPE lab by hand (the tests use the same functions).

    fetch                                   download/refresh both kernels, print versions
    config  --kernel 7 [REGEX]              print the kernel's config options matching REGEX
    boot    --kernel 6.12 [--timeout S] -- CMD...   run CMD in the guest, print its log
    run     --kernel 7 --out DIR            run the whole guest side (corpus + tests/lab_guest)
    gen-keys DIR                            create fresh TEST key pairs (one-off; see keys.py)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from tests.lab import GUEST_OUT, SERIES, LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download both kernels (cached) and print their versions")
    cfg = sub.add_parser("config", help="print kernel config options")
    cfg.add_argument("--kernel", choices=SERIES, required=True)
    cfg.add_argument("pattern", nargs="?", default=r"SECURITY_IPE|IPE_|FS_VERITY|DM_VERITY|"
                     r"INTEGRITY_PLATFORM_KEYRING|SECONDARY_TRUSTED_KEYRING|^CONFIG_LSM$")
    boot = sub.add_parser("boot", help="boot a kernel and run a command in the guest")
    boot.add_argument("--kernel", choices=SERIES, required=True)
    boot.add_argument("--timeout", type=float, default=600.0)
    boot.add_argument("--out", type=Path, help="results dir (default: a new temp dir); "
                      f"the guest sees it at {GUEST_OUT}")
    boot.add_argument("--append", default="", help="extra kernel command line")
    boot.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD... (run from the current dir)")
    runp = sub.add_parser("run", help="boot a kernel and run python -m tests.lab.guest")
    runp.add_argument("--kernel", choices=SERIES, required=True)
    runp.add_argument("--out", type=Path, required=True)
    runp.add_argument("--timeout", type=float, default=900.0)
    gen = sub.add_parser("gen-keys", help="generate new TEST key pairs into DIR")
    gen.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except LabError as exc:
        print(f"tests.lab: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "fetch":
        from tests.lab.kernels import get_kernel

        for series in SERIES:
            k = get_kernel(series)
            print(f"{series:5} {k.release:28} {k.version:22} {' '.join(k.packages)}\n      {k.root}")
        return 0
    if args.cmd == "config":
        from tests.lab.kernels import get_kernel

        config = get_kernel(args.kernel).config
        for key in sorted(config):
            if re.search(args.pattern, key):
                print(f"{key}={config[key]}")
        return 0
    if args.cmd == "gen-keys":
        from tests.lab.keys import generate

        generate(args.dir)
        return 0
    from tests.lab.vm import boot, run_guest

    if args.cmd == "boot":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            raise LabError("boot needs a command: python -m tests.lab boot --kernel 7 -- CMD...")
        result = boot(args.kernel, command, timeout=args.timeout, outdir=args.out, extra_cmdline=args.append)
    else:
        result = run_guest(args.kernel, args.out, timeout=args.timeout)
    sys.stdout.write(result.guest_log)
    print(f"[tests.lab] {result.release}: exit {result.returncode} after {result.seconds:.0f} s; "
          f"results and console.log in {result.outdir}", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
