"""The one registry (nlpkit.registry): duplicates refused, parameters recorded, names composed."""

import inspect
import json

import keras
import numpy as np
import pytest

from nlpkit import registry
from nlpkit.errors import NlpkitError
from nlpkit.layers import TransformerEncoderBlock
from nlpkit.layers.attention.efficient import ConditionalFullAttention, InnerAttentionAdapter, LinearAttention, LocalAttention
from nlpkit.layers.attention.registry import make_attention

# Names that configs on disk, presets and `nlpkit bench attention` used before the registry was one.
NAMES_IN_USE = {
    "attention": [
        "multi_head", "talking_heads", "relative", "bigbird", "reuse", "cached", "kernel", "full", "linear",
        "causal-linear", "clustered", "improved-clustered", "improved-clustered-causal", "reformer", "local",
        "conditional-full",
    ],
    "inner_attention": [
        "full", "linear", "causal-linear", "clustered", "improved-clustered", "improved-clustered-causal", "reformer",
        "local", "conditional-full",
    ],
    "encoder": ["bert", "mobilebert", "transformer_xl"],
    "preset": ["bert_tiny", "bert_mini", "bert_small", "bert_medium", "bert_base", "bert_large", "mobilebert_tiny",
               "mobilebert_base", "transformer_xl_small"],
}

# The arguments without a default of every entry, written out by hand (small values).
REQUIRED = {
    "attention": {"num_heads": 2, "key_dim": 4},
    "inner_attention": {},
    "block": {"num_attention_heads": 2, "inner_dim": 8, "inner_activation": "relu"},
    "encoder": {"vocab_size": 30},
}
REQUIRED_BY_NAME = {
    ("block", "rezero"): {"num_attention_heads": 2},
    ("block", "decoder"): {"num_attention_heads": 2},  # inner_dim / inner_activation: under either name
    ("block", "mobilebert"): {},
    ("block", "xl"): {"hidden_size": 8, "num_attention_heads": 2, "head_size": 4, "inner_size": 8},
}
# Arguments with a default of None that must still be given (under one of two names: Model Garden's or nlpkit's).
GIVEN_BY_NAME = {("block", "decoder"): {"inner_dim": 8, "inner_activation": "relu"}}
# Small sizes so that building an encoder with every default but these stays cheap.
SMALL_ENCODER = {"hidden_size": 8, "num_layers": 1, "num_attention_heads": 2, "inner_dim": 8, "inner_size": 8,
                 "head_size": 4, "max_sequence_length": 8, "intra_bottleneck_size": 8, "embedding_size": 4,
                 "embedding_width": 4, "num_feedforward_networks": 1, "key_query_shared_bottleneck": False}


def _required(kind, name):
    return REQUIRED_BY_NAME.get((kind, name), REQUIRED[kind])


@pytest.fixture
def scratch_names():
    """Names a test registers, removed afterwards so the catalogue stays as it was."""
    added = []
    yield added
    for kind, name in added:
        registry._ENTRIES[kind].pop(name, None)


def test_names_in_use_still_resolve():
    for kind, names in NAMES_IN_USE.items():
        assert set(names) <= set(registry.names(kind)), kind


def test_a_duplicate_name_is_refused_naming_it_and_both_places(scratch_names):
    first = registry.get("attention", "multi_head")
    with pytest.raises(NlpkitError, match=r"attention 'multi_head' is registered twice") as error:
        registry.register("attention", "multi_head", dict)
    assert first.where in str(error.value) and first.where.startswith(inspect.getfile(first.constructor))
    assert f"{__file__}:" in str(error.value)
    assert registry.get("attention", "multi_head") is first  # nothing was overwritten

    scratch_names.append(("block", "scratch"))
    registry.register("block", "scratch", dict)
    with pytest.raises(NlpkitError, match=r"block 'scratch' is registered twice: at .*test_registry.py:\d+ and at .*test_registry.py:\d+"):
        registry.register("block", "scratch", list)
    assert registry.get("block", "scratch").constructor is dict


def test_the_same_name_may_mean_different_things_in_different_kinds():
    assert registry.get("attention", "linear").constructor is InnerAttentionAdapter
    assert registry.get("inner_attention", "linear").constructor is LinearAttention


def _all_entries():
    return [(kind, name) for kind in ("attention", "inner_attention", "block", "encoder") for name in registry.names(kind)]


@pytest.mark.parametrize("kind, name", _all_entries())
def test_recorded_parameters_are_the_constructors(kind, name):
    """Every recorded parameter is accepted (the object builds with all of them passed at their
    recorded defaults), the required ones are those written out above, and every key of the built
    object's config (one per constructor argument) is a recorded parameter."""
    entry = registry.get(kind, name)
    parameters = entry.parameters
    required = {key for key, parameter in parameters.items() if parameter.default is inspect.Parameter.empty}
    assert required == set(_required(kind, name))
    arguments = {key: parameter.default for key, parameter in parameters.items() if key not in required}
    arguments.update(_required(kind, name), **GIVEN_BY_NAME.get((kind, name), {}))
    if kind == "encoder":
        arguments.update({key: value for key, value in SMALL_ENCODER.items() if key in parameters})
    built = entry.constructor(**arguments)
    config = built.get_config()
    unrecorded = set(config) - set(parameters)
    assert not unrecorded, f"{kind} '{name}' has config keys its entry does not record: {sorted(unrecorded)}"
    if entry.inner is not None:
        assert entry.inner in parameters


@pytest.mark.parametrize("name", NAMES_IN_USE["preset"])
def test_a_preset_records_its_encoder_kinds_parameters(name):
    config = json.loads(_preset_path(name).read_text())
    parameters = registry.get("preset", name).parameters
    assert parameters == registry.get("encoder", config["kind"]).parameters
    assert set(config) - {"kind", "description"} <= set(parameters)


