"""The well-known paths every floor agrees on: the system configuration and control socket.

Import-free on purpose: ``iped status`` reads these before anything else, and
:mod:`iped.settings` (which costs :mod:`dataclasses`) takes its defaults from here.
"""

DEFAULT_CONFIG = "/etc/iped/iped.toml"
DEFAULT_SOCKET = "/run/iped/control.sock"
