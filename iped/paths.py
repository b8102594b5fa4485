"""The well-known paths every floor agrees on: the system configuration and control socket.

Import-free on purpose: ``iped status`` reads these before anything else, and
:mod:`iped.settings` (which costs :mod:`dataclasses`) takes its defaults from here.
"""

DEFAULT_CONFIG = "/etc/iped/iped.toml"
DEFAULT_SOCKET = "/run/iped/control.sock"
#: what to do on a host without DEFAULT_CONFIG (iped not installed, or a first try from a checkout)
NO_CONFIG_HINT = "give --config FILE, or try iped from its source checkout: 'iped daemon --dev' (packaging/dev.sh run)"
#: where systemd >= 257's PID 1 loads ``*.p7b`` from at every start (src/core/ipe-setup.c): the
#: initramfs copy must not be in one of them, or PID 1 loads the same version again and, ESTALE
#: on ``update``, freezes the boot (docs/boot.md)
PID1_IPE_DIRS = ("/etc/ipe", "/run/ipe", "/usr/local/lib/ipe", "/usr/lib/ipe")
#: what the initramfs script (initramfs-tools/scripts/init-bottom/iped) writes before switch_root;
#: /run is moved into the new root, so iped boot-check reads it after
INITRAMFS_RECORD = "/run/iped-initramfs/activated"
