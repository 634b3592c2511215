"""Model Garden's argument names where nlpkit's differ: a layer takes either; its config keeps nlpkit's."""

from nlpkit.errors import NlpkitError


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
