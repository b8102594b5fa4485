#!/usr/bin/env bash
# One door for a fresh Debian machine: install what iped needs (apt packages, a venv in the
# checkout), then run the daemon on the emulator or the whole test suite.
#   packaging/dev.sh run    the daemon in the foreground, emulator backend, example config from etc/
#   packaging/dev.sh test   ruff, mypy --strict, pytest (unit, end-to-end and the QEMU lab) with a branch-coverage report
#   packaging/dev.sh setup  only install
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv"

# Build deps of systemd-python and the C scanner, what the lab boots real IPE kernels with, and
# test tools (libauparse and auditd's ausearch for the audit benchmarks, systemd-journal-remote for
# real journal files; the test suite needs neither of the first two).
# The system-image lab (tests/lab/system) builds the .debs and a trixie root filesystem with
# mmdebstrap, the ext4 image with mkfs.ext4 and reads it back with debugfs (e2fsprogs); the
# packaging tests build the SRPM with rpmbuild (rpm) and lint it (rpmlint); the alert rules are
# checked with promtool (prometheus), the Puppet example with puppet apply (puppet-agent);
# tests/project/test_manual.py renders the man pages (man-db) and loads the zsh completion (zsh);
# tests/daemon/test_initramfs.py runs the init-bottom script with klibc's tools (klibc-utils), as
# an initramfs-tools image without busybox has them.
apt_packages=(
    python3 python3-venv python3-dev gcc pkg-config libsystemd-dev
    openssl qemu-system-x86 ovmf busybox-static xz-utils cpio
    cryptsetup-bin fsverity keyutils e2fsprogs python3-audit auditd systemd-journal-remote
    mmdebstrap rpm rpmlint prometheus puppet-agent man-db zsh klibc-utils
)

install_apt() {
    local missing=()
    for p in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "+ apt-get install ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_venv() {
    local stamp="$venv/.iped-installed"
    if [ ! -x "$venv/bin/python" ]; then
        echo "+ python3 -m venv $venv" >&2
        python3 -m venv "$venv"
    fi
    # (re)install when the package metadata or the C helpers changed: pip install -e builds
    # iped/audit/_scan.*.so in place (from _scan.c, _netlink.c and _scan.h)
    if [ ! -f "$stamp" ] || [ "$top/pyproject.toml" -nt "$stamp" ] || [ "$top/setup.py" -nt "$stamp" ] ||
        [ "$top/iped/audit/_scan.c" -nt "$stamp" ] || [ "$top/iped/audit/_netlink.c" -nt "$stamp" ] ||
        [ "$top/iped/audit/_scan.h" -nt "$stamp" ] || ! compgen -G "$top/iped/audit/_scan.*.so" >/dev/null; then
        echo "+ pip install -e .[test]" >&2
        "$venv/bin/pip" install -q --upgrade pip
        "$venv/bin/pip" install -q -e "$top[test]"
        touch "$stamp"
    fi
}

install_apt
install_venv
export PATH="$venv/bin:$PATH"
cd "$top"

case "${1:-}" in
    setup) ;;
    run)
        shift
        exec iped daemon --dev "$@"
        ;;
    test)
        shift
        echo "+ ruff check" >&2
        ruff check iped tests benchmarks
        echo "+ mypy --strict" >&2
        mypy
        echo "+ pytest (with a branch-coverage report of iped, no threshold)" >&2
        exec python -m pytest -m "lab or not lab" --cov=iped --cov-branch --cov-report=term:skip-covered "$@"
        ;;
    *)
        echo "usage: packaging/dev.sh run|test|setup" >&2
        exit 2
        ;;
esac
