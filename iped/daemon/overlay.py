"""The rollback overlay: the policies ``iped rollback`` rolled forward, in effect over the
drop-in dir until it catches up (:func:`overlay_rolled_forward`)."""

from __future__ import annotations

import errno
from dataclasses import dataclass, replace
from pathlib import Path

from iped.daemon.declared import DeclaredState, DeclError, Loader, fs_error, untrusted
from iped.daemon.dropin import declares, policy_files
from iped.trustpath import UntrustedPathError, check_path


@dataclass(frozen=True, slots=True)
class Overlaid:
    """The declared state with the rolled-forward policies in effect, and the rolled-forward files
    the drop-in dir has superseded (for the reconciler to remove)."""

    state: DeclaredState
    superseded: tuple[Path, ...]


def overlay_rolled_forward(decl: DeclaredState, directory: Path, load: Loader) -> Overlaid:
    """Overlay the policies ``iped rollback`` wrote to the daemon's ``directory`` on ``decl``.

    A rolled-forward ``NAME`` is in effect while the drop-in dir declares ``NAME`` at a lower
    version (it replaces that file's policy); once the drop-in dir declares ``NAME`` at the same
    or a higher version, or no longer declares it at all, it is superseded: ignored, and removed
    by the next reconcile whose plan is not rejected (a rejected plan changes nothing on disk: a
    drop-in file moved out and back must find its rollback still there). While the drop-in file
    of ``NAME`` is invalid it is neither (that file's error rejects the plan anyway). So config
    management keeps owning the drop-in dir: it is never written, a rollback does not fight the
    next deployment of the old file, and the next higher version deployed there wins.
    """
    try:
        check_path(directory, "declared (rolled-forward) policies")
        paths = policy_files(directory)
    except FileNotFoundError:
        return Overlaid(decl, ())
    except UntrustedPathError as e:
        return Overlaid(replace(decl, errors=(*decl.errors, untrusted(e))), ())
    except OSError as e:
        return Overlaid(replace(decl, errors=(*decl.errors, fs_error(directory, e, "cannot list"))), ())
    policies = {p.name: p for p in decl.policies}
    errors = list(decl.errors)
    superseded: list[Path] = []
    taken: set[str] = set()
    for path in paths:
        got = load(path)
        if isinstance(got, DeclError):
            errors.append(got)
            continue
        if got.name in taken:
            errors.append(DeclError(str(path), 1, errno.EEXIST, f"policy {got.name!r} is rolled forward twice",
                                    meaning="one policy name declared twice"))
            continue
        taken.add(got.name)
        own = policies.get(got.name)
        if own is None and any(declares(Path(e.file), got.name) for e in decl.errors):
            continue  # its drop-in file is broken: not in effect, not superseded either
        if own is None or own.version.as_u64() >= got.version.as_u64():
            superseded.append(path)
            continue
        policies[got.name] = got
    state = replace(decl, policies=tuple(policies[p.name] for p in decl.policies), errors=tuple(errors))
    return Overlaid(state, tuple(superseded))
