# -*- coding: utf-8 -*-
# Copyright: iped developers
# GNU General Public License v2.0 only (see https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The options every iped.ipe module takes (module_utils.iped.COMMON_ARGUMENT_SPEC)."""

    DOCUMENTATION = r"""
options:
  config:
    description: The iped configuration file; it also names the daemon's control socket.
    type: path
    default: /etc/iped/iped.toml
  socket:
    description: The daemon's control socket, when it is not the one O(config) names.
    type: path
  iped:
    description: The iped executable (a name looked up in E(PATH), or a path).
    type: str
    default: iped
"""
