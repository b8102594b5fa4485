"""The mutation table stays applicable: each mutation's line is in its file exactly once and its tests exist.

(The mutations themselves run by hand: tests/mutation/mutate.py.)
"""

from __future__ import annotations

import pytest

from tests.mutation.mutate import MUTATIONS, ROOT, Mutation


@pytest.mark.parametrize("m", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_each_mutation_applies_once_to_code_its_tests_exist_for(m: Mutation) -> None:
    assert (ROOT / m.file).read_text(encoding="utf-8").count(m.original) == 1
    assert m.mutated != m.original
    assert all((ROOT / t).is_file() for t in m.tests)


def test_mutation_ids_are_unique() -> None:
    assert len({m.id for m in MUTATIONS}) == len(MUTATIONS)
