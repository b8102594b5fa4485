"""The one thing pyproject.toml cannot declare on bookworm's setuptools: the C scanner.

``iped.audit._scan`` speeds up reading auditd logs (see iped/audit/bulk.py); iped works
without it, at about half the speed.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("iped.audit._scan", ["iped/audit/_scan.c"], extra_compile_args=["-Wall", "-Wextra"])])
