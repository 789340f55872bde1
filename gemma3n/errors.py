"""The one exception users see, and the runner that turns it into one line.

Every problem a user can cause (a bad slice, a folder that is not Gemma 3n, a truncated shard, a port
in use) is a `UserError` whose message is one line naming the problem and the fix. `run_command` prints
it as `error: ...` and returns exit status 2; every command of `matslice` runs through it. Anything
else escaping is a bug in MatSlice and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(ValueError):
    """A problem with the user's input, worded as one line: what is wrong, and how to fix it."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are user errors: one line, like every other (see run_command)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see `{self.prog} --help`)")


def run_command(body: Callable[[], None], interrupted: str = "interrupted; nothing was left half-written") -> int:
    """Run a command's `body()`: a UserError becomes one `error:` line and exit 2, Ctrl-C exit 130."""
    try:
        body()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `matslice plan --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    return 0
