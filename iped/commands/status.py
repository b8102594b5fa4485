"""``iped status [--json]``: what the daemon and the kernel say, drift, last plans, counters.

Fast path: imports only socket/json and the client (no pydantic, no emulator, no crypto).
"""

from __future__ import annotations

import argparse

from iped.commands import ExitCode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands.remote import add_socket_arguments

    add_socket_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from iped.commands.remote import ask, print_json, render_status

    result = ask(args, "status", 30)
    if args.json:
        print_json(result)
    else:
        print(render_status(result))
    return ExitCode.OK
