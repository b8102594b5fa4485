"""``iped status [--json]``: what the daemon and the kernel say, drift, last plans, counters.

Fast path: imports only socket/json and the client (no pydantic, no emulator, no crypto).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.daemon.client import add_socket_arguments

    add_socket_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from iped.daemon.client import DaemonUnreachableError, err, find_socket, print_json, render_status, request

    path = find_socket(args.socket, args.config)
    try:
        reply = request(path, "status", timeout=30)
    except DaemonUnreachableError as e:
        err(f"daemon unreachable: {e}")
        return 3
    if not reply.get("ok"):
        err(f"{reply.get('errno_name')}: {reply.get('error')}")
        return 1
    if args.json:
        print_json(reply["result"])
    else:
        print(render_status(reply["result"]))
    return 0
