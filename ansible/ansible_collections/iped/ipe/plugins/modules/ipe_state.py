#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: iped developers
# GNU General Public License v2.0 only (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ipe_state
short_description: Converge the kernel's IPE state to what iped's configuration declares
description:
  - Runs C(iped plan --json) first, which writes nothing. Exit 9 (nothing to change) is V(ok),
    exit 1 (rejected, for an invalid policy, signature, anti-rollback or bad configuration) fails with the reasons.
  - When the plan would change something, runs C(iped reload) (the daemon reconciles and answers
    with its plan record); with O(method=auto) it falls back to C(iped apply) when the daemon is
    unreachable (exit 3), instead of failing silently.
  - A kernel error mid-apply (exit 4) fails with RV(kernel_error=true); the policies written before
    the failing step stay, and the previously active policy stays active.
  - The declared state itself (C(iped.toml) and the drop-in directory) is placed by other tasks, for
    example the M(ansible.builtin.template) and M(ansible.builtin.copy) tasks of the role iped.ipe.iped.
version_added: 0.1.0
author:
  - iped developers (!UNKNOWN)  # no GitHub handle; validate-modules wants one or !UNKNOWN
options:
  method:
    description:
      - V(auto) asks the running daemon, and runs C(iped apply) when no daemon answers.
      - V(daemon) only asks the running daemon (an unreachable daemon fails).
      - V(once) never asks a daemon, it plans and applies in this process (C(iped plan --no-daemon), C(iped apply)).
    type: str
    choices: [auto, daemon, once]
    default: auto
  staged:
    description:
      - A staged C(iped.toml) (its C([policies] dir) a staged drop-in directory) to judge instead of converging.
      - The module then only runs C(iped plan --json --config STAGED) against the live kernel (through the
        daemon, or in this process with O(method=once)) and reports that plan, in check mode and for real alike.
        It is V(changed) with the diff when installing the staged state would change the kernel, V(ok) when it
        would not, and fails with the reasons when the staged state is rejected. Nothing is written anywhere.
      - Used by the role iped.ipe.iped to judge the complete declared state before any file in /etc changes.
    type: path
extends_documentation_fragment:
  - iped.ipe.iped
attributes:
  check_mode:
    support: full
    description: Only C(iped plan) runs, which writes nothing; the result says whether a converge would change anything.
  diff_mode:
    support: full
    description: The diff is the kernel's IPE state before and after the plan (active policy, enforce,
      success_audit, loaded policies with versions and digests), from C(iped plan --json).
notes:
  - Never reports V(changed) when the kernel already matches the declared state, so a second run changes nothing.
seealso:
  - module: iped.ipe.ipe_facts
"""

EXAMPLES = r"""
- name: Converge IPE now
  iped.ipe.ipe_state:
    config: /etc/iped/iped.toml

- name: Judge a staged declared state without installing it
  iped.ipe.ipe_state:
    staged: /tmp/iped-stage/iped.toml

- name: Converge without a daemon (first boot, rescue)
  iped.ipe.ipe_state:
    method: once
"""

RETURN = r"""
plan:
  description: The C(iped plan --json) document (schema_version, before, after, steps, errors, reasons, outcome).
  returned: when iped printed one
  type: dict
record:
  description: The plan record of the converge (C(iped reload --json) or C(iped apply --json)).
  returned: when a converge ran
  type: dict
method_used:
  description: V(daemon) or V(once); V(null) when nothing had to change or in check mode.
  returned: always
  type: str
kernel_error:
  description: True when the kernel refused a write mid-apply (exit 4).
  returned: always
  type: bool
reasons:
  description: Why iped refused, one line per problem, each with file, line and errno.
  returned: always
  type: list
  elements: str
iped_rc:
  description: Exit code of the last iped command (not C(rc), which Ansible reads as failed when non-zero; 9 means unchanged).
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.iped.ipe.plugins.module_utils.iped import (
    COMMON_ARGUMENT_SPEC,
    METHODS,
    converge,
    iped_executable,
    judge,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(COMMON_ARGUMENT_SPEC, method={"type": "str", "choices": list(METHODS), "default": "auto"},
                           staged={"type": "path"}),
        supports_check_mode=True,
    )
    p = module.params
    iped = iped_executable(module)

    def run(argv):
        return module.run_command(argv, check_rc=False)

    if p["staged"]:
        result = judge(run, iped, p["staged"], p["socket"], p["method"])
    else:
        result = converge(run, iped, p["config"], p["socket"], p["method"], module.check_mode)
    if not module._diff:
        result.pop("diff", None)
    if result.pop("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
