"""The one thing pyproject.toml cannot declare on bookworm's setuptools: the C helpers.

``iped.audit._scan`` speeds up reading auditd logs (``_scan.c``, see iped/audit/bulk.py) and the
daemon's netlink follower (``_netlink.c``); iped works without it, at about half the speed.
"""

from setuptools import Extension, setup

#: one extension module from two files; _scan.h is what they share
SOURCES = ["iped/audit/_scan.c", "iped/audit/_netlink.c"]

setup(ext_modules=[Extension("iped.audit._scan", SOURCES, depends=["iped/audit/_scan.h"],
                             extra_compile_args=["-Wall", "-Wextra"])])
