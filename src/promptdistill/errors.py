"""The one exception type that the CLI turns into a clear message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a file, a line or an option. The message names which."""


def check_choice(name: str, value: str, choices) -> None:
    """Refuse `value` unless it is one of `choices`, naming the setting or option `name`."""
    if value not in choices:
        raise UserError(f"{name}: unknown value {value!r}; choose from {', '.join(choices)}")
