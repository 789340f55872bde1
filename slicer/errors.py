"""The one exception users see.

Every problem a user can cause (a bad slice, a folder that is not Gemma 3n, a truncated shard) is a
`SliceError` whose message is one line naming the problem and the fix; the command line prints it
as `error: ...` and exits with status 2. Anything else escaping is a bug in MatSlice.
"""

import sys
from collections.abc import Callable


class SliceError(ValueError):
    """A problem with the user's input, worded as one line: what is wrong, and how to fix it."""


def run_command(body: Callable[[], None], interrupted: str = "interrupted; nothing was left half-written") -> int:
    """Run a command-line entry point's `body()`: a SliceError becomes one `error:` line and exit 2."""
    try:
        body()
    except SliceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `matslice plan --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    return 0
