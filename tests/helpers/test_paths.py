"""The checkout's places the tests read exist where paths.py says."""

from __future__ import annotations

from tests.helpers import paths


def test_every_path_exists() -> None:
    assert (paths.ROOT / "iped" / "__init__.py").is_file()
    assert paths.TESTS == paths.ROOT / "tests"
    for path in (paths.UNIT, paths.EXAMPLE_CONFIG, paths.AUDIT_GOLDEN, paths.CORPUS_TRUTH, paths.LAB_KEYS):
        assert path.exists(), path
