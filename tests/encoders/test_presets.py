"""Presets and user configs: published sizes, config round trips, readable validation errors."""

import json

import pytest

from nlpkit.encoders.presets import available_presets, build_encoder, encoder_config, load_config, load_preset
from nlpkit.errors import NlpkitError

# (layers, hidden size, heads, feed-forward width): Devlin et al. 2018 and Turc et al. 2019.
PUBLISHED_BERT = {
    "bert_tiny": (2, 128, 2, 512),
    "bert_mini": (4, 256, 4, 1024),
    "bert_small": (4, 512, 8, 2048),
    "bert_medium": (8, 512, 8, 2048),
    "bert_base": (12, 768, 12, 3072),
    "bert_large": (24, 1024, 16, 4096),
}
REQUIRED = [*PUBLISHED_BERT, "mobilebert_tiny", "mobilebert_base", "transformer_xl_small"]


def test_required_presets_exist():
    assert set(REQUIRED) <= set(available_presets())


@pytest.mark.parametrize("name", sorted(PUBLISHED_BERT))
def test_bert_presets_have_the_published_sizes(name):
    config = load_preset(name)
    sizes = (config["num_layers"], config["hidden_size"], config["num_attention_heads"], config["inner_dim"])
    assert sizes == PUBLISHED_BERT[name]
    assert (config["vocab_size"], config["max_sequence_length"], config["type_vocab_size"]) == (30522, 512, 2)


def test_mobilebert_presets_have_the_published_sizes():
    for name, stacked in (("mobilebert_tiny", 2), ("mobilebert_base", 4)):
        config = load_preset(name)
        assert (config["num_layers"], config["hidden_size"], config["intra_bottleneck_size"]) == (24, 512, 128)
        assert (config["embedding_width"], config["num_attention_heads"], config["inner_dim"]) == (128, 4, 512)
        assert config["num_feedforward_networks"] == stacked


@pytest.mark.parametrize("name", available_presets())
def test_config_round_trip_without_building(name):
    config = load_preset(name)
    encoder = build_encoder(config)  # constructed, not built: no weights allocated
    assert not encoder.weights
    expected = {key: value for key, value in config.items() if key != "description"}
    rebuilt = encoder_config(encoder)
    assert {key: rebuilt[key] for key in expected} == expected
    assert encoder_config(build_encoder(rebuilt)) == rebuilt
    assert type(encoder).from_config(encoder.get_config()).get_config() == encoder.get_config()


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_user_yaml_and_json_configs_build(tmp_path):
    yaml_path = _write(tmp_path, "tiny.yaml", "kind: bert\nvocab_size: 50\nhidden_size: 16\nnum_layers: 1\nnum_attention_heads: 2\n")
    assert load_config(yaml_path)["hidden_size"] == 16
    json_path = _write(tmp_path, "tiny.json", json.dumps({"kind": "mobilebert", "vocab_size": 50, "num_layers": 1}))
    assert build_encoder(load_config(json_path)).num_layers == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("kind: bert\nvocab_size: 50\nhiden_size: 16\n", r"bad.yaml: unknown key 'hiden_size' for kind 'bert' \(did you mean 'hidden_size'\?\)"),
        ("kind: bert\nvocab_size: 50\nnum_layers: '12'\n", r"bad.yaml: key 'num_layers' must be int, got str '12'"),
        ("kind: bert\nvocab_size: 50\noutput_range: 1.5\n", r"key 'output_range' must be int or null, got float 1.5"),
        ("kind: bert\nvocab_size: 50\nnorm_first: 1\n", r"key 'norm_first' must be bool"),
        ("kind: bart\n", r"bad.yaml: unknown kind 'bart'"),
        ("vocab_size: 50\n", r"bad.yaml: missing key 'kind'"),
        ("kind: bert\nhidden_size: 16\n", r"bad.yaml: missing key 'vocab_size'"),
        ("kind: bert\n  vocab_size: [50\n", r"bad.yaml:2: invalid YAML"),
        ("- just\n- a list\n", r"bad.yaml: a config must be a mapping"),
    ],
)
def test_bad_configs_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(NlpkitError, match=message):
        load_config(_write(tmp_path, "bad.yaml", text))


def test_bad_json_and_unknown_preset(tmp_path):
    with pytest.raises(NlpkitError, match=r"bad.json:2: invalid JSON"):
        load_config(_write(tmp_path, "bad.json", '{"kind": "bert",\n "vocab_size": }'))
    with pytest.raises(NlpkitError, match=r"unknown preset 'bert_tinny' \(did you mean 'bert_tiny'\?\)"):
        load_preset("bert_tinny")
    with pytest.raises(NlpkitError, match="config file .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


def _size_keys():
    """(preset, key) for every bounded size argument a preset's encoder takes."""
    from nlpkit.encoders.presets import SIZE_BOUNDS, constructor_types, encoder_class

    pairs = []
    for name in available_presets():
        config = load_preset(name)
        pairs += [(name, key) for key in constructor_types(encoder_class(config["kind"])) if key in SIZE_BOUNDS]
    return pairs


@pytest.mark.parametrize("name,key", _size_keys())
def test_sizes_past_their_bound_are_refused_naming_key_and_bound(name, key):
    from nlpkit.encoders.presets import SIZE_BOUNDS, validate_config

    low, high = SIZE_BOUNDS[key]
    config = load_preset(name)
    validate_config({**config, key: high})  # the bound itself is allowed
    for value in (low - 1, high + 1):
        with pytest.raises(NlpkitError, match=rf"src.yaml: key '{key}' is {value}, outside the supported range {low}\.\.{high}"):
            validate_config({**config, key: value}, source="src.yaml")


def test_translated_configs_name_the_key_the_user_wrote():
    from nlpkit.encoders.presets import validate_config

    config = {**load_preset("bert_tiny"), "num_layers": 1000000}
    with pytest.raises(NlpkitError, match="config.json: key 'num_hidden_layers' is 1000000"):
        validate_config(config, "config.json", key_names={"num_layers": "num_hidden_layers"})


def test_config_folder_is_not_taken_for_a_preset_name(tmp_path):
    with pytest.raises(NlpkitError, match="is a folder, not a config file"):
        load_config(tmp_path)
