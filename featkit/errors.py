"""The one exception type for user mistakes.

The CLI turns a :class:`FeatkitError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class FeatkitError(ValueError):
    """Bad input from the user: the message names the problem and the fix."""