def _preset_path(name):
    from nlpkit.encoders.presets import PRESETS_DIR

    return PRESETS_DIR / f"{name}.json"


def test_a_bogus_argument_is_refused_with_the_entrys_parameters():
    with pytest.raises(NlpkitError, match=r"attention 'bigbird' takes no argument clusters \(its arguments are: .*block_size"):
        make_attention("bigbird", num_heads=2, key_dim=4, clusters=3)
    with pytest.raises(NlpkitError, match=r"inner attention 'local' takes no argument clusters \(its arguments are: .*local_context"):
        make_attention("local", num_heads=2, key_dim=4, clusters=3)


@pytest.mark.parametrize("kind", ["attention", "inner_attention", "block", "encoder", "preset"])
def test_unknown_names_list_close_matches_or_every_name(kind):
    known = registry.names(kind)
    near = known[0][:-1] + "#"
    with pytest.raises(NlpkitError, match=rf"unknown .*'{near}' \(did you mean '{known[0]}'\?\)"):
        registry.get(kind, near)
    with pytest.raises(NlpkitError, match=r"unknown .*'zzzz' \(choose one of: ") as error:
        registry.build(kind, "zzzz")
    assert all(name in str(error.value) for name in known)


def test_an_unknown_kind_is_an_error_listing_the_kinds():
    with pytest.raises(NlpkitError, match=r"unknown registry kind 'blocks' \(one of: attention, inner_attention, block, encoder, preset\)"):
        registry.names("blocks")


def test_a_name_composes_only_where_the_entry_takes_an_inner_object():
    with pytest.raises(NlpkitError, match=r"attention 'kernel' does not compose with ':linear'"):
        make_attention("kernel:linear", num_heads=2, key_dim=4)
    with pytest.raises(NlpkitError, match=r"inner attention 'linear' does not compose with ':local'"):
        make_attention("conditional-full:linear:local", num_heads=2, key_dim=4)
    with pytest.raises(NlpkitError, match=r"unknown inner attention 'lineer' \(did you mean 'linear'"):
        make_attention("conditional-full:conditional-full:lineer", num_heads=2, key_dim=4)


def _same_weights_same_outputs(built, by_hand, *inputs):
    built(*inputs)
    by_hand(*inputs)
    def layout(layer):  # weight paths below the top layer's (auto-numbered) name, and shapes
        return [(w.path.partition("/")[2], tuple(w.shape)) for w in layer.weights]

    assert layout(built) == layout(by_hand)
    by_hand.set_weights([keras.ops.convert_to_numpy(w) for w in built.weights])
    got, want = (keras.ops.convert_to_numpy(layer(*inputs)) for layer in (built, by_hand))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    return got


def test_three_deep_composition_builds_the_nested_layers_by_hand():
    """conditional-full:conditional-full:local: the adapter's inner attention is a ConditionalFull
    whose long-input attention is another one, whose long-input attention is local; every level
    gets the adapter's head size and dropout; the top level gets the explicit arguments."""
    x = np.random.default_rng(0).normal(size=(2, 8, 6)).astype("float32")
    built = make_attention("conditional-full:conditional-full:local", num_heads=2, key_dim=3, dropout=0.0, length_limit=4)
    top = built.attention
    assert isinstance(built, InnerAttentionAdapter) and isinstance(top, ConditionalFullAttention)
    assert isinstance(top.other_attention, ConditionalFullAttention) and isinstance(top.other_attention.other_attention, LocalAttention)
    assert top.length_limit == 4 and top.other_attention.length_limit == 512

    by_hand = InnerAttentionAdapter(
        num_heads=2, key_dim=3, dropout=0.0,
        attention=ConditionalFullAttention(
            other_attention=ConditionalFullAttention(other_attention=LocalAttention()), length_limit=4
        ),
    )
    _same_weights_same_outputs(built, by_hand, x, x)


def test_composition_reaches_the_innermost_attention_numerically():
    """conditional-full:linear with S above the limit runs linear attention: equal to the adapter
    around a LinearAttention built by hand, and different from full attention on the same weights."""
    x = np.random.default_rng(1).normal(size=(2, 8, 6)).astype("float32")
    built = make_attention("conditional-full:linear", num_heads=2, key_dim=3, length_limit=4)
    assert built.attention.other_attention.query_dimensions == 3
    linear = _same_weights_same_outputs(
        built, InnerAttentionAdapter(num_heads=2, key_dim=3, attention=LinearAttention(query_dimensions=3)), x, x
    )
    full = make_attention("full", num_heads=2, key_dim=3)
    full(x, x)
    full.set_weights(built.get_weights())
    assert not np.allclose(keras.ops.convert_to_numpy(full(x, x)), linear, atol=1e-4)


def test_a_block_composes_with_an_attention_name():
    """block 'encoder:conditional-full:linear' equals TransformerEncoderBlock(attention_type='conditional-full:linear')."""
    x = np.random.default_rng(2).normal(size=(2, 8, 6)).astype("float32")
    block = registry.build("block", "encoder:conditional-full:linear", num_attention_heads=2, inner_dim=8,
                           inner_activation="relu", attention_kwargs={"length_limit": 4})
    assert isinstance(block, TransformerEncoderBlock) and block.attention_type == "conditional-full:linear"
    by_hand = TransformerEncoderBlock(2, 8, "relu", attention_type="conditional-full:linear", attention_kwargs={"length_limit": 4})
    _same_weights_same_outputs(block, by_hand, x)
    assert isinstance(block.attention.attention.other_attention, LinearAttention)
