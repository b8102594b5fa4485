"""The docs are tests: every command README.md and docs/*.md show runs here, as written.

Each ```sh command runs in a scenario on the emulator (the example configuration from etc/, data
recorded in the test) and its exit code and the shape of its output are checked against
:data:`EXPECTED`; a command the docs add without an expectation fails
:func:`test_every_shell_command_is_run_or_marked`, and so does one that is neither run nor marked
``(not run by the doc tests: REASON)`` in the doc. Every other ``iped ...`` the docs write (inline,
in Ansible/Puppet/Salt examples, synopses) must name a verb and options the argparse table has.

Substitutions, the only ones (commands are otherwise byte for byte the doc's):

* **Paths** (``/etc/iped``, ``/var/lib/iped``, ``/run/iped``, ``/var/log``): each scenario runs in a
  private mount namespace (``unshare --mount``) with an overlay on /etc, /var and /run whose upper
  layer is in the test's tmp_path, and those four paths removed in it: the commands write the real
  paths, the machine's are untouched.
* **The working directory** is a scratch directory holding symlinks ``.venv``, ``etc``,
  ``ansible`` and ``packaging`` to the checkout (the README's commands run from the checkout root);
  ``PATH`` starts with the checkout's ``.venv/bin``; ``XDG_RUNTIME_DIR`` is the scenario's own (the
  ``iped daemon --dev`` socket, README "Quick start").
* **No IPE here**: the README's rollout says "No IPE in this kernel? Run ``iped shadow -o
  /var/log/iped-shadow.log`` instead and add ``--source /var/log/iped-shadow.log`` to the commands
  below" -- this machine has none, so the scenario does exactly that (:data:`SHADOW_SOURCE`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.docs.doccommands import DOCS, ROOT, Invocation, ShellCommand, invocations, shell_commands

VENV_BIN = ROOT / ".venv" / "bin"
SHADOW_SOURCE = "--source /var/log/iped-shadow.log"
_README_NO_IPE = ("No IPE in this kernel? Run\n`iped shadow -o /var/log/iped-shadow.log` instead and add "
                  "`--source /var/log/iped-shadow.log` to\nthe commands below.")


def _lines_matching(pattern: str) -> Callable[[str, str], str | None]:
    def check(out: str, err: str) -> str | None:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # a terminal's colours (ansible-doc) are not the shape
        return None if re.search(pattern, plain, re.M) else f"stdout does not match {pattern!r}"
    return check


def _is_policy(out: str, err: str) -> str | None:
    first = out.splitlines()[0] if out else ""
    return None if re.fullmatch(r"policy_name=\S+ policy_version=\d+\.\d+\.\d+", first) else \
        f"stdout is not a policy (first line {first!r})"


@dataclass(frozen=True)
class Expect:
    """What a documented command must do here: an exit code among ``codes`` and its output's shape."""

    codes: frozenset[int]
    shape: Callable[[str, str], str | None] = field(default=lambda out, err: None)


def expect(*codes: int, shape: Callable[[str, str], str | None] | None = None) -> Expect:
    return Expect(frozenset(codes), shape) if shape else Expect(frozenset(codes))


_STATUS_TEXT = _lines_matching(r"^backend: +EMULATOR\b.*\n(?s:.*)^last reconcile: +in sync: active allow_all ")
_RELOAD_TEXT = _lines_matching(r"^(applied|unchanged) \(plan #\d+\)")

