"""Rollout tools: what would IPE break here, and which rules would stop it.

* :mod:`~iped.rollout.survey` — the go/no-go list: observed IPE decisions re-evaluated against a
  policy, grouped by program and by rule (``iped survey``);
* :mod:`~iped.rollout.suggest` — rules that allow what a policy would deny, derived from the
  files' IPE properties on this host, verified by replay (``iped suggest``);
* :mod:`~iped.rollout.shadow` and :mod:`~iped.rollout.fanotify` — shadow mode for kernels
  without IPE: fanotify ``FAN_OPEN_EXEC`` notifications evaluated by the emulator and written as
  1420-shaped audit lines (``iped shadow``).

Every use of the emulator and of file discovery goes through :mod:`~iped.rollout.engine`, so a
rename there is a one-line fix. Each entry point takes plain values (policy text, events, a
resolver) so a lab test can call it without the command line.
"""
