"""The man pages and shell completions: generated from the argparse table and the settings
dataclasses (iped/docgen.py), committed under packaging/generated/, shipped by both packages.

A changed option, verb, exit code or iped.toml key without ``.venv/bin/python -m iped.docgen``
fails :func:`test_generated_files_are_current`; the pages render without a groff warning; bash
completion runs for real.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from iped.cli import Verb
from iped.commands import EXIT_MEANINGS, ExitCode
from iped.config import SECTIONS
from iped.docgen import OUTPUTS, full_parser, key_meanings, render
from tests.helpers.paths import ROOT

GENERATED = ROOT / "packaging" / "generated"


@pytest.mark.parametrize("name", OUTPUTS)
def test_generated_files_are_current(name: str) -> None:
    committed = (GENERATED / name).read_text(encoding="utf-8")
    assert committed == render(name), (
        f"packaging/generated/{name} is stale: run '.venv/bin/python -m iped.docgen' and commit the result")


def _man_text(page: str, tmp_path: Path) -> str:
    """``man -l`` of a page at 80 columns; any groff/man warning fails."""
    if shutil.which("man") is None:
        pytest.skip("man-db is not installed")
    path = tmp_path / page
    path.write_text(render(page), encoding="utf-8")
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "LANG": "C.UTF-8"}
    done = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True, env=env,
                          check=False, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return re.sub(r".\x08", "", done.stdout)  # no overstrike when piped, but be sure


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings
            if o not in ("-h", "--help")]


def test_iped_8_has_every_verb_option_exit_code_and_file(tmp_path: Path) -> None:
    text = _man_text("iped.8", tmp_path)
    sections = re.split(r"^(?=[A-Z][A-Z ]+$)", text, flags=re.M)
    by_name = {s.splitlines()[0].strip(): s for s in sections if s.strip()}
    assert {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "VERBS", "EXIT STATUS", "FILES", "SEE ALSO"} <= set(by_name)
    verbs = by_name["VERBS"]
    parser = full_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    blocks = re.split(r"^   iped (\S+)$", verbs, flags=re.M)
    documented = dict(zip(blocks[1::2], blocks[2::2], strict=True))
    assert list(documented) == [v.value for v in Verb]
    for name, verb_parser in sub.choices.items():
        for option in _options(verb_parser):
            assert re.search(rf"(^|\s|\[){re.escape(option)}\b", documented[name]), f"iped {name}: {option}"
    for option in _options(parser):
        assert option in by_name["OPTIONS"]
    from iped.daemon.readiness import EXIT_START_REFUSED

    for code in [*ExitCode, EXIT_START_REFUSED]:
        assert re.search(rf"^       {int(code)}\s", by_name["EXIT STATUS"], re.M), code
    for path in ("/etc/iped/iped.toml", "/etc/iped/policies.d", "/var/lib/iped", "/run/iped/control.sock"):
        assert path in by_name["FILES"]


def test_every_exit_code_has_a_meaning() -> None:
    assert set(EXIT_MEANINGS) == set(ExitCode)


def test_iped_toml_5_has_every_key_with_type_default_and_meaning(tmp_path: Path) -> None:
    text = _man_text("iped.toml.5", tmp_path)
    for section, cls in SECTIONS.items():
        meanings = key_meanings(cls)
        fields = [f.name for f in dataclasses.fields(cls)]
        assert sorted(meanings) == sorted(fields), f"[{section}]: the docstring's keys differ from the fields"
        body = text.split(f"\n[{section}]\n", 1)[1].split("\n\n[", 1)[0]
        for f in dataclasses.fields(cls):
            m = re.search(rf"^       {f.name}\s+\((.+?)\)\n(.+?)(?=\n\n|\Z)", body, re.M | re.S)
            assert m, f"[{section}] {f.name} missing"
            assert "default " in m.group(1), m.group(1)
            assert m.group(2).split()[:3] == meanings[f.name].split()[:3]


def test_daemon_md_key_table_lists_every_key_with_its_default() -> None:
    """docs/daemon.md's configuration table is the readable summary of the same keys."""
    from iped.docgen import _toml_default

    table = (ROOT / "docs" / "daemon.md").read_text(encoding="utf-8").split("| key | type | default | meaning |")[1]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z_.]+)`(?: / `\w+`)? \| [^|]+ \| ([^|]+) \|",
                                                          table, re.M)}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if key == "policies.signing_cert":  # shares signing_key's row
                continue
            assert key in rows, f"docs/daemon.md lacks {key}"
            default = f.default if f.default is not dataclasses.MISSING else None
            assert rows[key].strip().strip("`") == _toml_default(default).strip('"'), key


