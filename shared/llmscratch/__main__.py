"""The course's command line: ``python -m llmscratch <command>`` (see ``--help``).

Introduced in ch02_text_data (``download``). Progress goes to stderr, results to stdout; bad input gets a
one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from . import data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmscratch",
        description="Command line of the course 'Build a Large Language Model (From Scratch)' in Portuguese.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    download = commands.add_parser(
        "download", help="fetch the course's data files ahead of time (verified by sha256)",
        description="Download (or copy from LLMSCRATCH_DATA_MIRROR) the course's data files into the data folder.",
    )
    download.add_argument("names", nargs="*", metavar="NAME",
                          help=f"data files to fetch (default: all of {', '.join(data.DATA_FILES)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "download":
        try:
            data.main(args.names)
        except ValueError as error:
            parser.exit(2, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
