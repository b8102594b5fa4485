"""The iped daemon: declared state (config + drop-in policies) -> kernel state, in one select loop.

Modules, one concern each: ``settings`` (every configuration key, declared once), ``declared`` (the
declared-state model), ``dropin`` (safe reading of a drop-in file), ``scan`` (the drop-in dir
scan), ``overlay`` (the rollback overlay), ``actual`` (the securityfs snapshot), ``plan`` (pure planner), ``apply``
(executor), ``reconcile`` (one reconcile and its record), ``service`` (plan, reload, rollback and
status, shared by the loop and the command line's no-daemon paths), ``planlog`` (plan records and
deployed texts in ``state_dir``), ``rollback`` (roll forward to earlier content), ``control``
(control-socket protocol and server), ``client`` (the CLI's side of the socket), ``loop`` (the
selector loop, no business logic), ``runtime`` (building the pieces from settings), ``notify``
(sd_notify), ``log`` (reporters), ``devkey`` (development signing key, self-signed certificates).
"""
