#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: iped developers
# GNU General Public License v2.0 only (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ipe_facts
short_description: The iped daemon's view of IPE as facts
description:
  - Runs C(iped status --json) and returns the document as C(ansible_facts.ipe)
    (backend, enforce, success_audit, active policy, loaded policies, declared state, in_sync, drift).
  - When no daemon answers (first boot, rescue, converging with C(iped apply)), runs C(iped status --json --no-daemon),
    which reads the kernel's (or emulator's) state and the declared files directly; then C(ansible_facts.ipe.daemon)
    is V(false) and C(status_line) says so.
  - Never changes anything and never reports V(changed).
version_added: 0.1.0
author:
  - iped developers (!UNKNOWN)  # no GitHub handle; validate-modules wants one or !UNKNOWN
extends_documentation_fragment:
  - iped.ipe.iped
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  facts:
    support: full
    description: Sets C(ansible_facts.ipe).
seealso:
  - module: iped.ipe.ipe_state
"""

EXAMPLES = r"""
- name: Read IPE state
  iped.ipe.ipe_facts:

- name: The declared policy is active and the host is in sync
  ansible.builtin.assert:
    that:
      - ansible_facts.ipe.in_sync
      - ansible_facts.ipe.active.name == "base"
"""

RETURN = r"""
ansible_facts:
  description: Facts set.
  returned: always
  type: dict
  contains:
    ipe:
      description: The C(iped status --json) document (schema_version 1, see docs/daemon.md); C(daemon) is
        V(false) when it was read without a daemon.
      returned: always
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.iped.ipe.plugins.module_utils.iped import (
    COMMON_ARGUMENT_SPEC,
    EXIT_UNREACHABLE,
    common_args,
    iped_executable,
    parse_json,
    reasons,
)


def main():
    module = AnsibleModule(argument_spec=dict(COMMON_ARGUMENT_SPEC), supports_check_mode=True)
    p = module.params
    iped = iped_executable(module)
    argv = [iped, "status", "--json"] + common_args(p["config"], p["socket"])
    rc, out, err = module.run_command(argv)
    if rc == EXIT_UNREACHABLE:  # no daemon: read the kernel (or emulator) directly
        rc, out, err = module.run_command(argv + ["--no-daemon"])
    status = parse_json(out)
    if rc != 0 or status is None:
        module.fail_json(msg="iped status failed (exit %d): %s" % (rc, "; ".join(reasons(None, err))), rc=rc,
                         changed=False)
    module.exit_json(changed=False, ansible_facts={"ipe": status})


if __name__ == "__main__":
    main()
