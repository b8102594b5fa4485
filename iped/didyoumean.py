""""Did you mean" for a mistyped word: one difflib lookup shared by the CLI, iped.toml and policies.

difflib (stdlib, imported only when a word is already known to be wrong) ranks the candidates by
its ratio; 0.6 is its own default cutoff, which catches one or two wrong, missing or swapped
letters (``enforse``, ``stauts``, ``boot_verfied=TRUE``) and leaves unrelated words alone.
"""

from __future__ import annotations

from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to ``word``, or None when none is close."""
    import difflib

    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the closest candidate, or ``""``."""
    best = closest(word, candidates)
    return f"; did you mean '{best}'?" if best is not None else ""
