"""The one exception type that the CLI turns into a clear message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a file, a line or an option. The message names which."""
