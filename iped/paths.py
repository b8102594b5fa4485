"""The well-known paths every floor agrees on: the system configuration and control socket.

Import-free on purpose: ``iped status`` reads these before anything else, and
:mod:`iped.settings` (which costs :mod:`dataclasses`) takes its defaults from here.
"""

DEFAULT_CONFIG = "/etc/iped/iped.toml"
DEFAULT_SOCKET = "/run/iped/control.sock"
#: what to do on a host without DEFAULT_CONFIG (iped not installed, or a first try from a checkout)
NO_CONFIG_HINT = "give --config FILE, or try iped from its source checkout: 'iped daemon --dev' (packaging/dev.sh run)"
