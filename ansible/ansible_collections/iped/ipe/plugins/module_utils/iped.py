# -*- coding: utf-8 -*-
# Copyright: iped developers
# GNU General Public License v2.0 only (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)
"""What the iped.ipe modules share: running ``iped``, reading its JSON and its exit codes.

The converge decision (:func:`converge`) is a pure function of a ``run(argv) -> (rc, stdout,
stderr)`` callable, so it is unit-tested against a scripted ``iped`` without AnsibleModule.
"""

from __future__ import annotations

import json

# iped's stable exit codes (README "Exit codes")
EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_UNREACHABLE = 3
EXIT_KERNEL_ERROR = 4
EXIT_UNCHANGED = 9

METHODS = ("auto", "daemon", "once")

#: the options every iped.ipe module takes (documented in each module's DOCUMENTATION)
COMMON_ARGUMENT_SPEC = {
    "config": {"type": "path", "default": "/etc/iped/iped.toml"},
    "socket": {"type": "path"},
    "iped": {"type": "str", "default": "iped"},
}


def iped_executable(module):
    """The ``iped`` option: a path as given, or a name looked up in PATH (missing: the module fails)."""
    name = module.params["iped"]
    return name if "/" in name else module.get_bin_path(name, required=True)


def common_args(config, socket=None):
    """``--config FILE [--socket PATH]``: where the daemon and the declared state are."""
    args = ["--config", config]
    if socket:
        args += ["--socket", socket]
    return args


def parse_json(stdout):
    """The JSON document iped printed, or None (iped printed nothing parseable: see stderr)."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def reasons(doc, stderr):
    """Why iped said no: the document's reasons/errors/failure, else iped's stderr lines."""
    found = []
    if doc:
        found = list(doc.get("reasons") or [e.get("message", str(e)) for e in doc.get("errors") or []])
        failure = doc.get("failure")
        if isinstance(failure, dict) and failure.get("message"):
            found.append(failure["message"])
    if not found:
        found = [line for line in (stderr or "").splitlines() if line.strip()]
    return found


def plan_diff(plan):
    """Ansible's diff: the kernel's IPE state now and as the plan leaves it."""
    return {
        "before": plan.get("before") or {},
        "after": plan.get("after") or {},
        "before_header": "IPE state now",
        "after_header": "IPE state after converge",
    }


def judge(run, iped, staged, socket, method):
    """``iped plan --json --config STAGED``: the plan of a staged declared state (a staged
    ``iped.toml`` whose drop-in dir is staged too) against the live kernel, nothing written anywhere.

    The running daemon plans it against its backend (``method`` once: this process does); the result
    says whether installing that state would change the kernel (``changed``, with the diff), would
    change nothing (exit 9), or is rejected (``failed``, with the reasons): config management judges
    what it is about to install before any file in /etc changes.
    """
    if method not in METHODS:
        raise ValueError("method must be one of %s" % ", ".join(METHODS))
    argv = [iped, "plan", "--json"] + common_args(staged, socket) + (["--no-daemon"] if method == "once" else [])
    rc, out, err = run(argv)
    plan = parse_json(out)
    result = {"changed": False, "failed": False, "plan": plan, "record": None, "method_used": None,
              "kernel_error": False, "reasons": [], "iped_rc": rc}
    if rc == EXIT_UNCHANGED:
        result["msg"] = "the staged state changes nothing in the kernel"
    elif rc != EXIT_OK or plan is None:
        why = reasons(plan, err)
        result.update(failed=True, reasons=why,
                      msg="iped plan rejected the staged state %s (exit %d), nothing installed: %s"
                      % (staged, rc, "; ".join(why)))
    else:
        result.update(changed=True, diff=plan_diff(plan),
                      msg="installing the staged state would converge: %d step(s)" % len(plan.get("steps") or []))
    return result


def converge(run, iped, config, socket, method, check_mode):
    """Plan, then (unless check mode) reload or apply; returns the module's result dict.

    ``run(argv)`` runs a command and returns ``(rc, stdout, stderr)``. Keys of the result:
    ``changed``, ``failed``, ``msg``, ``plan``, ``record``, ``method_used``, ``kernel_error``,
    ``reasons``, ``iped_rc``, and ``diff`` when something would change.
    """
    if method not in METHODS:
        raise ValueError("method must be one of %s" % ", ".join(METHODS))
    base = common_args(config, socket)
    plan_argv = [iped, "plan", "--json"] + base + (["--no-daemon"] if method == "once" else [])
    rc, out, err = run(plan_argv)
    plan = parse_json(out)
    result = {"changed": False, "failed": False, "plan": plan, "record": None, "method_used": None,
              "kernel_error": False, "reasons": [], "iped_rc": rc}
    if rc == EXIT_UNCHANGED:
        result["msg"] = "IPE state already matches the declared state"
        return result
    if rc != EXIT_OK or plan is None:
        result.update(failed=True, reasons=reasons(plan, err),
                      msg="iped plan rejected the declared state (exit %d): %s" % (rc, "; ".join(reasons(plan, err))))
        return result
    result["diff"] = plan_diff(plan)
    if check_mode:
        result.update(changed=True, msg="would converge: %d step(s)" % len(plan.get("steps") or []))
        return result
    if method == "once":
        rc, out, err = run([iped, "apply", "--json", "--config", config])
        result["method_used"] = "once"
    else:
        rc, out, err = run([iped, "reload", "--json"] + base)
        result["method_used"] = "daemon"
        if rc == EXIT_UNREACHABLE and method == "auto":
            rc, out, err = run([iped, "apply", "--json", "--config", config])
            result["method_used"] = "once"
    record = parse_json(out)
    result.update(iped_rc=rc, record=record)
    if rc == EXIT_OK:
        result.update(changed=True, msg="converged: %d step(s) applied" % int((record or {}).get("done") or 0))
    elif rc == EXIT_UNCHANGED:
        result["msg"] = "nothing to change (the daemon converged first)"
    elif rc == EXIT_KERNEL_ERROR:
        # steps before the failure are in place: report the change as well as the failure
        result.update(failed=True, kernel_error=True, changed=bool((record or {}).get("done")),
                      reasons=reasons(record, err),
                      msg="kernel error mid-apply (the previously active policy is kept): %s"
                      % "; ".join(reasons(record, err)))
    elif rc == EXIT_UNREACHABLE:
        result.update(failed=True, reasons=reasons(record, err),
                      msg="the iped daemon is unreachable (method=daemon): %s" % "; ".join(reasons(record, err)))
    else:
        result.update(failed=True, reasons=reasons(record, err),
                      msg="iped refused to converge (exit %d): %s" % (rc, "; ".join(reasons(record, err))))
    return result
