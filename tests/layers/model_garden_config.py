"""The check every "builds from Model Garden's arguments" test makes of the built layer's config."""

import keras


def assert_config_holds_arguments(layer, arguments, renamed=None, unchecked=()):
    """`layer.get_config()` holds each of `arguments` (Model Garden's names and values) under its
    name, or nlpkit's where `renamed` maps it (initializers compared by class, activations by
    function), and `from_config` rebuilds a layer with the same config. Returns the config."""
    config = layer.get_config()
    for name, value in arguments.items():
        got = config[(renamed or {}).get(name, name)]
        if name in unchecked:
            continue
        if name.endswith("initializer"):
            assert got["class_name"] == keras.initializers.get(value).__class__.__name__, name
        elif name.endswith("activation"):
            assert keras.activations.get(got) is keras.activations.get(value), name
        else:
            assert got == value, f"{name}: {got!r} != {value!r}"
    assert type(layer).from_config(config).get_config() == config
    return config
