"""The one exception type for mistakes a user can fix (bad input, bad options, missing files)."""


class NlpkitError(Exception):
    """A user error. The message is one line: what is wrong, where, and what to do.

    The CLI prints it as a single red line and exits with code 2 (no traceback unless --debug).
    Library callers can catch it like any exception.
    """

    exit_code = 2

    def __init__(self, message, *, hint=None):
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


def check_choice(layer_name, argument, value, choices):
    """Raise NlpkitError unless `value` is one of `choices` (a layer argument); return the value."""
    if value not in choices:
        raise NlpkitError(f"{layer_name}({argument}={value!r}) is not one of {', '.join(choices)}")
    return value
