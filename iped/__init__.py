"""iped: userspace daemon for Linux IPE (Integrity Policy Enforcement)."""

__version__ = "0.1.0"
