"""The iped daemon: declared state (config + drop-in policies) -> kernel state, in one select loop.

Modules, one concern each: ``settings`` (frozen configuration), ``state`` (declared/actual models and
the drop-in scan), ``plan`` (pure planner), ``apply`` (executor), ``store`` (plan records on disk),
``control`` (control-socket protocol and server), ``loop`` (the selector loop), ``notify``
(sd_notify), ``log`` (reporters), ``devkey`` (development signing key).
"""
