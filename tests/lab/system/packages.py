"""The packages the system image installs, built the way a distribution builds them.

One ``mmdebstrap --variant=buildd`` run of :data:`~tests.lab.system.SUITE` installs each source
package's Build-Depends (``apt-get build-dep ./``) and runs ``dpkg-buildpackage`` for:

* ``python3-inotify-simple`` from the PyPI sdist (pinned by version and SHA-256) with the
  ``debian/`` directory in ``packaging/inotify-simple``: Debian does not ship it and iped
  depends on it;
* ``iped`` from the checkout with ``packaging/debian``, so ``iped.audit._scan`` is compiled for
  trixie's Python;
* an "upgrade" copy of the iped ``.deb`` with a higher version (repacked, same files), for the
  upgrade-over-a-running-service check.

The RPM side (:func:`build_srpm`, :func:`rpmlint`) builds the source RPM with Debian's
``rpmbuild`` and lints the spec and the SRPM; the binary RPM needs Fedora's
pyproject-rpm-macros and is not built here (packaging/README.md).

The result is cached under ``<lab cache>/system/debs-<hash>`` where the hash covers every
input file, the sdist and the build script; any change rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tests.lab import Completed, LabError, run
from tests.lab.system import CHECKOUT, MIRROR, SUITE, build_failed, system_cache, tree_digest

INOTIFY_SIMPLE_VERSION = "2.0.1"
INOTIFY_SIMPLE_SHA256 = "f010bbbd8283bd71a9f4eb2de94765804ede24bd47320b0e6ef4136e541cdc2c"
#: Appended to iped's version for the upgrade package (sorts above the plain version).
UPGRADE_SUFFIX = "+lab1"
#: Files of the checkout a source package is made of (packaging/debian becomes debian/).
SOURCE_FILES = ("pyproject.toml", "setup.py", "README.md")
SOURCE_DIRS = ("iped", "systemd", "etc", "docs", "prometheus", "packaging/generated", "initramfs-tools")
SPEC = CHECKOUT / "packaging" / "rpm" / "iped.spec"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info")

BUILD_SCRIPT = f"""#!/bin/sh
# Runs inside the trixie build chroot (written by tests/lab/system/packages.py).
set -eu
export DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
cd /build
mkdir -p out
sdist=inotify_simple-{INOTIFY_SIMPLE_VERSION}
tar -xzf $sdist.tar.gz
cp $sdist.tar.gz inotify-simple_{INOTIFY_SIMPLE_VERSION}.orig.tar.gz
cp -r inotify-simple-debian $sdist/debian
for src in $sdist iped; do
    (cd $src && apt-get build-dep -y -q ./ >/dev/null && dpkg-buildpackage -us -uc -b)
