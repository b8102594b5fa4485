"""How a verb prints its result: the JSON document on stdout with ``--json``, else its text for
people. One place, so every verb's ``--json`` is the same shape of output (indented, keys sorted).

Import-light (``iped status``): json and sys.
"""

from __future__ import annotations

import json
import sys

# typing costs milliseconds at start-up and is only needed by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


def show(args: argparse.Namespace, document: Any, render: Callable[[Any], str]) -> None:
    """``document`` as JSON when ``args.json``, else ``render(document)``: the text for people,
    already escaped by ``render``."""
    if args.json:
        print_json(document)
    else:
        print(render(document))
