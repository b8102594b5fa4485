"""Tests in this directory run only INSIDE the lab VM, on a real IPE kernel, as root.

``python -m tests.lab.guest`` runs them there (with ``IPED_LAB_GUEST=1``); the host checks
their junit results from ``tests/lab``.  On the host they are not even collected: they
would write to the host kernel's securityfs.
"""

from __future__ import annotations

import os

from tests.lab import GUEST_ENV_FLAG

if os.environ.get(GUEST_ENV_FLAG) != "1":
    collect_ignore_glob = ["*.py"]
