"""iped.toml validation: strict types, unknown keys, every error as FILE:LINE: key: problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from iped.config import ConfigError, key_lines, load_settings, parse_config
from iped.settings import AuditSource, BackendKind
from tests.helpers.paths import EXAMPLE_CONFIG


def problems(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "iped.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_settings(path)
    return [str(p) for p in ei.value.problems]


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    s = parse_config('[policies]\ndir = "p.d"\nactive = "x"\ntrust_anchors = ["ca.crt"]\n', tmp_path / "iped.toml")
    assert s.policies.dir == tmp_path / "p.d"
    assert s.policies.trust_anchors == (tmp_path / "ca.crt",)
    assert s.policies.active == "x" and s.policies.enforce is True and s.policies.success_audit is False
    assert s.daemon.backend is BackendKind.AUTO and s.daemon.state_dir == Path("/var/lib/iped")
    assert s.daemon.control_socket == Path("/run/iped/control.sock") and s.daemon.history == 20
    assert s.audit.source is AuditSource.AUTO and s.audit.prometheus_textfile is None


def test_every_error_has_file_line_and_key(tmp_path: Path) -> None:
    got = problems(
        "[policies]\n"
        'dir = "p"\n'
        'enforce = "yes"\n'
        "bogus = 1\n"
        "\n"
        "[daemon]\n"
        "history = true\n"
        'backend = "kernal"\n'
        "[audit]\n"
        "receive_buffer = 12\n",
        tmp_path,
    )
    f = tmp_path / "iped.toml"
    assert got[0] == (f"{f}:3: policies.enforce: Input should be a valid boolean "
                      "(a boolean is written true or false, unquoted)")
    assert got[1].startswith(f"{f}:4: policies.bogus: unknown key")
    assert got[2] == f"{f}:7: daemon.history: Input should be a valid integer"
    assert got[3].startswith(f"{f}:8: daemon.backend: Input should be 'auto', 'kernel' or 'emulator'")
    assert got[4].startswith(f"{f}:10: audit.receive_buffer: Input should be greater than or equal to 4096")
    assert len(got) == 5


def test_unknown_section_points_at_header(tmp_path: Path) -> None:
    got = problems('[policies]\nactive = "a"\n\n[deamon]\nbackend = "auto"\n', tmp_path)
    assert got == [f"{tmp_path / 'iped.toml'}:4: deamon: unknown key; did you mean 'daemon'? (see docs/daemon.md "
                   "for the keys iped.toml accepts)"]


def test_unknown_key_names_the_nearest_known_one(tmp_path: Path) -> None:
    got = problems("[policies]\nenforse = true\nbogus = 1\n[audit]\nprometheus_textfil = \"x\"\n", tmp_path)
    f = tmp_path / "iped.toml"
    assert got == [
        f"{f}:2: policies.enforse: unknown key; did you mean 'enforce'? (see docs/daemon.md for the keys iped.toml "
        "accepts)",
        f"{f}:3: policies.bogus: unknown key (typo? see docs/daemon.md for the keys iped.toml accepts)",
        f"{f}:5: audit.prometheus_textfil: unknown key; did you mean 'prometheus_textfile'? (see docs/daemon.md for "
        "the keys iped.toml accepts)",
    ]


def test_a_bare_yes_for_a_boolean_says_how_toml_writes_one(tmp_path: Path) -> None:
    got = problems("[policies]\nenforce = yes\n", tmp_path)
    assert len(got) == 1 and got[0].startswith(f"{tmp_path / 'iped.toml'}:2: (toml): ")
    assert got[0].endswith(" (a boolean is written true or false, unquoted)")
    # the same syntax error on a key that is not a boolean gets no such hint
    got = problems('[daemon]\nbackend = yes\n', tmp_path)
    assert len(got) == 1 and got[0].endswith("(at line 2, column 11)")


def test_list_item_error_names_index(tmp_path: Path) -> None:
    got = problems('[policies]\ntrust_anchors = ["a", 3]\n', tmp_path)
    assert got[0].startswith(f"{tmp_path / 'iped.toml'}:2: policies.trust_anchors[1]:")


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    got = problems('[policies]\nactive = "a"\nenforce = = true\n', tmp_path)
    assert got[0].startswith(f"{tmp_path / 'iped.toml'}:3: (toml):")


def test_empty_file_is_all_defaults_and_missing_file_is_an_error(tmp_path: Path) -> None:
    assert parse_config("", tmp_path / "iped.toml").policies.active is None
    with pytest.raises(ConfigError) as ei:
        load_settings(tmp_path / "absent.toml")
    assert str(ei.value.problems[0]).startswith(f"{tmp_path / 'absent.toml'}:1: (file):")


def test_key_lines_scan() -> None:
    src = '# c\n[policies]\nactive = "a"\n\n[daemon]\n  "backend" = "auto"\n'
    assert key_lines(src) == {("policies",): 2, ("policies", "active"): 3, ("daemon",): 5,
                              ("daemon", "backend"): 6}


def test_example_config_is_valid() -> None:
    s = load_settings(EXAMPLE_CONFIG)
    # shipped as /etc/iped/iped.toml: declares no active policy, so a fresh install changes nothing
    assert s.policies.active is None
    assert s.daemon.control_socket == Path("/run/iped/control.sock")


def test_core_modules_do_not_import_pydantic() -> None:
    import subprocess
    import sys

    code = ("import sys, iped.daemon.loop, iped.daemon.reconcile, iped.backend, iped.commands.status;"
            "print('pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "False"


def test_shipped_config_on_a_fresh_install_changes_nothing(tmp_path: Path) -> None:
    """/etc/iped/iped.toml as packaged, with the empty /etc/iped/policies.d the package makes:
    a reconcile has nothing to do (exit 9), where a declared-but-missing active policy would be
    rejected and a Type=notify service would never become ready."""
    import subprocess
    import sys

    shipped = (EXAMPLE_CONFIG).read_text()
    (tmp_path / "policies.d").mkdir()
    config = tmp_path / "iped.toml"
    config.write_text(
        shipped.replace('"/etc/iped/policies.d"', '"policies.d"')
        .replace('backend = "auto"', 'backend = "emulator"')
        .replace('"/var/lib/iped"', '"state"')
        .replace('"/run/iped/control.sock"', f'"{tmp_path / "control.sock"}"')
    )
    r = subprocess.run([sys.executable, "-m", "iped", "apply", "--once", "--config", str(config)],
                       capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
    assert r.returncode == 9, r.stdout + r.stderr


def test_control_socket_path_too_long_for_sun_path_has_file_line(tmp_path: Path) -> None:
    long = "/run/" + "s" * 100 + "/control.sock"  # 118 bytes: sun_path holds 107 and a NUL
    got = problems(f'[daemon]\nbackend = "emulator"\ncontrol_socket = "{long}"\n', tmp_path)
    assert len(got) == 1 and got[0].startswith(f"{tmp_path / 'iped.toml'}:3: daemon.control_socket: ")
    assert "118 bytes" in got[0] and "107" in got[0]
    ok = "/run/" + "s" * 89 + "/c.sock"  # 101 bytes: fits
    assert str(parse_config(f'[daemon]\ncontrol_socket = "{ok}"\n', tmp_path / "x.toml").daemon.control_socket) == ok


def test_relative_control_socket_is_measured_resolved(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    got = problems('[daemon]\ncontrol_socket = "c.sock"\n', deep)
    assert len(got) == 1 and ":2: daemon.control_socket: " in got[0]