#: (doc, command without its comment) -> what it must do; every ```sh command is here or marked
EXPECTED: dict[tuple[str, str], Expect] = {
    ("README.md", ".venv/bin/iped status"): expect(0, shape=_STATUS_TEXT),
    ("README.md", ".venv/bin/iped reload"): expect(0, 9, shape=_RELOAD_TEXT),
    ("README.md", ".venv/bin/iped validate etc/policies.d/*.pol"):
        expect(0, shape=_lines_matching(r"\Aetc/policies.d/allow_all.pol: OK policy_name=allow_all .*\n"
                                        r"etc/policies.d/boot_verified.pol: OK policy_name=boot_verified .*\n\Z")),
    ("README.md", "iped suggest --since -7d > site.pol.new"): expect(0, 1),
    ("README.md", "iped survey --policy site.pol.new --since -7d"):
        expect(0, 1, shape=_lines_matching(r"^survey: policy site \S+ \(site.pol.new\) against \d+ IPE decision "
                                           r"records.*\n(GO|NO-GO|NO DATA)\b")),
    ("README.md", "cp site.pol.new /etc/iped/policies.d/site.pol && iped reload"): expect(0, 9, shape=_RELOAD_TEXT),
    ("docs/daemon.md", "iped status"): expect(0, shape=_STATUS_TEXT),
    ("docs/daemon.md", "iped reload"): expect(0, 9, shape=_RELOAD_TEXT),
    ("docs/fleet.md", "ANSIBLE_COLLECTIONS_PATH=ansible ansible-doc iped.ipe.ipe_state"):
        expect(0, shape=_lines_matching(r"^> (MODULE )?iped\.ipe\.ipe_state\b")),
}


def _all_shell_commands() -> list[ShellCommand]:
    return [c for doc in DOCS for c in shell_commands(doc)]


def _key(c: ShellCommand) -> tuple[str, str]:
    return (str(c.doc.relative_to(ROOT)), c.command)


def test_every_shell_command_is_run_or_marked() -> None:
    commands = _all_shell_commands()
    assert len(commands) >= 10, "the extractor found too few ```sh commands"
    unknown = [f"{c.where}: {c.command}" for c in commands if c.skip is None and _key(c) not in EXPECTED]
    assert not unknown, ("documented commands with no expectation in tests/docs/test_doc_commands.py::EXPECTED "
                         f"(add one, or mark the doc line '(not run by the doc tests: REASON)'): {unknown}")
    stale = set(EXPECTED) - {_key(c) for c in commands if c.skip is None}
    assert not stale, f"expectations for commands no doc shows (or marked not run) any more: {sorted(stale)}"
    for c in commands:
        assert c.skip is None or len(c.skip.split()) >= 3, f"{c.where}: say why it is not run"


# --- iped invocations outside ```sh blocks: the argparse table knows them ---------------------


