"""The iped.toml settings the docs name exist, in the section they name (docs/audit.md named a
setting ``audit_metrics_path`` that check-config rejects: the key is ``[audit] prometheus_textfile``)."""

from __future__ import annotations

import dataclasses
import re

from iped.settings import AuditSettings, DaemonSettings, PolicySettings, Settings
from tests.helpers.paths import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: `[section] key`, `section.key`, and whatever follows the word "setting" in backticks
_SECTION = r"(policies|daemon|audit)"
NAMED = re.compile(rf"`\[{_SECTION}\] (\w+)`|\[{_SECTION}\] (\w+)|`{_SECTION}\.(\w+)`|[Ss]etting `([^`]+)`")


def known_keys() -> dict[str, set[str]]:
    """Each section's keys, from the settings dataclasses (their one declaration)."""
    sections = {"policies": PolicySettings, "daemon": DaemonSettings, "audit": AuditSettings}
    assert set(sections) == {f.name for f in dataclasses.fields(Settings)} & set(sections)
    return {name: {f.name for f in dataclasses.fields(cls)} for name, cls in sections.items()}


def named_settings() -> list[tuple[str, str | None, str]]:
    """(doc, section or None, key) for every setting a doc names."""
    found = []
    for doc in DOCS:
        for m in NAMED.finditer(doc.read_text()):
            if m.group(7) is not None:  # "setting `...`": a section-qualified key or a bare one
                inner = re.fullmatch(r"\[(\w+)\] (\w+)|(\w+)\.(\w+)|(\w+)", m.group(7))
                assert inner, f"{doc.name}: setting `{m.group(7)}` is no key"
                section = inner.group(1) or inner.group(3)
                key = inner.group(2) or inner.group(4) or inner.group(5)
            else:
                section = m.group(1) or m.group(3) or m.group(5)
                key = m.group(2) or m.group(4) or m.group(6)
            found.append((doc.name, section, key))
    return found


def test_every_setting_the_docs_name_exists_in_its_section() -> None:
    keys = known_keys()
    everything = set().union(*keys.values())
    named = named_settings()
    wrong = [(doc, section, key) for doc, section, key in named
             if (key not in keys[section] if section in keys else section is not None or key not in everything)]
    assert not wrong, f"settings the docs name that iped.toml does not have: {wrong}"
    assert ("audit.md", "audit", "prometheus_textfile") in named
