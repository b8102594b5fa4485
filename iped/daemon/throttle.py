"""Rate-limited logging: a message that repeats is logged at most once per interval.

A failure that recurs on every loop iteration (a handler that keeps raising, accept() out of
descriptors) must not write the log full: the first occurrence is logged, the repeats within
:data:`INTERVAL` are counted, and the next one logged says how many were suppressed.
"""

from __future__ import annotations

import time

from iped.daemon.log import Reporter

#: seconds between two log lines of the same kind
INTERVAL = 10.0


class Throttle:
    """Logs through ``reporter``, at most once per ``interval`` per key."""

    def __init__(self, reporter: Reporter, interval: float = INTERVAL) -> None:
        self.reporter = reporter
        self.interval = interval
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: str, key: str, message: str) -> bool:
        """Log ``message`` unless ``key`` was logged less than ``interval`` ago. True if logged."""
        now = time.monotonic()
        if now < self._next.get(key, float("-inf")):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if len(self._next) > 1024:  # keys are few and fixed; never let them grow without bound
            self._next.clear()
        self._next[key] = now + self.interval
        dropped = self._suppressed.pop(key, 0)
        suffix = f" ({dropped} similar messages suppressed)" if dropped else ""
        self.reporter.log(level, message + suffix)
        return True
