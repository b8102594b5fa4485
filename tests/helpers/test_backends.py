"""The emulator posing as the kernel passes every call through, says it is the kernel, and counts
the daemon's looks at the policy list."""

from __future__ import annotations

from iped.backend import make_emulator_backend
from tests.helpers.backends import PosingAsKernel


def test_it_passes_through_and_counts_policy_listings() -> None:
    inner = make_emulator_backend([], "test")
    kernel = PosingAsKernel(inner)
    assert kernel.kind == "kernel"
    assert kernel.listdir("policies") == inner.listdir("policies")
    assert kernel.read("enforce") == inner.read("enforce")
    kernel.listdir("")
    assert kernel.listings == 1
