"""Build the daemon's pieces from settings: dev-mode settings, backend, plan log, reconciler.

Shared by ``iped daemon``, ``iped apply --once``, ``iped plan`` (without a daemon) and
``iped rollback``, so they all see the same declared state and backend.
"""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path

import iped
from iped.backend import Backend, select_backend
from iped.daemon.client import dev_runtime_dir, dev_socket_path
from iped.daemon.log import Reporter
from iped.daemon.planlog import PlanLog
from iped.daemon.reconcile import Reconciler
from iped.errors import USAGE, UserError
from iped.paths import DEFAULT_CONFIG, NO_CONFIG_HINT
from iped.settings import BackendKind, Settings

#: the example policy ``--dev`` declares active when the checkout's config declares none
DEV_ACTIVE = "allow_all"


def checkout_etc() -> Path:
    """The example configuration shipped in the source checkout (``etc/``)."""
    return Path(iped.__file__).resolve().parent.parent / "etc"


def load(config: Path) -> Settings:
    from iped.config import load_settings

    return load_settings(config)


def load_for_command(config: str | None, *, dev: bool = False) -> Settings:
    """The settings of a command-line verb (``--config``, default /etc/iped/iped.toml; ``--dev``:
    :func:`dev_settings`). Raises UserError listing why they cannot be had: every problem of an
    invalid configuration, one per line, each with its file:line."""
    from iped.config import ConfigError

    if not dev and config is None and not Path(DEFAULT_CONFIG).exists():
        raise UserError(f"{DEFAULT_CONFIG}: ENOENT: no configuration file (iped is not set up on this host)",
                        hint=NO_CONFIG_HINT)
    if not dev and config is not None:
        try:  # as status and reload say it: the command line named a file that cannot be read
            with open(config, "rb"):
                pass
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, "error")
            raise UserError(f"--config {config}: {name}: {e.strerror or e}", code=USAGE) from None
    try:
        if dev:
            return dev_settings(Path(config) if config else None)
        return load(Path(config or DEFAULT_CONFIG))
    except ConfigError as e:
        raise UserError("\n".join(str(p) for p in e.problems)) from None
    except FileNotFoundError as e:
        raise UserError(str(e)) from None


def dev_settings(config: Path | None = None, workdir: Path | None = None) -> Settings:
    """``--dev``: the checkout's example config and policies, emulator backend, throw-away state.

    With the checkout's own iped.toml, which leaves ``active`` unset as a fresh install should,
    the example policy :data:`DEV_ACTIVE` is declared active.

    State and the dev signing key go to a fresh temp dir; the control socket to the well-known
    :func:`dev_socket_path` so ``iped status`` finds it without arguments.
    Raises ConfigError (invalid example config) or FileNotFoundError (not a checkout).
    """
    etc = checkout_etc()
    config = config or etc / "iped.toml"
    if not config.exists():
        raise FileNotFoundError(f"--dev needs the source checkout's {config}")
    base = load(config)
    import tempfile  # --dev only: tempfile pulls shutil and random into every start

    work = workdir or Path(tempfile.mkdtemp(prefix="iped-dev-"))
    from iped.daemon.devkey import ensure_dev_key

    key, cert = ensure_dev_key(work / "keys")
    control_socket = _dev_control_socket(work)
    policies_dir = base.policies.dir if base.policies.dir.is_dir() else etc / "policies.d"
    if config == etc / "iped.toml":
        policies_dir = etc / "policies.d"
    return Settings(
        policies=dataclasses.replace(base.policies, dir=policies_dir, active=_dev_active(config, base.policies.active),
                                     signing_key=key, signing_cert=cert,
                                     trust_anchors=tuple(p for p in base.policies.trust_anchors if p.exists())),
        daemon=dataclasses.replace(base.daemon, backend=BackendKind.EMULATOR, state_dir=work / "state",
                                   control_socket=control_socket, control_group=None),
        audit=dataclasses.replace(base.audit, prometheus_textfile=None),
        path=config,
        dev=True,
    )


def _dev_control_socket(work: Path) -> Path:
    """The well-known :func:`dev_socket_path` when its directory is this user's own; else (another
    user created it first: a socket there could be swapped, a lock there held) one in the private
    ``work`` dir, said on stderr, so that no other user can answer for or stop this daemon."""
    import os
    import stat
    import sys

    from iped.trustpath import UntrustedPathError, check_path

    runtime = Path(dev_runtime_dir())
    try:
        try:
            runtime.mkdir(mode=0o700)
        except FileExistsError:
            st = os.lstat(runtime)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                what = "is not a directory" if not stat.S_ISDIR(st.st_mode) else f"belongs to uid {st.st_uid}"
                raise UntrustedPathError(os.fspath(runtime), f"{what}, not to this user (uid {os.geteuid()})",
                                         f"remove it if you did not create it: rm -r {runtime}") from None
        check_path(runtime, "the dev daemon's control socket")
    except UntrustedPathError as e:
        private = work / "run"
        private.mkdir(mode=0o700, exist_ok=True)
        print(f"iped: warning: not using {e}; the control socket is {private / 'control.sock'} instead "
              "('iped status --socket' it)", file=sys.stderr, flush=True)
        return private / "control.sock"
    return Path(dev_socket_path())


