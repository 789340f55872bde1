"""The one exception users see.

Every problem a user can cause (a bad slice, a folder that is not Gemma 3n, a truncated shard) is a
`SliceError` whose message is one line naming the problem and the fix; the command line prints it
as `error: ...` and exits with status 2. Anything else escaping is a bug in MatSlice.
"""


class SliceError(ValueError):
    """A problem with the user's input, worded as one line: what is wrong, and how to fix it."""
