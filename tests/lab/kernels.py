"""Debian's stock IPE kernels: pick the newest by apt query, download once, cache.

Two series matter to the emulator: 6.12 (the first IPE release, what bookworm ships as
``linux-image-6.12.*-amd64-unsigned``) and 7.x (sid; newest audit format and hooks).  Versions
are never hard-coded: Debian replaces kernel packages often and the lab must follow them, so
each call asks apt what is newest and reuses the extracted tree when it is already cached.

Sid is only ever used through a private apt configuration (sources list, lists and package
cache under the lab cache): the host's /etc/apt and its package state stay untouched.
"""

from __future__ import annotations

import fcntl
import functools
import json
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tests.lab import SERIES, LabError, cache_dir, run

#: Refresh sid's package lists at most this often; within a day the lab keeps its kernel.
SID_LISTS_MAX_AGE = 24 * 3600.0
_HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
_FALLBACK_MIRROR = "http://deb.debian.org/debian"
_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class Kernel:
    """One extracted kernel: where its image, modules and config live."""

    series: str
    #: ``uname -r`` of the kernel, e.g. ``6.12.57+deb12-amd64``.
    release: str
    #: Debian package version, e.g. ``6.12.57-1~deb12u1``.
    version: str
    #: Every .deb that was extracted into :attr:`root`.
    packages: tuple[str, ...]
    root: Path
    vmlinuz: Path
    #: ``.../lib/modules/<release>`` (``/usr/lib/...`` on 7.x).
    modules_dir: Path
    #: The kernel's ``.config``: string values unquoted, ``# ... is not set`` as ``"n"``.
    config: Mapping[str, str] = field(compare=False, repr=False)

    def enabled(self, option: str) -> bool:
        """True for a ``=y`` or ``=m`` option (``option`` with or without ``CONFIG_``)."""
        key = option if option.startswith("CONFIG_") else f"CONFIG_{option}"
        return self.config.get(key) in ("y", "m")


@dataclass(frozen=True)
class _Series:
    """How to find one series in apt: which sources, which package names."""

    name: str
    #: ``None`` = the host's own apt sources; otherwise a suite fetched privately.
    suite: str | None
    #: Broad ``apt-cache search --names-only`` pattern (apt's regex dialect).
    search: str
    #: Exact package-name match; group 1 is the kernel release.
    pattern: re.Pattern[str]


_SERIES: dict[str, _Series] = {
    "6.12": _Series(
        "6.12", None, r"^linux-image-6\.12\..*-amd64-unsigned$",
        re.compile(r"linux-image-(6\.12\.[^-\s]+-amd64)-unsigned"),
    ),
    "7": _Series(
        "7", "sid", r"^linux-image-7\..*-amd64$", re.compile(r"linux-image-(7\.[^-\s]+-amd64)"),
    ),
}


def get_kernel(series: str) -> Kernel:
    """The newest kernel of ``series`` ("6.12" or "7"), downloaded and extracted if needed.

    Raises :class:`LabError` saying what failed when apt cannot provide it.
    """
    spec = _SERIES.get(series)
    if spec is None:
        raise LabError(f"unknown kernel series {series!r}; known: {', '.join(SERIES)}")
    store = cache_dir() / "kernels"
    store.mkdir(exist_ok=True)
    with _locked(store / ".lock"):
        apt = _apt_options(spec)
        package, version = _newest(spec, apt)
        match = spec.pattern.fullmatch(package)
        assert match is not None
        release = match.group(1)
        root = store / release
        meta = _read_meta(root)
        if meta is None or meta.get("version") != version:
            _install(spec, apt, package, version=version, release=release, root=root)
            _prune(store, series, keep=release)
        return load(root)


