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


def one_of_names(layer_name, names, values):
    """The value given under either name (`names` = (nlpkit's, Model Garden's)), None if neither;
    both given must agree."""
    given = {name: value for name, value in zip(names, values, strict=True) if value is not None}
    if len(set(map(repr, given.values()))) > 1:
        raise NlpkitError(
            f"{layer_name}: {' and '.join(f'{k}={v!r}' for k, v in given.items())} disagree",
            hint=f"{names[1]} is Model Garden's name of {names[0]}: give one of them",
        )
    return next(iter(given.values()), None)
