"""The one exception type that the CLI turns into a single line and exit code 2."""


class UvlmError(Exception):
    """Bad input from the user: a wrong value, a missing file, a folder that holds other data.

    The message names the problem and how to fix it; the CLI prints it on one line.
    """
