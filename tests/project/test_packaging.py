"""Distribution packaging stays in step with the project: the wheel holds what the packages need,
packaging/debian/control and packaging/rpm/iped.spec name every runtime dependency of
pyproject.toml with the same bounds, and every file they install from the tree exists.

The real Debian build runs with the lab (``-m lab``: a trixie build chroot, about a minute, cached);
the source RPM is built and linted in every run.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

DEBIAN = ROOT / "packaging" / "debian"
SPEC = ROOT / "packaging" / "rpm" / "iped.spec"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# pyproject.toml distribution name -> Debian binary package (Debian 13 "trixie" names). A new
# runtime dependency fails test_debian_depends_cover_pyproject until it is added here and to
# packaging/debian/control.
DEBIAN_NAMES = {
    "pydantic": "python3-pydantic",
    "pyudev": "python3-pyudev",
    "inotify-simple": "python3-inotify-simple",
    "systemd-python": "python3-systemd",
    "cryptography": "python3-cryptography",
    "asn1crypto": "python3-asn1crypto",
}
# PEP 440 operator -> Debian relation, and -> RPM rich-dependency operator.
DEB_OPS = {">=": ">=", "<": "<<", "<=": "<=", ">": ">>", "==": "="}
RPM_OPS = {">=": ">=", "<": "<", "<=": "<=", ">": ">", "==": "="}


@dataclass(frozen=True)
class Requirement:
    name: str  # PEP 503 normalised
    specs: tuple[tuple[str, str], ...]  # (operator, version)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> Requirement:
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;.*)?", text)
    assert m, f"cannot parse requirement {text!r}"
    specs: list[tuple[str, str]] = []
    for part in filter(None, (p.strip() for p in m.group(2).split(","))):
        sm = re.fullmatch(r"(>=|<=|==|>|<)\s*([0-9][0-9A-Za-z.+]*)", part)
        assert sm, f"unsupported specifier {part!r} in {text!r}: teach tests/project/test_packaging.py about it"
        specs.append((sm.group(1), sm.group(2)))
    return Requirement(normalise(m.group(1)), tuple(specs))


def runtime_requirements() -> list[Requirement]:
    deps: list[str] = PYPROJECT["project"]["dependencies"]
    assert deps, "pyproject.toml has no [project.dependencies]?"
    return [parse_requirement(d) for d in deps]


def deb822(path: Path) -> list[dict[str, str]]:
    """Paragraphs of a deb822 file (debian/control): comment lines dropped, continuations joined."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, ""
        elif line[0] in " \t":
            assert key, f"{path}: continuation line before any field: {line!r}"
            current[key] += "\n" + line.strip()
        else:
            key, sep, value = line.partition(":")
            assert sep, f"{path}: not a field: {line!r}"
            current[key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def relations(field: str) -> dict[str, list[tuple[str, str]]]:
    """Debian relation field -> {package: [(relation, version), ...]} (alternatives flattened)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for item in field.replace("\n", " ").split(","):
        for raw in item.split("|"):
            alt = raw.strip()
            if not alt or alt.startswith("${"):
                continue
            m = re.fullmatch(r"([a-z0-9][a-z0-9+.-]+)(?::any)?\s*(?:\((<<|<=|=|>=|>>)\s*([^)\s]+)\))?\s*(?:<[^>]*>)?",
                             alt)
            assert m, f"cannot parse Debian relation {alt!r}"
            out.setdefault(m.group(1), [])
            if m.group(2):
                out[m.group(1)].append((m.group(2), m.group(3)))
    return out


def control() -> tuple[dict[str, str], dict[str, str]]:
    paragraphs = deb822(DEBIAN / "control")
    assert len(paragraphs) == 2, f"expected a source and one binary paragraph, got {len(paragraphs)}"
    source, binary = paragraphs
    assert source.get("Source") == "iped" and binary.get("Package") == "iped"
    return source, binary


def spec_text() -> str:
    return SPEC.read_text()


def spec_requires() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for m in re.finditer(r"^Requires:\s*python3dist\(([^)]+)\)\s*(?:(>=|<=|=|>|<)\s*(\S+))?\s*$", spec_text(), re.M):
        out.setdefault(normalise(m.group(1)), [])
        if m.group(2):
            out[normalise(m.group(1))].append((m.group(2), m.group(3)))
    return out


# --- the wheel ---------------------------------------------------------------------------------


def build_requirements_met() -> bool:
    """pyproject.toml's [build-system] requires (setuptools>=68, wheel) are importable here."""
    import importlib.metadata as md

    for text in PYPROJECT["build-system"]["requires"]:
        req = parse_requirement(text)
        try:
            have = tuple(int(x) for x in re.findall(r"\d+", md.version(req.name))[:3])
        except md.PackageNotFoundError:
            return False
        for op, version in req.specs:
            want = tuple(int(x) for x in version.split("."))
            if op == ">=" and have < want:
                return False
    return True


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """Built from a copy of the tree, so the checkout gets no build/ or egg-info droppings. Without
    build isolation when this environment has the build requirements, else pip fetches them."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "iped", src / "iped", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if build_requirements_met() else []
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, check=False, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list(out.glob("iped-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as zf:
        yield zf


def test_wheel_contains_the_package(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for required in ("iped/__init__.py", "iped/__main__.py", "iped/cli.py", "iped/emulator/policy_parser.py",
                     "iped/py.typed"):
        assert required in names, f"{required} missing from the wheel"
    # every package directory in the tree made it (a missing __init__.py drops a subpackage)
    for init in (ROOT / "iped").rglob("__init__.py"):
        rel = init.relative_to(ROOT).as_posix()
        assert rel in names, f"{rel} missing from the wheel"
    assert not any(n.startswith("tests/") for n in names), "the test suite leaked into the wheel"
    assert_no_lab(names, {n: wheel.read(n) for n in names if n.endswith(".py")})
    # the C helpers, compiled for this interpreter, with their stub; not their sources
    assert any(re.fullmatch(r"iped/audit/_scan\.cpython-.*\.so", n) for n in names), "no compiled iped.audit._scan"
    assert "iped/audit/_scan.pyi" in names and not [n for n in names if n.endswith((".c", ".h"))]


def assert_no_lab(names: set[str], sources: dict[str, bytes]) -> None:
    """The QEMU lab (tests/lab: kernel downloads, OVMF, QEMU) is test-only and never ships.

    ``names`` are a package's paths, ``sources`` its Python files' contents.
    """
    assert not [n for n in names if "/lab/" in n or n.startswith("lab/")], "a lab directory is in the package"
    for name, text in sources.items():
        for marker in (b"qemu-system", b"OVMF", b"tests.lab"):
            assert marker not in text, f"{name} mentions {marker.decode()!r}: lab code in the package"


def test_wheel_entry_point_and_metadata(wheel: zipfile.ZipFile) -> None:
    version = PYPROJECT["project"]["version"]
    info = f"iped-{version}.dist-info"
    ep = configparser.ConfigParser()
    ep.read_string(wheel.read(f"{info}/entry_points.txt").decode())
    assert ep.has_section("console_scripts"), "no console_scripts in the wheel"
    assert ep.get("console_scripts", "iped").strip() == "iped.cli:main"
    metadata = wheel.read(f"{info}/METADATA").decode()
    requires = {parse_requirement(line.split(":", 1)[1]).name
                for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert requires == {r.name for r in runtime_requirements()}


# --- Debian ------------------------------------------------------------------------------------


def test_debian_depends_cover_pyproject() -> None:
    _, binary = control()
    depends = relations(binary["Depends"])
    for req in runtime_requirements():
        assert req.name in DEBIAN_NAMES, f"runtime dependency {req.name!r} has no Debian name in DEBIAN_NAMES"
        deb = DEBIAN_NAMES[req.name]
        assert deb in depends, f"{req.name} ({deb}) missing from Depends in packaging/debian/control"
        for op, version in req.specs:
            assert (DEB_OPS[op], version) in depends[deb], \
                f"pyproject.toml says {req.name}{op}{version}; Depends needs {deb} ({DEB_OPS[op]} {version})"
    # and nothing stale: every python3-* package in Depends stands for a current dependency
    known = {DEBIAN_NAMES[r.name] for r in runtime_requirements()}
    stale = {p for p in depends if p.startswith("python3-")} - known
    assert not stale, f"Depends lists {sorted(stale)}, which pyproject.toml no longer requires"
    assert "${python3:Depends}" in binary["Depends"] and "${misc:Depends}" in binary["Depends"]


def test_debian_source_package() -> None:
    source, binary = control()
    build_depends = relations(source["Build-Depends"])
    for pkg in ("debhelper-compat", "dh-python", "pybuild-plugin-pyproject", "python3-all-dev", "python3-setuptools",
                "dh-sequence-installsysusers"):
        assert pkg in build_depends, f"Build-Depends lacks {pkg}"
    # the Debian setuptools must satisfy [build-system] (pybuild builds with --skip-dependency-check)
    for text in PYPROJECT["build-system"]["requires"]:
        req = parse_requirement(text)
        if req.name == "setuptools":
            for op, version in req.specs:
                assert (DEB_OPS[op], version) in build_depends["python3-setuptools"], \
                    f"[build-system] wants setuptools{op}{version}; Build-Depends needs python3-setuptools " \
                    f"({DEB_OPS[op]} {version})"
    # the C scanner (setup.py) makes the package architecture-dependent, linked against libc
    assert binary["Architecture"] == "any"
    assert "${shlibs:Depends}" in binary["Depends"]
    assert (DEBIAN / "source" / "format").read_text().strip() == "3.0 (native)"
    rules = DEBIAN / "rules"
    assert os.access(rules, os.X_OK), "packaging/debian/rules must be executable"
    assert re.search(r"^\tdh \$@ --with python3 --buildsystem=pybuild$", rules.read_text(), re.M)
    # native package: the changelog version is the project version, no Debian revision
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"iped ({PYPROJECT['project']['version']}) "), first
    copyright_text = (DEBIAN / "copyright").read_text()
    assert "License: GPL-2.0-only" in copyright_text
    lic = PYPROJECT["project"]["license"]  # PEP 639 string, or the older {text = ...} table
    assert (lic if isinstance(lic, str) else lic["text"]) == "GPL-2.0-only"


def debian_installed_sources() -> list[Path]:
    """Files of the tree that the Debian build puts into the package."""
    rules = (DEBIAN / "rules").read_text()
    m = re.search(r"^SYSTEMD_FILES = (.+)$", rules, re.M)
    assert m, "SYSTEMD_FILES not found in packaging/debian/rules"
    kinds = m.group(1).split()
    assert sorted(kinds) == ["service", "sysusers", "tmpfiles"], kinds
    assert "install -m 0644 systemd/iped.$$f debian/iped.$$f" in rules
    paths = [ROOT / "systemd" / f"iped.{k}" for k in kinds]
    for listing in ("iped.install", "iped.examples", "iped.docs"):
        for line in (DEBIAN / listing).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                path = ROOT / line.split()[0]
                paths.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return paths


def rpm_installed_sources() -> list[Path]:
    text = spec_text()
    install = text[text.index("%install"):text.index("%check")]
    paths: list[Path] = []
    for m in re.finditer(r"^install\b[^\n]*?\s((?:systemd|etc|docs|prometheus)/\S+|README\.md)\s", install, re.M):
        matches = sorted(ROOT.glob(m.group(1)))
        paths.extend(matches or [ROOT / m.group(1)])
    assert paths, "no install lines found in the spec's %install"
    return paths


@pytest.mark.parametrize("which", ["debian", "rpm"])
def test_installed_files_exist(which: str) -> None:
    paths = debian_installed_sources() if which == "debian" else rpm_installed_sources()
    for needed in ("systemd/iped.service", "systemd/iped.tmpfiles", "systemd/iped.sysusers", "etc/iped.toml",
                   "prometheus/iped-alerts.rules.yml"):
        assert ROOT / needed in paths, f"the {which} packaging does not install {needed}"
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    assert not missing, f"the {which} packaging installs files missing from the checkout: {missing}"
    assert any(p.suffix == ".pol" for p in paths), f"the {which} packaging ships no example policy"


@pytest.mark.parametrize("which", ["debian", "rpm"])
def test_the_docs_that_readme_and_messages_name_are_shipped(which: str) -> None:
    """README.md links docs/*.md and messages say "see docs/daemon.md": both packages ship every
    one of them, as docs/NAME.md beside README.md in /usr/share/doc/iped (they shipped README.md alone)."""
    named = set(re.findall(r"\bdocs/[a-z]+\.md\b", (ROOT / "README.md").read_text()))
    for source in (ROOT / "iped").rglob("*.py"):
        named |= set(re.findall(r"\bdocs/[a-z]+\.md\b", source.read_text()))
    assert "docs/daemon.md" in named and all((ROOT / n).is_file() for n in named), named
    paths = debian_installed_sources() if which == "debian" else rpm_installed_sources()
    assert not [n for n in sorted(named) if ROOT / n not in paths], f"the {which} packaging lacks some docs"
    if which == "debian":  # dh_installdocs keeps a listed directory's name: /usr/share/doc/iped/docs/
        assert "docs" in (DEBIAN / "iped.docs").read_text().split()
    else:
        assert "install -p -m 0644 docs/*.md                 %{buildroot}%{_pkgdocdir}/docs/" in spec_text()


def test_debian_conffile_and_policy_dir() -> None:
    install = (DEBIAN / "iped.install").read_text().split("\n")
    assert "etc/iped.toml etc/iped/" in install, "iped.toml must land in /etc/iped (a conffile via dh_installdeb)"
    assert "etc/iped/policies.d" in (DEBIAN / "iped.dirs").read_text().split("\n")


# --- RPM ---------------------------------------------------------------------------------------


def test_rpm_requires_cover_pyproject() -> None:
    requires = spec_requires()
    for req in runtime_requirements():
        assert req.name in requires, f"{req.name} missing from Requires: python3dist(...) in the spec"
        for op, version in req.specs:
            want = f"python3dist({req.name}) {RPM_OPS[op]} {version}"
            assert (RPM_OPS[op], version) in requires[req.name], \
                f"pyproject.toml says {req.name}{op}{version}; the spec needs Requires: {want}"
    stale = set(requires) - {r.name for r in runtime_requirements()}
    assert not stale, f"the spec requires {sorted(stale)}, which pyproject.toml no longer requires"


def test_rpm_spec_structure() -> None:
    text = spec_text()
    fields = dict(re.findall(r"^(Name|Version|License|BuildArch):\s*(\S+)\s*$", text, re.M))
    # not noarch: the C scanner (setup.py) is compiled
    assert fields == {"Name": "iped", "Version": PYPROJECT["project"]["version"], "License": "GPL-2.0-only"}
    assert "BuildRequires:  gcc" in text.splitlines()
    for line in ("%pyproject_wheel", "%pyproject_install", "%systemd_post iped.service",
                 "%systemd_preun iped.service", "%systemd_postun_with_restart iped.service",
                 "%tmpfiles_create %{_tmpfilesdir}/iped.conf", "%{_unitdir}/iped.service",
                 "%{_tmpfilesdir}/iped.conf", "%{_sysusersdir}/iped.conf",
                 "%config(noreplace) %{_sysconfdir}/iped/iped.toml", "%dir %{_sysconfdir}/iped/policies.d",
                 "%pyproject_check_import"):  # every shipped module imports: no test-only code to exclude
        assert line in text.splitlines(), f"spec lacks {line!r}"
    # the group must exist before tmpfiles.d names it
    post = text[text.index("\n%post\n"):text.index("\n%preun\n")]
    sysusers = post.find("%{_bindir}/systemd-sysusers %{_sysusersdir}/iped.conf")
    assert 0 <= sysusers < post.index("%tmpfiles_create"), "%post must apply sysusers.d before tmpfiles.d"


# --- the real Debian build (in a trixie chroot, with the lab) ---------------------------------------

@pytest.mark.lab
def test_debs_built_in_a_trixie_chroot() -> None:
    """The .debs the system-image lab installs (tests/lab/system/packages.py): iped built from the
    checkout with its Build-Depends in a trixie chroot, and python3-inotify-simple from its sdist."""
    from tests.lab.system.packages import INOTIFY_SIMPLE_VERSION, build_debs

    debs = build_debs()

    def dpkg_deb(*args: str) -> str:
        return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=1800).stdout

    contents = dpkg_deb("-c", str(debs.iped))
    for path in ("./etc/iped/iped.toml", "./etc/iped/policies.d/", "./usr/lib/systemd/system/iped.service",
                 "./usr/lib/tmpfiles.d/iped.conf", "./usr/lib/sysusers.d/iped.conf", "./usr/bin/iped",
                 "/dist-packages/iped/cli.py", "/dist-packages/iped/py.typed",
                 # compiled for trixie's Python, not the host's
                 "/dist-packages/iped/audit/_scan.cpython-313-x86_64-linux-gnu.so",
                 # generated from the argparse table and the settings (iped/docgen.py)
                 "./usr/share/man/man8/iped.8.gz", "./usr/share/man/man5/iped.toml.5.gz",
                 "./usr/share/bash-completion/completions/iped", "./usr/share/zsh/vendor-completions/_iped"):
        assert path in contents, f"{path} not in {debs.iped.name}"
    assert "/dist-packages/iped/lab" not in contents and "/dist-packages/tests" not in contents, contents
    assert dpkg_deb("-I", str(debs.iped), "conffiles").split() == ["/etc/iped/iped.toml"]
    depends = dpkg_deb("-f", str(debs.iped), "Depends")
    assert "python3-pydantic (>= 2.6)" in depends and "python3-inotify-simple (>= 1.3.5)" in depends
    assert dpkg_deb("-f", str(debs.inotify_simple), "Version").strip().startswith(INOTIFY_SIMPLE_VERSION)
    assert "/dist-packages/inotify_simple.py" in dpkg_deb("-c", str(debs.inotify_simple))
    upgrade = dpkg_deb("-f", str(debs.iped_upgrade), "Version").strip()
    assert subprocess.run(["dpkg", "--compare-versions", upgrade, "gt", PYPROJECT["project"]["version"]],
                          check=False, timeout=1800).returncode == 0


@pytest.mark.lab
def test_lintian_is_clean_on_the_built_debs() -> None:
    """lintian (trixie's, in the build chroot, on every .deb built there): no error and no warning;
    an override needs its written reason in debian/*.lintian-overrides."""
    from tests.lab.system.packages import build_debs

    report = build_debs().iped.parent / "lintian.txt"
    text = report.read_text()
    findings = [line for line in text.splitlines() if re.match(r"[EW]: ", line)]
    assert not findings, "\n".join(findings)
    assert "command not found" not in text and "Traceback" not in text, text
    for overrides in DEBIAN.glob("*.lintian-overrides"):
        for line in overrides.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                before = overrides.read_text().split(line)[0].rstrip().splitlines()
                assert before and before[-1].startswith("#"), f"{overrides.name}: '{line}' has no reason above it"


def test_srpm_builds_and_rpmlint_is_clean(tmp_path: Path) -> None:
    """rpmbuild -bs (Debian's rpm) and rpmlint on the spec and the SRPM; the binary RPM needs
    Fedora's pyproject-rpm-macros and is not built (packaging/README.md)."""
    from tests.lab.system.packages import SPEC, build_srpm, rpmlint

    srpm = build_srpm(tmp_path)
    listing = subprocess.run(["rpm", "-qpl", str(srpm)], capture_output=True, text=True, check=True,
                             timeout=1800).stdout.split()
    assert sorted(listing) == [f"iped-{PYPROJECT['project']['version']}.tar.gz", "iped.spec"]
    lint = rpmlint(SPEC, srpm)
    assert lint.returncode == 0 and " 0 errors, 0 warnings" in lint.stdout, lint.stdout + lint.stderr
