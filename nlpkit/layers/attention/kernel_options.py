"""KernelAttention's constructor checks: one clear error per argument it cannot take."""

from nlpkit.errors import NlpkitError
from nlpkit.layers.attention.kernel_features import NON_CAUSAL_TRANSFORMS, RANDOM_FEATURE_TRANSFORMS
from nlpkit.layers.attention.kernel_windowed import CAUSAL_PADDINGS


def check_random_features(feature_transform, num_random_features, redraw):
    if not isinstance(num_random_features, int) or num_random_features < 0:
        raise NlpkitError(
            f"KernelAttention: num_random_features={num_random_features!r} is not a feature count",
            hint="use a positive integer, or 0 for no random projection",
        )
    if num_random_features > 0 or feature_transform not in RANDOM_FEATURE_TRANSFORMS:
        return
    if feature_transform == "expplus":
        # Model Garden silently returns the projected q and k unchanged here (the identity map).
        raise NlpkitError(
            "KernelAttention(feature_transform='expplus') needs random features; got num_random_features=0",
            hint="set num_random_features > 0, or use feature_transform='identity' for the plain dot product",
        )
    if redraw:
        raise NlpkitError(
            "KernelAttention: redraw=True has nothing to redraw with num_random_features=0",
            hint="set num_random_features > 0 or redraw=False",
        )


def check_windowed_options(feature_transform, is_short_seq, windowed, chunk_length, window_length, decay, padding):
    def positive_int(value):
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    problems = [
        (chunk_length is not None and not positive_int(chunk_length), f"causal_chunk_length={chunk_length!r}",
         "use a positive number of tokens, or None"),
        (not positive_int(window_length), f"causal_window_length={window_length!r}", "use a positive number of chunks"),
        (decay is not None and not (isinstance(decay, (int, float)) and 0.0 <= decay <= 1.0),
         f"causal_window_decay={decay!r}", "use None or a factor in [0, 1]"),
        (padding not in CAUSAL_PADDINGS, f"causal_padding={padding!r}", "use None, 'left' or 'right'"),
        (windowed and is_short_seq, "use_causal_windowed=True with is_short_seq=True",
         "they are exclusive (as in Model Garden): set one of them"),
        (windowed and feature_transform in NON_CAUSAL_TRANSFORMS, f"use_causal_windowed=True with '{feature_transform}'",
         "its features are statistics of the whole sequence: use 'exp', 'expmod' or 'elu'"),
    ]
    for failed, what, hint in problems:
        if failed:
            raise NlpkitError(f"KernelAttention({what}) is not supported", hint=hint)
