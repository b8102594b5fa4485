"""Build the daemon's pieces from settings: dev-mode settings, backend, plan log, reconciler.

Shared by ``iped daemon``, ``iped apply --once``, ``iped plan`` (without a daemon) and
``iped rollback``, so they all see the same declared state and backend.
"""

from __future__ import annotations

import dataclasses
import errno
import tempfile
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
    work = workdir or Path(tempfile.mkdtemp(prefix="iped-dev-"))
    from iped.daemon.devkey import ensure_dev_key

    key, cert = ensure_dev_key(work / "keys")
    runtime = Path(dev_runtime_dir())
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    policies_dir = base.policies.dir if base.policies.dir.is_dir() else etc / "policies.d"
    if config == etc / "iped.toml":
        policies_dir = etc / "policies.d"
    return Settings(
        policies=dataclasses.replace(base.policies, dir=policies_dir, active=_dev_active(config, base.policies.active),
                                     signing_key=key, signing_cert=cert,
                                     trust_anchors=tuple(p for p in base.policies.trust_anchors if p.exists())),
        daemon=dataclasses.replace(base.daemon, backend=BackendKind.EMULATOR, state_dir=work / "state",
                                   control_socket=Path(dev_socket_path()), control_group=None),
        audit=dataclasses.replace(base.audit, prometheus_textfile=None),
        path=config,
        dev=True,
    )


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
    """The certificates the emulator's keyring holds: the trust anchors and the local signing cert."""
    certs = [p.read_bytes() for p in settings.policies.trust_anchors if p.exists()]
    if settings.policies.signing_cert is not None and settings.policies.signing_cert.exists():
        certs.append(settings.policies.signing_cert.read_bytes())
    return certs


def make_backend(settings: Settings) -> Backend:
    """The configured backend; the emulator trusts the anchors and the local signing cert."""
    return select_backend(settings, configured_certs(settings))


def trust_configured_certs(backend: Backend, settings: Settings) -> None:
    """On the emulator, add the certificates ``settings`` configures to its keyring (nothing on a
    kernel, whose keyrings iped never changes). Called on every reload of the configuration, so
    a signing_cert added to a running daemon's iped.toml is trusted by the plan and the reload
    alike, as at start; certificates are never removed (as from a kernel's keyring). A file that
    cannot be read or parsed is skipped: the load it would verify fails with ENOKEY and says so."""
    from iped.backend import EmulatorBackend

    if not isinstance(backend, EmulatorBackend):
        return
    for path in (*settings.policies.trust_anchors, settings.policies.signing_cert):
        if path is None:
            continue
        try:
            backend.emulator.trust(path.read_bytes())
        except (OSError, ValueError):
            continue


def make_reconciler(settings: Settings, reporter: Reporter, backend: Backend | None = None, *,
                    writes_state: bool = True) -> Reconciler:
    """The reconciler of ``settings``; UserError when the forced backend is not there, or when
    the state dir cannot take the records of what it does (``writes_state``; checked before the
    kernel is touched, so an unusable state dir is never mistaken for a kernel error)."""
    plan_log = PlanLog(settings.daemon.state_dir, settings.daemon.history)
    if writes_state:
        try:
            plan_log.prepare()
        except OSError as e:
            from iped.errnos import errno_name

            raise UserError(f"state_dir {plan_log.root}: {errno_name(e.errno or errno.EIO)}: {e.strerror or e}"
                           f"{f' ({e.filename})' if e.filename else ''}: plan records and rollback history "
                           "live there", hint="make it a writable directory or set [daemon] state_dir") from None
    try:
        backend = backend or make_backend(settings)
    except RuntimeError as e:  # backend = kernel without IPE
        raise UserError(str(e)) from None
    return Reconciler(settings, backend, plan_log, reporter)