def _dev_active(config: Path, declared: str | None) -> str | None:
    """The checkout's config declares no active policy (a fresh install changes nothing); the
    demo activates the example one."""
    return declared or (DEV_ACTIVE if config == checkout_etc() / "iped.toml" else None)


def dev_reloader(settings: Settings) -> Settings:
    """Re-read the dev config on reload, keeping the dev overrides."""
    assert settings.path is not None
    fresh = load(settings.path)
    return dataclasses.replace(
        settings,
        policies=dataclasses.replace(fresh.policies, dir=settings.policies.dir,
                                     active=_dev_active(settings.path, fresh.policies.active),
                                     signing_key=settings.policies.signing_key,
                                     signing_cert=settings.policies.signing_cert,
                                     trust_anchors=settings.policies.trust_anchors),
    )


def configured_certs(settings: Settings) -> list[bytes]:
    """The certificates the emulator's keyring holds: the trust anchors and the local signing cert,
    taken under the same owner/mode rule as the daemon's signing (:mod:`iped.trustpath`)."""
    from iped.trustpath import read_trusted

    pol = settings.policies
    certs = [read_trusted(p, "a trust anchor") for p in pol.trust_anchors if p.exists()]
    if pol.signing_cert is not None and pol.signing_cert.exists():
        certs.append(read_trusted(pol.signing_cert, "the signing certificate"))
    return certs


def make_backend(settings: Settings) -> Backend:
    """The configured backend; the emulator trusts the anchors and the local signing cert."""
    from iped.trustpath import error_line

    try:
        certs = configured_certs(settings)
    except OSError as e:
        raise UserError(error_line(e)) from None
    return select_backend(settings, certs)


def trust_configured_certs(backend: Backend, settings: Settings) -> None:
    """On the emulator, add the certificates ``settings`` configures to its keyring (nothing on a
    kernel, whose keyrings iped never changes). Called on every reload of the configuration, so
    a signing_cert added to a running daemon's iped.toml is trusted by the plan and the reload
    alike, as at start; certificates are never removed (as from a kernel's keyring). A file that
    cannot be read, parsed or trusted (owner/mode) is skipped: the load it would verify fails with
    ENOKEY and says so."""
    from iped.backend import EmulatorBackend
    from iped.trustpath import read_trusted

    if not isinstance(backend, EmulatorBackend):
        return
    for path in (*settings.policies.trust_anchors, settings.policies.signing_cert):
        if path is None:
            continue
        try:
            backend.emulator.trust(read_trusted(path, "a trust anchor"))
        except (OSError, ValueError):
            continue


def untrusted_paths(settings: Settings, plan_log: PlanLog) -> list[str]:
    """Why each path the daemon keeps its own authority in cannot be trusted (none: empty): the
    state_dir (its rolled-forward policies are declarations, its texts what rollback re-signs)
    and the Prometheus textfile dir (the fleet's view of this host). One line each."""
    from iped.trustpath import UntrustedPathError, check_path

    checks: list[tuple[Path, str, bool]] = [
        (plan_log.root, "the state_dir", False), (plan_log.plans, "the plan records", False),
        (plan_log.texts, "the policy texts rollback re-signs", False),
        (plan_log.rolled_forward, "declared (rolled-forward) policies", False)]
    if settings.audit.prometheus_textfile is not None:  # the collector's user may own it
        checks.append((settings.audit.prometheus_textfile.parent, "the daemon's metrics", True))
    problems: dict[str, str] = {}  # by the path at fault: a state_dir others can write is one problem
    for path, what, any_owner in checks:
        try:
            check_path(path, what, any_owner=any_owner)
        except UntrustedPathError as e:
            problems.setdefault(e.filename, str(e))
        except OSError:
            continue  # not there (yet): the daemon creates it, or says so when it writes
    return list(problems.values())


def make_reconciler(settings: Settings, reporter: Reporter, backend: Backend | None = None, *,
                    writes_state: bool = True) -> Reconciler:
    """The reconciler of ``settings``; UserError when the forced backend is not there, or when
    the state dir cannot take the records of what it does (``writes_state``; checked before the
    kernel is touched, so an unusable state dir is never mistaken for a kernel error)."""
    plan_log = PlanLog(settings.daemon.state_dir, settings.daemon.history)
    problems: list[str] = []
    if writes_state:
        try:
            plan_log.ensure()  # (creates what is missing; nothing in it is read or removed before the check)
            problems = untrusted_paths(settings, plan_log)
            if not problems:
                plan_log.prepare()
        except OSError as e:
            from iped.errnos import errno_name

            raise UserError(f"state_dir {plan_log.root}: {errno_name(e.errno or errno.EIO)}: {e.strerror or e}"
                           f"{f' ({e.filename})' if e.filename else ''}: plan records and rollback history "
                           "live there", hint="make it a writable directory or set [daemon] state_dir") from None
    if problems:
        raise UserError("\n".join(problems))
    try:
        backend = backend or make_backend(settings)
    except RuntimeError as e:  # backend = kernel without IPE
        raise UserError(str(e)) from None
    return Reconciler(settings, backend, plan_log, reporter)
