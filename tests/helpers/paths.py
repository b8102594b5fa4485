"""Where things are in the checkout, for tests that read files beside the code (one place, so a
test file can move within tests/ without counting its parents)."""

from __future__ import annotations

from pathlib import Path

#: the checkout: iped/, tests/, docs/, systemd/, etc/
ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
#: the shipped unit and example config
UNIT = ROOT / "systemd" / "iped.service"
EXAMPLE_CONFIG = ROOT / "etc" / "iped.toml"
#: audit record streams and the JSON Lines each renders to
AUDIT_GOLDEN = TESTS / "audit" / "golden"
#: the recorded kernel truth of the lab corpus
CORPUS_TRUTH = TESTS / "corpus" / "truth"
#: the lab's committed test keys (``<name>.crt``/``<name>.key``)
LAB_KEYS = TESTS / "lab" / "keys"
