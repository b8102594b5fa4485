"""Follow, group, explain and count IPE audit records (netlink, journald, files, emulator)."""
