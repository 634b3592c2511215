"""Size and cost of an encoder: parameters per component and FLOPs per token."""

import math


def component_rows(encoder):
    """[(name, class name, parameter count)] for each direct sub-layer of a built encoder."""
    rows = []
    for layer in encoder.layers:
        count = sum(math.prod(w.shape) for w in layer.weights)
        if count:
            rows.append((layer.name, type(layer).__name__, count))
    return rows


def flops_per_token(encoder, sequence_length):
    """Multiply-adds x 2 per token of one forward pass at `sequence_length`.

    Counts every dense kernel applied per token (embedding lookups and the once-per-sequence
    pooler excluded) plus the attention scores and weighted sum, `4 T W` per layer where W is
    the attention width (`hidden_size`, or MobileBERT's `intra_bottleneck_size`).
    """
    dense = sum(
        math.prod(w.shape)
        for w in encoder.weights
        if w.path.endswith("kernel") and "pooler" not in w.path and len(w.shape) >= 2
    )
    attention_width = getattr(encoder, "intra_bottleneck_size", None) or encoder.hidden_size
    return 2 * dense + encoder.num_layers * 4 * sequence_length * attention_width


def summarize(encoder, sequence_length=128):
    """{'layers', 'parameters', 'trainable_parameters', 'flops_per_token', 'sequence_length', 'components'}."""
    trainable = sum(math.prod(w.shape) for w in encoder.trainable_weights)
    return {
        "layers": encoder.num_layers,
        "parameters": encoder.count_params(),
        "trainable_parameters": trainable,
        "flops_per_token": flops_per_token(encoder, sequence_length),
        "sequence_length": sequence_length,
        "components": component_rows(encoder),
    }
