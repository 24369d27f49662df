"""``python -m ringline [diagnose [--json] | serve ...]``: the command line.

``diagnose`` (the default when no sub-command is given) prints what this
machine allows (see :mod:`ringline.diagnose`) and exits 0 when io_uring is
usable, 1 when it is not.  ``serve`` runs an application under a supervisor
(see :mod:`ringline.ops`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _diagnose(args: argparse.Namespace) -> int:
    # Imported here: the diagnosis is pure Python and needs nothing else.
    from ringline.diagnose import diagnose, format_report

    report = diagnose()
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(format_report(report))
    return int(report["exit_status"])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ringline``."""
    parser = argparse.ArgumentParser(
        prog="python -m ringline",
        description="ringline: an io_uring-native asyncio event loop for Linux.")
    # Also accepted without the sub-command: `python -m ringline --json`.
    parser.add_argument("--json", action="store_true",
                        help="diagnose, printing the report as JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    diag = sub.add_parser(
        "diagnose", help="report what this machine allows (the default)",
        description="Probe io_uring and its features, the limits and the CPUs; exit "
                    "status 0 when io_uring is usable, 1 when it is not.")
    # SUPPRESS: an absent sub-command flag must not reset `--json diagnose`.
    diag.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print the report as JSON")
    diag.set_defaults(func=_diagnose)
    from ringline.ops.cli import add_serve_parser
    add_serve_parser(sub)
    parser.set_defaults(func=_diagnose)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
