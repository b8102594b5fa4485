"""The iped daemon: declared state (config + drop-in policies) -> kernel state, in one select loop.

Modules, one concern each: ``declared`` (the declared-state model; ``find_active()``),
``dropin`` (safe reading of one drop-in file), ``scan`` (the drop-in dir scan), ``overlay`` (the
rollback overlay), ``actual`` (the securityfs snapshot), ``plan`` (pure planner), ``apply``
(executor, each step read back), ``reconcile`` (one reconcile and its record), ``service`` (plan,
reload, rollback and status, shared by the loop and the command line's no-daemon paths),
``plan_document`` (the versioned ``iped plan --json``), ``planlog`` (plan records, the rollback
chain and deployed texts in the state dir), ``rollback`` (roll forward to earlier content),
``control`` (control-socket protocol and server), ``connections`` (per-client buffers, caps, idle
time-outs), ``client`` (the socket's client transport), ``lock`` (one daemon per socket), ``loop``
(the selector loop), ``readiness`` (when READY=1 is sent; the start refusal), ``watch`` (the
inotify watches and which events ask for a reconcile), ``runtime`` (building the pieces from
settings), ``notify`` (sd_notify), ``log`` (reporters, journald), ``throttle`` (repeated log
lines), ``metrics`` (the Prometheus textfile), ``status_text`` (``iped status`` for people),
``bootcopy`` (PID 1's copy of the active policy), ``initramfs`` (the initramfs copy and the
blobs its hook may ship), ``bootrecord`` (what was in force when the boot reached iped),
``devkey`` (development signing key, self-signed certificates). The
settings they read are :mod:`iped.settings`, one floor down.
"""
