"""The commands README.md and docs/*.md show, read out of the markdown.

Two kinds, both checked by tests/docs/test_doc_commands.py:

* **Shell commands**: every line of a fenced ```` ```sh ```` block that is not a comment. Each one
  is run as written (``bash -c LINE``) in a scenario of the test, or carries the visible marker
  ``(not run by the doc tests: REASON)`` in a comment on its line, or in a comment line of its
  block for the whole block.
* **iped invocations elsewhere**: an inline code span that starts with ``iped `` and the
  ``iped VERB ...`` calls inside other code blocks (Ansible ``validate:``, Puppet
  ``validate_cmd``, synopses). These are checked against the argparse table: the verb exists and
  every option named is one of that verb's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the markdown files whose commands are tested
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
#: the visible marker of a command the doc tests do not run, with its reason
SKIP_MARKER = re.compile(r"\(not run by the doc tests: ([^)]+)\)")

_FENCE = re.compile(r"^```(\S*)\s*$")
_INLINE = re.compile(r"(?<!`)`(iped [^`]+)`(?!`)")
# in other code blocks: a command at the start of a line (a synopsis), after a YAML "key: ", or
# spelled /usr/bin/iped (Puppet's validate_cmd); not a resource title such as 'iped converge'
_EMBEDDED = re.compile(r"(?:^\s*|: |/usr/bin/)(iped (?!is )[a-z][a-z-]*(?: [^'\"\n#;]*)?)")  # not prose: "iped is ..."


@dataclass(frozen=True, slots=True)
class ShellCommand:
    """One command line of a ```sh block."""

    doc: Path
    line: int  # 1-based line in the markdown file
    block: int  # index of the ```sh block in its file
    text: str  # the line as written
    skip: str | None  # the marker's reason when the doc says it is not run

    @property
    def command(self) -> str:
        """The command without its trailing comment (the key of the tests' expectations)."""
        return re.split(r"\s+#\s", self.text, maxsplit=1)[0].strip()

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True, slots=True)
class Invocation:
    """An ``iped ...`` call written outside a ```sh block."""

    doc: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def _blocks(doc: Path) -> list[tuple[str, int, list[str]]]:
    """Fenced blocks: (language, first content line number, lines)."""
    blocks: list[tuple[str, int, list[str]]] = []
    lang: str | None = None
    start = 0
    body: list[str] = []
    for n, text in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(text)
        if m and lang is None:
            lang, start, body = m.group(1), n + 1, []
        elif text.strip() == "```" and lang is not None:
            blocks.append((lang, start, body))
            lang = None
        elif lang is not None:
            body.append(text)
    return blocks


def shell_commands(doc: Path) -> list[ShellCommand]:
    out = []
    sh_blocks = [b for b in _blocks(doc) if b[0] == "sh"]
    for index, (_, start, body) in enumerate(sh_blocks):
        block_skip = next((m.group(1) for t in body if t.lstrip().startswith("#")
                           and (m := SKIP_MARKER.search(t))), None)
        for offset, text in enumerate(body):
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            m = SKIP_MARKER.search(text)
            out.append(ShellCommand(doc, start + offset, index, text, m.group(1) if m else block_skip))
    return out


def invocations(doc: Path) -> list[Invocation]:
    """``iped ...`` in inline code spans and in code blocks that are not ```sh."""
    out = []
    in_block: str | None = None
    for n, text in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        fence = _FENCE.match(text)
        if fence and in_block is None:
            in_block = fence.group(1) or "plain"
            continue
        if text.strip() == "```" and in_block is not None:
            in_block = None
            continue
        if in_block is None:
            out += [Invocation(doc, n, m.group(1)) for m in _INLINE.finditer(text)]
        elif in_block != "sh":
            out += [Invocation(doc, n, m.group(1).strip()) for m in _EMBEDDED.finditer(text)]
    return out