def load(root: Path) -> Kernel:
    """A kernel previously extracted by :func:`get_kernel` (no network)."""
    meta = _read_meta(root)
    if meta is None:
        raise LabError(f"{root} is not an extracted lab kernel (no kernel.json)")
    release = str(meta["release"])
    modules = next((d for d in (root / "lib/modules" / release, root / "usr/lib/modules" / release)
                    if (d / "kernel").is_dir()), None)
    vmlinuz = _first_file(root / "boot" / f"vmlinuz-{release}", root / "usr/lib/modules" / release / "vmlinuz",
                          root / "lib/modules" / release / "vmlinuz")
    config = _first_file(root / "boot" / f"config-{release}", root / "usr/lib/modules" / release / "config",
                         root / "lib/modules" / release / "config")
    if modules is None or vmlinuz is None or config is None:
        raise LabError(f"kernel {release} in {root} lacks vmlinuz, modules or config")
    return Kernel(
        series=str(meta["series"]), release=release, version=str(meta["version"]),
        packages=tuple(str(p) for p in meta["packages"]), root=root, vmlinuz=vmlinuz,
        modules_dir=modules, config=MappingProxyType(parse_config(config.read_text())),
    )


def parse_config(text: str) -> dict[str, str]:
    """Parse a kernel ``.config``: ``CONFIG_X=y`` -> ``{"CONFIG_X": "y"}``.

    Quoted strings lose their quotes (``CONFIG_LSM="a,b"`` -> ``a,b``) and
    ``# CONFIG_X is not set`` becomes ``"n"`` so that "off" is distinguishable from "absent".
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        unset = re.fullmatch(r"# (CONFIG_\w+) is not set", line.strip())
        if unset:
            out[unset.group(1)] = "n"
            continue
        if not line.startswith("CONFIG_") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key] = value
    return out


# --------------------------------------------------------------------------- apt plumbing


def _apt_options(spec: _Series) -> tuple[str, ...]:
    """``-o`` options selecting the apt configuration for ``spec`` (refreshing sid's lists)."""
    if spec.suite is None:
        return ()
    base = cache_dir() / f"apt-{spec.suite}"
    lists, pkgcache = base / "lists", base / "cache"
    for d in (lists / "partial", pkgcache / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    sources = base / "sources.list"
    sources.write_text(f"deb [signed-by={_KEYRING}] {_host_mirror()} {spec.suite} main\n")
    opts = (
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={pkgcache}",
        "-o", "Dir::State::status=/dev/null",
    )
    stamp = base / "updated"
    fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < SID_LISTS_MAX_AGE
    if not fresh:
        done = run(["apt-get", *opts, "-q", "update"], check=False, timeout=600)
        if done.returncode == 0 and "Err:" not in done.stdout + done.stderr:
            stamp.touch()
        elif not any(lists.glob("*_Packages*")):
            raise LabError(
                f"cannot download the {spec.name} kernel: 'apt-get update' of {spec.suite} failed\n"
                + (done.stderr or done.stdout)[-2000:]
            )
    return opts


def _host_mirror() -> str:
    """The host's Debian mirror (first ``URIs:`` serving bookworm), reused for sid."""
    try:
        text = _HOST_SOURCES.read_text()
    except OSError:
        return _FALLBACK_MIRROR
    for stanza in text.split("\n\n"):
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in
            (ln.partition(":") for ln in stanza.splitlines() if ln and not ln.startswith(("#", " ")))
        )
        uri = fields.get("URIs", "").split()
        if uri and "-security" not in uri[0] and "debian" in uri[0]:
            return uri[0].rstrip("/")
    return _FALLBACK_MIRROR


def _newest(spec: _Series, apt: tuple[str, ...]) -> tuple[str, str]:
    """(package, version) of the newest kernel package of ``spec`` that apt offers."""
    names = _search(spec, apt)
    if not names and spec.suite is None:
        # The host's lists are missing or too old to know any 6.12 kernel: refresh them
        # (this is ordinary apt state, not configuration; /etc/apt is not touched).
        run(["apt-get", "-q", "update"], what=f"cannot download the {spec.name} kernel: apt-get update",
            timeout=600)
        names = _search(spec, apt)
    if not names:
        raise LabError(f"cannot download the {spec.name} kernel: apt knows no package matching {spec.search}")
    versions = _candidates(apt, names)
    if not versions:
        raise LabError(f"cannot download the {spec.name} kernel: no installable candidate among {names}")
    best = max(versions, key=lambda n: functools.cmp_to_key(compare_versions)(versions[n]))
    return best, versions[best]


def _search(spec: _Series, apt: tuple[str, ...]) -> list[str]:
    out = run(["apt-cache", *apt, "search", "--names-only", spec.search],
              what=f"querying apt for the {spec.name} kernel").stdout
    names = (line.split(" - ", 1)[0].strip() for line in out.splitlines())
    return [n for n in names if spec.pattern.fullmatch(n)]


def _show(apt: tuple[str, ...], names: list[str]) -> list[dict[str, str]]:
    """``apt-cache show --no-all-versions`` records as dicts (continuation lines dropped)."""
    out = run(["apt-cache", *apt, "show", "--no-all-versions", *names], what="apt-cache show").stdout
    records = []
    for block in out.split("\n\n"):
        rec: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                rec[key] = value.strip()
        if "Package" in rec:
            records.append(rec)
    return records


def _candidates(apt: tuple[str, ...], names: list[str]) -> dict[str, str]:
    return {r["Package"]: r["Version"] for r in _show(apt, names) if "Version" in r}


def _install(spec: _Series, apt: tuple[str, ...], package: str, *, version: str, release: str, root: Path) -> None:
    """Download ``package`` plus its same-release dependencies and extract them to ``root``.

    In 7.x ``linux-image-<rel>`` is an empty metapackage; the image, the modules and the
    config/modules.builtin live in its dependencies ``linux-binary-<rel>``,
    ``linux-modules-<rel>`` and ``linux-base-<rel>``. Taking every dependency whose name
    ends in ``-<rel>`` covers both layouts without naming them.
    """
    (rec,) = _show(apt, [package])
    deps = [alt.split("(")[0].strip() for dep in rec.get("Depends", "").split(",") for alt in dep.split("|")]
    packages = [package, *sorted({d for d in deps if d.endswith(f"-{release}")})]
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    debs = work / "debs"
    debs.mkdir(parents=True)
    done = run(["apt-get", *apt, "-q", "-o", "APT::Sandbox::User=root", "download", *packages],
               cwd=debs, check=False, timeout=1800)
    files = sorted(debs.glob("*.deb"))
    if done.returncode != 0 or len(files) != len(packages):
        shutil.rmtree(work, ignore_errors=True)
        raise LabError(
            f"cannot download the {spec.name} kernel {release} ({', '.join(packages)}): apt-get download failed\n"
            + (done.stderr or done.stdout)[-2000:]
        )
    tree = work / "tree"
    for deb in files:
        run(["dpkg-deb", "-x", deb, tree], what=f"extracting {deb.name}")
    (tree / "kernel.json").write_text(json.dumps(
        {"series": spec.name, "release": release, "version": version, "packages": packages}, indent=1))
    kernel = load(tree)
    if not kernel.enabled("SECURITY_IPE"):
        raise LabError(f"kernel {release} was built without CONFIG_SECURITY_IPE")
    shutil.rmtree(root, ignore_errors=True)
    tree.rename(root)
    shutil.rmtree(work, ignore_errors=True)


def _prune(store: Path, series: str, keep: str) -> None:
    """Drop older extracted kernels of ``series``: only the newest is ever booted."""
    for other in store.iterdir():
        meta = _read_meta(other)
        if other.name != keep and meta is not None and meta.get("series") == series:
            shutil.rmtree(other, ignore_errors=True)


def _read_meta(root: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((root / "kernel.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _first_file(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise cache updates between concurrent lab sessions on one machine."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- Debian versions


def compare_versions(a: str, b: str) -> int:
    """dpkg's version ordering (``epoch:upstream-revision``, ``~`` sorts before anything)."""

    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    while a or b:
        na, nb = _lead(r"[^0-9]*", a), _lead(r"[^0-9]*", b)
        for i in range(max(len(na), len(nb))):
            oa = _order(na[i]) if i < len(na) else 0
            ob = _order(nb[i]) if i < len(nb) else 0
            if oa != ob:
                return -1 if oa < ob else 1
        a, b = a[len(na):], b[len(nb):]
        da, db = _lead(r"[0-9]*", a), _lead(r"[0-9]*", b)
        if int(da or 0) != int(db or 0):
            return -1 if int(da or 0) < int(db or 0) else 1
        a, b = a[len(da):], b[len(db):]
    return 0


def _lead(pattern: str, text: str) -> str:
    match = re.match(pattern, text)
    return match.group() if match else ""