def _verb_options() -> dict[str, set[str]]:
    import argparse

    from iped.docgen import full_parser

    parser = full_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    top = {o for a in parser._actions for o in a.option_strings}
    return {name: top | {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}


def _calls(inv: Invocation) -> list[list[str]]:
    """The verb and words of each call an invocation writes (``iped reload | status`` is two)."""
    text = inv.text.removeprefix("/usr/bin/").removeprefix("iped ").split(";")[0]
    calls = []
    for segment in re.split(r" (?<!\\)\| ", text):
        words = segment.replace("\\|", "|").split()
        if words:
            calls.append(words)
    return calls


@pytest.mark.parametrize("inv", [i for doc in DOCS for i in invocations(doc)], ids=lambda i: f"{i.where} {i.text}")
def test_iped_invocation_names_a_verb_and_its_options(inv: Invocation) -> None:
    known = _verb_options()
    for words in _calls(inv):
        verb = words[0]
        assert verb in known, f"{inv.where}: '{inv.text}': no verb '{verb}' (verbs: {sorted(known)})"
        for word in words[1:]:
            for option in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", word):
                assert option in known[verb], f"{inv.where}: '{inv.text}': iped {verb} has no option {option}"


# --- running the ```sh commands ----------------------------------------------------------------


@dataclass
class Ran:
    code: int
    out: str
    err: str


class Scenario:
    """One private mount namespace (overlays on /etc, /var, /run), a scratch working directory and
    a bash driver: setup lines written by the test, then each documented command as written."""

    def __init__(self, tmp: Path) -> None:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("the doc scenarios need root and unshare(1) for a private /etc, /var and /run")
        self.tmp = tmp
        self.cwd = tmp / "cwd"
        self.cwd.mkdir()
        for name in (".venv", "etc", "ansible", "packaging"):
            (self.cwd / name).symlink_to(ROOT / name)
        (tmp / "xdg").mkdir(mode=0o700)
        self.lines: list[str] = []
        self.steps: list[str] = []

    def setup(self, *lines: str) -> None:
        self.lines.extend(lines)

    def command(self, text: str) -> None:
        """A documented command, run as ``bash -c TEXT`` with its output and exit code kept."""
        i = len(self.steps)
        self.steps.append(text)
        (self.tmp / f"cmd.{i}").write_text(text)
        t = self.tmp
        self.lines.append(f'bash -c "$(cat {t}/cmd.{i})" >{t}/out.{i} 2>{t}/err.{i} </dev/null; echo $? >{t}/rc.{i}')

    def run(self, timeout: float = 300) -> list[Ran]:
        preamble = ["set -u"]
        for d in ("etc", "var", "run"):
            (self.tmp / d / "upper").mkdir(parents=True)
            (self.tmp / d / "work").mkdir()
            preamble.append(f"mount -t overlay overlay -o lowerdir=/{d},upperdir={self.tmp}/{d}/upper,"
                            f"workdir={self.tmp}/{d}/work /{d}")
        preamble += ["rm -rf /etc/iped /var/lib/iped /run/iped /var/log/iped-shadow.log",
                     f"export PATH={VENV_BIN}:$PATH XDG_RUNTIME_DIR={self.tmp}/xdg LANG=C.UTF-8",
                     "unset IPED_EMULATOR_FAULT COLUMNS", f"cd {self.cwd}"]
        script = self.tmp / "driver.sh"
        script.write_text("\n".join([*preamble, *self.lines, ""]))
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", str(script)],
                              capture_output=True, text=True, timeout=timeout, check=False)
        assert done.returncode == 0, f"scenario driver failed ({done.returncode}): {done.stderr[-3000:]}"
        return [Ran(int((self.tmp / f"rc.{i}").read_text()), (self.tmp / f"out.{i}").read_text(),
                    (self.tmp / f"err.{i}").read_text()) for i in range(len(self.steps))]

    def start_daemon(self, argv: str, socket: str) -> None:
        self.setup(f"{argv} > {self.tmp}/daemon.log 2>&1 &", "daemon=$!",
                   f"for i in $(seq 150); do [ -S {socket} ] && break; sleep 0.1; done",
                   f"[ -S {socket} ] || {{ echo 'no daemon' >&2; cat {self.tmp}/daemon.log >&2; exit 1; }}")

    def stop_daemon(self) -> None:
        self.setup('kill -TERM "$daemon"; wait "$daemon" || true')


def _block(doc: str, index: int) -> list[ShellCommand]:
    return [c for c in shell_commands(ROOT / doc) if c.block == index]


def _check(commands: list[ShellCommand], results: list[Ran]) -> None:
    problems = []
    for c, r in zip(commands, results, strict=True):
        want = EXPECTED[_key(c)]
        if r.code not in want.codes:
            problems.append(f"{c.where}: `{c.text}` exited {r.code}, documented {sorted(want.codes)}: "
                            f"{r.err.strip()[-500:]}")
        elif (why := want.shape(r.out, r.err)) is not None:
            problems.append(f"{c.where}: `{c.text}`: {why}\n--- stdout:\n{r.out[-1500:]}")
    assert not problems, "\n".join(problems)


def _dev_scenario(tmp_path: Path, commands: list[ShellCommand]) -> list[Ran]:
    """`packaging/dev.sh run` = `iped daemon --dev` (README "Quick start"), then the commands
    "from a second shell"."""
    sc = Scenario(tmp_path)
    sc.start_daemon("iped daemon --dev", f"{tmp_path}/xdg/iped-dev/control.sock")
    for c in commands:
        sc.command(c.text)
    sc.stop_daemon()
    return sc.run()


def test_readme_quick_start(tmp_path: Path) -> None:
    first, second = _block("README.md", 0), _block("README.md", 1)
    assert [c.command for c in first] == ["packaging/dev.sh run", "packaging/dev.sh test"]
    assert all(c.skip for c in first)
    _check(second, _dev_scenario(tmp_path, second))


def test_daemon_md_quick_start(tmp_path: Path) -> None:
    commands = [c for c in _block("docs/daemon.md", 0) if c.skip is None]
    assert [c.command for c in commands] == ["iped status", "iped reload"]
    _check(commands, _dev_scenario(tmp_path, commands))


