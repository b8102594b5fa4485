"""Templating of case text and paths: ``{name}``, ``{epoch}``, ``{fact:KEY}``."""

from __future__ import annotations

import re
from collections.abc import Mapping

from tests.lab.corpus.cases import Case, CorpusError

_TEMPLATE = re.compile(r"\{(name|epoch|fact:[A-Za-z0-9_.:-]+(?:\|upper)?)\}")


def expand(text: str, case: Case, facts: Mapping[str, str]) -> str:
    """Replace ``{name}``, ``{epoch}`` and ``{fact:KEY}`` (``{fact:KEY|upper}``) in text and paths."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "name":
            return case.name
        if key == "epoch":
            if case.epoch is None:
                raise CorpusError(f"{case.id}: {{epoch}} used in a case without an epoch")
            return str(case.epoch)
        fact, _, modifier = key.removeprefix("fact:").partition("|")
        if fact not in facts:
            return "{missing-fact:" + fact + "}"
        return facts[fact].upper() if modifier == "upper" else facts[fact]

    return _TEMPLATE.sub(sub, text)
