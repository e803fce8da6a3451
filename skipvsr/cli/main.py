"""The ``skipvsr`` command line.

Exit codes: 0 success, 1 failure (bad input file, unusable checkpoint, ...), 2 usage error.
Errors print one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from skipvsr.cli import app, degrade, demo, info, macs, upscale, weights
from skipvsr.cli import eval as eval_command
from skipvsr.cli import train as train_command
from skipvsr.cli.args import FAILURES, UsageError

EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skipvsr", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    commands = (upscale, info, weights, macs, eval_command, degrade, train_command, demo, app)
    for command in commands:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        if args.debug:
            raise
        print(f"skipvsr: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("skipvsr: interrupted", file=sys.stderr)
        return 130
    except FAILURES as e:
        if args.debug:
            raise
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"skipvsr: error: {text}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