def _with_shadow_source(text: str) -> str:
    """The README's own instruction for a kernel without IPE: add --source to suggest/survey."""
    return re.sub(r"^iped (suggest|survey) ", rf"iped \1 {SHADOW_SOURCE} ", text)


def test_readme_rollout(tmp_path: Path) -> None:
    """README "Rollout", on the emulator as a new user would do it: the package's /etc/iped, the
    starter policy in permissive mode with a local signing key, `iped shadow` recording what runs,
    then the three commands."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _README_NO_IPE in readme, "the README no longer says how to roll out without IPE"
    starter = "iped suggest --starter > /etc/iped/policies.d/site.pol"
    shadow = "iped shadow -o /var/log/iped-shadow.log"
    assert f"`{starter}`" in readme and f"`{shadow}`" in readme
    commands = _block("README.md", 2)
    assert len(commands) == 3 and all(c.skip is None for c in commands)
    sc = Scenario(tmp_path)
    # what the .deb installs (packaging/README.md), then the README's prose: the starter policy,
    # declared with active = "site", enforce = false, success_audit = true, signed by the daemon
    # with [policies] signing_key
    sc.setup("mkdir -p /etc/iped/policies.d", f"cp {ROOT}/etc/iped.toml /etc/iped/iped.toml", starter,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout /etc/iped/signing.key -out /etc/iped/signing.crt "
             "-days 30 -subj /CN=site-signer 2>/dev/null", "chmod 600 /etc/iped/signing.key",
             "sed -i 's/^# active = .*/active = \"site\"/; s/^enforce = true/enforce = false/; "
             "s/^success_audit = false/success_audit = true/; s/^# signing_/signing_/' /etc/iped/iped.toml")
    sc.start_daemon("iped daemon", "/run/iped/control.sock")
    # the workload, watched by shadow mode: a program on a plain filesystem (no IPE property)
    sc.setup(f"{shadow} 2> {tmp_path}/shadow.err &", "shadow=$!", "sleep 2",
             "mkdir -p /run/workload && cp /bin/true /run/workload/app",
             "for i in 1 2 3; do /run/workload/app; done", "sleep 1", 'kill -TERM "$shadow"; wait "$shadow"',
             f"cp /var/log/iped-shadow.log {tmp_path}/shadow.log")
    sc.command(_with_shadow_source(commands[0].text))
    sc.command(_with_shadow_source(commands[1].text))
    sc.setup("sed -i 's/^enforce = false/enforce = true/' /etc/iped/iped.toml")  # "set enforce = true first"
    sc.command(commands[2].text)
    sc.command("iped status --json")
    sc.stop_daemon()
    results = sc.run()
    _check(commands, results[:3])
    assert "/run/workload/app" in (tmp_path / "shadow.log").read_text()
    assert _is_policy((sc.cwd / "site.pol.new").read_text(), "") is None
    status = json.loads(results[3].out)
    assert (status["active"]["name"], status["enforce"], status["in_sync"]) == ("site", True, True), status


def test_fleet_md_ansible_doc(tmp_path: Path) -> None:
    commands = [c for c in _block("docs/fleet.md", 0) if c.skip is None]
    assert [c.command for c in commands] == ["ANSIBLE_COLLECTIONS_PATH=ansible ansible-doc iped.ipe.ipe_state"]
    sc = Scenario(tmp_path)
    sc.setup(f"export HOME={tmp_path}/home ANSIBLE_LOCAL_TEMP={tmp_path}/home/tmp", f"mkdir -p {tmp_path}/home")
    for c in commands:
        sc.command(c.text)
    _check(commands, sc.run())


def test_shell_quoting_of_the_driver_is_exact(tmp_path: Path) -> None:
    """The driver runs a command byte for byte: quotes, globs, redirections and $ survive."""
    sc = Scenario(tmp_path)
    text = """printf '%s|' "a b" 'c"d' $((1+2)) etc/policies.d/*.pol > o && cat o; echo "$HOME" >/dev/null"""
    sc.command(text)
    [ran] = sc.run()
    assert ran.code == 0
    assert ran.out == "a b|c\"d|3|etc/policies.d/allow_all.pol|etc/policies.d/boot_verified.pol|"
    assert shlex.split(text)[0] == "printf"