done
mv ./*.deb out/
# lintian on the built packages, kept beside them (tests/project/test_packaging.py wants no E: or W: line)
apt-get install -y -q --no-install-recommends lintian >/dev/null
lintian --tag-display-limit 0 out/*.deb > out/lintian.txt 2>&1 || true
# the upgrade: the same files under a higher version, as a rebuilt package would be
deb=$(ls out/iped_*.deb)
dpkg-deb -R "$deb" upgrade
sed -i 's/^Version: \\(.*\\)$/Version: \\1{UPGRADE_SUFFIX}/' upgrade/DEBIAN/control
dpkg-deb -b upgrade out/ >/dev/null
ls -l out
"""


@dataclass(frozen=True)
class Debs:
    """The built packages (all in one cache directory)."""

    iped: Path
    iped_upgrade: Path
    inotify_simple: Path

    @property
    def installed_together(self) -> tuple[Path, Path]:
        """What ``apt install`` gets: iped and the dependency Debian lacks."""
        return (self.iped, self.inotify_simple)


def build_debs() -> Debs:
    """The cached ``.deb`` files for the current checkout, built first if the inputs changed."""
    sdist = inotify_simple_sdist()
    with tempfile.TemporaryDirectory(prefix="iped-lab-debsrc-") as tmp:
        stage = Path(tmp) / "build"
        _stage_sources(stage, sdist)
        key = tree_digest((p for p in stage.rglob("*") if p.is_file()), stage, "debs-1")[:16]
        target = system_cache() / f"debs-{key}"
        if not target.is_dir():
            _build(stage, target)
            for old in target.parent.glob("debs-*"):
                if old.is_dir() and old != target and "." not in old.name:
                    shutil.rmtree(old)
    return _find_debs(target)


def inotify_simple_sdist() -> Path:
    """The pinned PyPI sdist of inotify_simple (downloaded once, checked by SHA-256)."""
    name = f"inotify_simple-{INOTIFY_SIMPLE_VERSION}.tar.gz"
    target = system_cache() / "sdist" / name
    if not target.is_file():
        target.parent.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="iped-lab-sdist-") as tmp:
            run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                 f"inotify_simple=={INOTIFY_SIMPLE_VERSION}", "-d", tmp],
                timeout=300, what="downloading the inotify_simple sdist from PyPI")
            Path(tmp, name).replace(target)
    actual = hashlib.sha256(target.read_bytes()).hexdigest()
    if actual != INOTIFY_SIMPLE_SHA256:
        target.unlink()
        raise LabError(f"{name}: SHA-256 {actual}, expected {INOTIFY_SIMPLE_SHA256} (download corrupted or replaced)")
    return target


def build_srpm(workdir: Path) -> Path:
    """``rpmbuild -bs`` of packaging/rpm/iped.spec with a source tarball of the checkout."""
    version = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]
    top = workdir / "rpmbuild"
    (top / "SOURCES").mkdir(parents=True)
    _stage_iped(workdir / f"iped-{version}")
    run(["tar", "-czf", top / "SOURCES" / f"iped-{version}.tar.gz", "-C", workdir, f"iped-{version}"],
        what="packing the RPM source tarball")
    # --nodeps: the BuildRequires are Fedora packages; the SRPM does not need them
    run(["rpmbuild", "-bs", "--nodeps", "--define", f"_topdir {top}", SPEC], what="rpmbuild -bs")
    (srpm,) = (top / "SRPMS").glob("iped-*.src.rpm")
    return srpm


def rpmlint(*paths: Path) -> Completed:
    """rpmlint with packaging/rpm/rpmlint.toml (the Fedora-irrelevant findings filtered)."""
    return run(["rpmlint", "-c", SPEC.parent / "rpmlint.toml", *paths], check=False, what="rpmlint")


def _stage_iped(iped: Path) -> None:
    """The files of the checkout an iped source package is made of."""
    iped.mkdir(parents=True)
    for name in SOURCE_FILES:
        shutil.copy2(CHECKOUT / name, iped / name)
    for name in SOURCE_DIRS:
        shutil.copytree(CHECKOUT / name, iped / name, ignore=_IGNORED)


def _stage_sources(stage: Path, sdist: Path) -> None:
    """``stage`` = /build in the chroot: iped's source package, the sdist and its debian/ dir."""
    iped = stage / "iped"
    _stage_iped(iped)
    shutil.copytree(CHECKOUT / "packaging" / "debian", iped / "debian")
    shutil.copytree(CHECKOUT / "packaging" / "inotify-simple" / "debian", stage / "inotify-simple-debian")
    shutil.copy2(sdist, stage / sdist.name)
    (stage / "build.sh").write_text(BUILD_SCRIPT)


def _build(stage: Path, target: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        out = work / "out"
        out.mkdir()
        log = work / "build.log"
        result = run(
            ["mmdebstrap", "--variant=buildd", "--quiet",
             f"--customize-hook=copy-in {stage} /",
             '--customize-hook=chroot "$1" sh /build/build.sh',
             f"--customize-hook=sync-out /build/out {out}",
             SUITE, "/dev/null", MIRROR],
            check=False, timeout=1800, output=log, what="building the .deb files in a trixie chroot",
        )
        if result.returncode != 0:
            raise build_failed(log, target.parent / "debs-failed.log", "mmdebstrap/dpkg-buildpackage",
                               result.returncode)
        shutil.copy2(log, out / "build.log")
        try:
            os.replace(out, target)
        except OSError:
            if not target.is_dir():  # else another process published the same build first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _find_debs(directory: Path) -> Debs:
    def one(pattern: str, without: str = "\0") -> Path:
        found = sorted(p for p in directory.glob(pattern) if without not in p.name)
        if len(found) != 1:
            raise LabError(f"{directory}: expected one {pattern}, found {[p.name for p in found]}")
        return found[0]

    return Debs(
        iped=one("iped_*.deb", without=UPGRADE_SUFFIX),
        iped_upgrade=one(f"iped_*{UPGRADE_SUFFIX}_*.deb"),
        inotify_simple=one("python3-inotify-simple_*.deb"),
    )
