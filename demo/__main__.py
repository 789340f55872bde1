"""`python -m demo ...` is `matslice demo ...`: the same options, the same one-line errors."""

import sys

from demo.cli import register
from gemma3n.errors import Parser, run_command


def main() -> int:
    def body() -> None:
        parser = Parser(prog="python -m")  # the subcommand adds "demo"
        register(parser.add_subparsers(dest="command", parser_class=Parser))
        args = parser.parse_args(["demo", *sys.argv[1:]])
        args.run(args)

    return run_command(body)


sys.exit(main())
