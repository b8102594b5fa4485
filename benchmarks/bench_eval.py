"""Decisions per second of the emulator's evaluator: 10-rule vs ~700 fs-verity-digest-rule policy.

What is measured (one core, one process, success_audit off, every decision an ALLOW so no audit
record is built):

* ``linear``    — the kernel's algorithm (eval.c ipe_evaluate_event's walk) in Python: the
                  named baseline, :func:`iped.emulator.eval.evaluate_linear`.
* ``indexed``   — the compiled policy without the decision cache
                  (:meth:`CompiledPolicy.decide_uncached`): digest rules looked up by
                  ``(alg, digest)``, the rest walked in file order.
* ``decide``    — the pure decision function used by the emulator
                  (:func:`iped.emulator.compiled.evaluate`): compiled policy plus the exact
                  decision cache keyed on ``(op, facts)``.
* ``evaluate``  — the full public API ``Emulator.evaluate(op, hook, file, task)`` (context
                  building, enforcement, no record because the outcome is ALLOW).

Each policy is evaluated for files spread over all of its digests (the 700-rule policy matches
rules from the first to the last), so the linear baseline pays its real average cost.
Run: ``.venv/bin/python benchmarks/bench_eval.py [--seconds 0.2] [--rounds 5]``.

Measured 2026-11-29 on the shared 2-core AMD EPYC development VM, Python 3.11, median of five
runs at a time the linear walk made ~630k/s: full API 1.8 M/s (10 rules) and 1.8 M/s (700 rules),
700/10 ratio 0.97 (indexed 1.00, decide 0.83); the linear walk's ratio is ~32. Under load from
other jobs every figure drops up to 3x, the ratios do not.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from iped.emulator.compiled import compile_policy, evaluate
from iped.emulator.eval import build_eval_ctx, evaluate_linear, property_evaluators
from iped.emulator.ipe import Emulator
from iped.emulator.policy import activate_boot_policy
from iped.emulator.policy_parser import Op, parse_policy
from iped.emulator.types import FileInfo, Hook, KernelConfig, Policy, Task

#: decisions per call of a workload, the same for both policies
EVENTS = 700


def _policy(n_digests: int, seed: int) -> tuple[bytes, list[bytes]]:
    rng = random.Random(seed)
    digests = [rng.randbytes(32) for _ in range(n_digests)]
    lines = [
        "policy_name=bench policy_version=0.0.1",
        "DEFAULT action=DENY",
        "op=EXECUTE boot_verified=TRUE action=ALLOW",
        "op=EXECUTE dmverity_signature=TRUE action=ALLOW",
        *[f"op=EXECUTE fsverity_digest=sha256:{d.hex()} action=ALLOW" for d in digests],
    ]
    return ("\n".join(lines) + "\n").encode(), digests


def _rate(fn: Callable[[], object], n_calls: int, seconds: float) -> float:
    """Calls per second of one run of about ``seconds``."""
    loops = 0
    start = time.perf_counter()
    while True:
        fn()
        loops += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return loops * n_calls / elapsed


def workloads(n_digests: int) -> dict[str, Callable[[], None]]:
    """One callable per layer, each making ``EVENTS`` decisions."""
    text, digests = _policy(n_digests, n_digests)
    parsed = parse_policy(text)
    config = KernelConfig()
    evaluators = property_evaluators(config)
    compiled = compile_policy(parsed, config)
    # The same number of events for both policies, cycling over the policy's digests.
    files = [
        FileInfo(f"/usr/bin/p{i}", "vda1", i, fsverity_digest=("sha256", digests[i % len(digests)]))
        for i in range(EVENTS)
    ]
    ctxs = [build_eval_ctx(f, Op.EXECUTE, Hook.BPRM_CHECK) for f in files]

    def linear() -> None:
        for c in ctxs:
            evaluate_linear(parsed, c, evaluators)

    decide_uncached = compiled.decide_uncached
    facts = [(c.op, c.facts) for c in ctxs]

    def indexed() -> None:
        for op, fa in facts:
            decide_uncached(op, fa)

    def decide() -> None:
        for c in ctxs:
            evaluate(compiled, c)

    emu = Emulator(config=config)
    activate_boot_policy(emu, Policy(text, None, parsed))
    task = Task(pid=1, comm="bench")
    api = emu.evaluate

    def full_api() -> None:
        for f in files:
            api("EXECUTE", "BPRM_CHECK", f, task)

    for c in ctxs:  # every decision is ALLOW, so no audit record is ever built
        assert evaluate(compiled, c).action == "ALLOW"
    return {"linear": linear, "indexed": indexed, "decide": decide, "evaluate": full_api}


def bench(seconds: float, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best rate of each layer for the 10-rule and the 700-rule policy over ``rounds`` rounds.

    Both policies are measured in every round, one right after the other, so a burst of load
    from elsewhere on the machine hits both sides of a ratio rather than one.
    """
    small_work = workloads(8)  # 2 flag rules + 8 digest rules = 10 rules
    large_work = workloads(698)  # 2 + 698 = 700 rules
    small = dict.fromkeys(small_work, 0.0)
    large = dict.fromkeys(large_work, 0.0)
    for _ in range(rounds):
        for layer in small_work:
            small[layer] = max(small[layer], _rate(small_work[layer], EVENTS, seconds))
            large[layer] = max(large[layer], _rate(large_work[layer], EVENTS, seconds))
    return small, large


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.2, help="time per measurement run")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of runs; each layer reports its best")
    args = ap.parse_args()
    small, large = bench(args.seconds, args.rounds)
    print("decisions of op=EXECUTE, success_audit off, every outcome ALLOW (no record is built)")
    print(f"{'layer':<10} {'10 rules':>14} {'700 rules':>14} {'10/700 ratio':>13}  (decisions/s, one core)")
    for layer in ("linear", "indexed", "decide", "evaluate"):
        s, lg = small[layer], large[layer]
        print(f"{layer:<10} {s:>14,.0f} {lg:>14,.0f} {s / lg:>12.2f}x")
    print()
    print(f"indexed vs linear at 700 rules: {large['indexed'] / large['linear']:.1f}x faster")
    print(f"decide  vs linear at 700 rules: {large['decide'] / large['linear']:.1f}x faster")
    # Issue 15's goal: the full API at >= 1 M/s, and every layer but the kernel's own linear walk
    # within 1.3x between the 10-rule and the 700-rule policy.
    ok_rate = min(large["evaluate"], small["evaluate"]) >= 1_000_000
    slow = [layer for layer in ("indexed", "decide", "evaluate") if small[layer] / large[layer] > 1.3]
    print(f"target >= 1,000,000/s for evaluate (full API): {'met' if ok_rate else 'NOT met'}; "
          f"700-rule within 1.3x of 10-rule: {'met' if not slow else 'NOT met by ' + ', '.join(slow)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