def _bash_complete(words: list[str], cwd: Path) -> list[str]:
    """Run the generated bash completion function as bash would on <TAB> after ``words``."""
    script = (
        f"source {GENERATED / 'iped.bash'}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
        '_shtab_iped iped "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", *words], cwd=cwd,
                          capture_output=True, text=True, check=True, timeout=60)
    assert done.stderr == ""
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completion_offers_verbs_options_and_files(tmp_path: Path) -> None:
    assert _bash_complete(["iped", ""], tmp_path) == [v.value for v in Verb]
    assert _bash_complete(["iped", "sta"], tmp_path) == ["status"]
    assert _bash_complete(["iped", "check"], tmp_path) == ["check-config"]
    reload_options = _bash_complete(["iped", "reload", "--"], tmp_path)
    assert {"--socket", "--config", "--json", "--timeout", "--unchanged-ok"} <= set(reload_options)
    assert _bash_complete(["iped", "validate", "--format", ""], tmp_path) == ["auto", "text", "pkcs7"]
    (tmp_path / "site.pol").write_text("x")
    (tmp_path / "signing.key").write_text("x")
    assert _bash_complete(["iped", "validate", "si"], tmp_path) == ["site.pol"]
    assert _bash_complete(["iped", "sign", "--key", "sig"], tmp_path) == ["signing.key"]


def test_bash_completion_offers_the_drop_in_policies(tmp_path: Path) -> None:
    """A bare word also completes to the policies in /etc/iped/policies.d: run in a private mount
    namespace with an overlay on /etc, so the machine's /etc is untouched."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /etc")
    upper, work = tmp_path / "upper", tmp_path / "work"
    (upper / "iped" / "policies.d").mkdir(parents=True)
    work.mkdir()
    for name in ("boot_verified.pol", "base.p7s", "notes.txt"):
        (upper / "iped" / "policies.d" / name).write_text("x")
    script = (
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc\n"
        f"source {GENERATED / 'iped.bash'}\n"
        'COMP_WORDS=(iped validate "$1"); COMP_CWORD=2; COMP_LINE="iped validate $1"; COMP_POINT=${#COMP_LINE}\n'
        '_shtab_iped iped "$1" validate\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for word, want in (("b", ["/etc/iped/policies.d/base.p7s", "/etc/iped/policies.d/boot_verified.pol"]),
                       ("n", [])):
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "--norc", "-c", script,
                               "bash", word], cwd=cwd, capture_output=True, text=True, check=True, timeout=60)
        assert sorted(w for w in done.stdout.splitlines() if w) == want


def test_zsh_completion_parses_and_is_found_by_compinit(tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    subprocess.run(["zsh", "-n", str(GENERATED / "_iped")], check=True, timeout=60)
    # compinit picks it up from a directory on $fpath (the packages put it on the default one)
    found = subprocess.run(["zsh", "-fc", f"fpath=({GENERATED} $fpath); autoload -Uz compinit; "
                            f"compinit -u -d {tmp_path}/zcompdump; print -r -- $_comps[iped]"],
                           capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "_iped", found
    text = (GENERATED / "_iped").read_text(encoding="utf-8")
    assert text.startswith("#compdef iped")
    for verb in Verb:
        assert f"{verb.value}:" in text or f"'{verb.value}'" in text or f"\"{verb.value}\"" in text, verb


def test_both_packages_ship_the_pages_and_completions() -> None:
    manpages = (ROOT / "packaging" / "debian" / "iped.manpages").read_text().split()
    assert manpages == ["packaging/generated/iped.8", "packaging/generated/iped.toml.5"]
    rules = (ROOT / "packaging" / "debian" / "rules").read_text()
    assert "packaging/generated/iped.bash debian/iped/usr/share/bash-completion/completions/iped" in rules
    assert "packaging/generated/_iped debian/iped/usr/share/zsh/vendor-completions/_iped" in rules
    spec = (ROOT / "packaging" / "rpm" / "iped.spec").read_text().splitlines()
    for source, installed in (("iped.8", "%{_mandir}/man8/iped.8"), ("iped.toml.5", "%{_mandir}/man5/iped.toml.5"),
                              ("iped.bash", "%{_datadir}/bash-completion/completions/iped"),
                              ("_iped", "%{_datadir}/zsh/site-functions/_iped")):
        assert any(line.startswith("install ") and f"packaging/generated/{source} " in line
                   and line.endswith(f"%{{buildroot}}{installed}") for line in spec), source
        assert installed in spec or f"{installed}*" in spec, installed
