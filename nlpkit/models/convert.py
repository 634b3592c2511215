"""Import pretrained BERT weights into a model directory, and export them back to Hugging Face.

Sources: a Hugging Face BERT folder (`config.json`, `vocab.txt`, `model.safetensors` or
`pytorch_model.bin`) or Google's original TensorFlow release (`bert_config.json`, `vocab.txt`,
`bert_model.ckpt.*`). See `checkpoint_import` for the readers.

Strict weight accounting: every source tensor must be used and every variable of the encoder
must be set, or the conversion fails - unless the caller allows it with glob patterns
(`allow_unused=["cls.*"]` for a pretraining head, `allow_missing=[...]`). Tensors that are not
weights (optimizer state, HF's `position_ids` buffer) are listed as skipped, with the reason.
The `Accounting` table records it all.
"""

import contextlib
import dataclasses
import fnmatch
import json
import re
from pathlib import Path

import numpy as np

from nlpkit.encoders.base import weights_to_be_loaded
from nlpkit.encoders.presets import build_encoder, encoder_config, read_config_file, validate_config
from nlpkit.errors import NlpkitError
from nlpkit.io import atomic_dir
from nlpkit.models import checkpoint_import
from nlpkit.models.model_dir import dummy_inputs, load_model, read_config, save_model_dir, tokenizer_assets

# HF config key -> BertEncoder argument.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_attention_heads",
    "max_position_embeddings": "max_sequence_length",
    "type_vocab_size": "type_vocab_size",
    "intermediate_size": "inner_dim",
    "hidden_act": "inner_activation",
    "hidden_dropout_prob": "output_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "initializer_range": "initializer_range",
    "layer_norm_eps": "norm_epsilon",
}
_ACTIVATIONS = ("gelu", "relu", "silu", "tanh")  # names HF and Keras mean the same by
_BUFFERS = {"embeddings.position_ids": "buffer (position indices), not a weight"}


@dataclasses.dataclass
class Row:
    source: str  # name in the checkpoint ('' for a target nothing set)
    source_shape: tuple
    target: str  # variable path in the model ('' for an unused source)
    target_shape: tuple
    status: str  # "set", "skipped: why", "unused", "unused (allowed)", "missing", "missing (allowed)"


@dataclasses.dataclass
class Accounting:
    rows: list

    @property
    def failures(self):
        return [row for row in self.rows if row.status in ("unused", "missing")]

    def count(self, prefix):
        """Rows whose status starts with `prefix` ("set", "skipped", "unused", "missing")."""
        return sum(row.status.startswith(prefix) for row in self.rows)


@dataclasses.dataclass
class Link:
    """One source tensor <-> one model variable, with the layout change both ways."""

    source: str
    variable: object
    to_model: object  # fn(np array in HF layout) -> array of the variable's shape
    to_source: object  # the inverse


# ---------------------------------------------------------------------------------------------
# configs


def bert_config_from_hf(hf_config, source="config.json"):
    """HF / Google `config.json` -> nlpkit BERT config (with kind)."""
    model_type = hf_config.get("model_type", "bert")
    if model_type != "bert":
        raise NlpkitError(f"{source}: model_type '{model_type}' is not BERT", hint="only BERT checkpoints convert")
    embedding_type = hf_config.get("position_embedding_type", "absolute")
    if embedding_type != "absolute":
        raise NlpkitError(f"{source}: position_embedding_type '{embedding_type}' is not supported", hint="use absolute")
    activation = hf_config.get("hidden_act", "gelu")
    if activation not in _ACTIVATIONS:
        raise NlpkitError(f"{source}: hidden_act '{activation}' is not supported", hint=f"one of {', '.join(_ACTIVATIONS)}")
    config = {"kind": "bert"}
    for hf_key, key in _CONFIG_KEYS.items():
        if hf_key in hf_config:
            config[key] = hf_config[hf_key]
    for required in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if required not in hf_config:
            raise NlpkitError(f"{source}: missing key '{required}'", hint="is this a BERT config.json?")
    hf_names = {key: hf_key for hf_key, key in _CONFIG_KEYS.items()}
    return validate_config(config, source, key_names=hf_names)


def hf_config_from_bert(config):
    """nlpkit BERT config -> HF `config.json` content."""
    hf_config = {"architectures": ["BertModel"], "model_type": "bert", "position_embedding_type": "absolute"}
    defaults = {"max_sequence_length": 512, "type_vocab_size": 2, "norm_epsilon": 1e-12, "inner_activation": "gelu"}
    for hf_key, key in _CONFIG_KEYS.items():
        hf_config[hf_key] = config.get(key, defaults.get(key))
    return {key: value for key, value in hf_config.items() if value is not None}


def check_hf_compatible(config):
    """Refuse encoder configs the HF BERT format cannot express."""
    unsupported = {
        "embedding_width": lambda v: v not in (None, config.get("hidden_size")),
        "attention_type": lambda v: v != "multi_head",
        "norm_first": bool,
        "attention_kwargs": bool,
    }
    if config.get("kind") != "bert":
        raise NlpkitError(f"a '{config.get('kind')}' encoder has no Hugging Face BERT form", hint="export a BERT model")
    for key, is_unsupported in unsupported.items():
        if key in config and is_unsupported(config[key]):
            raise NlpkitError(f"{key}={config[key]!r} has no Hugging Face BERT equivalent", hint="export a plain BERT")


# ---------------------------------------------------------------------------------------------
# the weight map


def bert_links(encoder):
    """Every variable of a built `BertEncoder`, linked to its HF tensor name."""
    check_hf_compatible(encoder_config(encoder))
    heads, head_size = encoder.num_attention_heads, encoder.hidden_size // encoder.num_attention_heads
    links = [
        _same("embeddings.word_embeddings.weight", encoder.word_embeddings.embeddings),
        _same("embeddings.position_embeddings.weight", encoder.position_embedding.position_embeddings),
        _same("embeddings.token_type_embeddings.weight", encoder.type_embeddings.embeddings),
        *_norm("embeddings.LayerNorm", encoder.embedding_norm),
        *_dense("pooler.dense", encoder.pooler),
    ]
    for index, block in enumerate(encoder.transformer_layers):
        prefix, attention = f"encoder.layer.{index}.", block.attention
        for part, dense in (("query", attention.query_dense), ("key", attention.key_dense), ("value", attention.value_dense)):
            links.append(_heads_in(f"{prefix}attention.self.{part}", dense, heads, head_size))
            links.append(_reshaped(f"{prefix}attention.self.{part}.bias", dense.bias, (heads, head_size)))
        links.append(_heads_out(f"{prefix}attention.output.dense.weight", attention.output_dense.kernel, heads, head_size))
        links.append(_same(f"{prefix}attention.output.dense.bias", attention.output_dense.bias))
        links += _norm(f"{prefix}attention.output.LayerNorm", block.attention_layer_norm)
        links += _dense(f"{prefix}intermediate.dense", block.feedforward.inner_dense)
        links += _dense(f"{prefix}output.dense", block.feedforward.output_dense)
        links += _norm(f"{prefix}output.LayerNorm", block.output_layer_norm)
    return links


def _same(name, variable):
    return Link(name, variable, lambda a: a, lambda a: a)


def _reshaped(name, variable, shape):
    return Link(name, variable, lambda a: a.reshape(shape), lambda a: a.reshape(-1))


def _dense(prefix, layer):
    """HF Linear `weight [out, in]`, `bias [out]` <-> Keras Dense `kernel [in, out]`, `bias`."""
    return [
        Link(f"{prefix}.weight", layer.kernel, lambda a: a.T, lambda a: a.T),
        _same(f"{prefix}.bias", layer.bias),
    ]


def _norm(prefix, layer):
    return [_same(f"{prefix}.weight", layer.gamma), _same(f"{prefix}.bias", layer.beta)]


def _heads_in(prefix, dense, heads, head_size):
    """HF `weight [N*H, D]` <-> Keras EinsumDense `kernel [D, N, H]`."""
    width = dense.kernel.shape[0]
    return Link(
        f"{prefix}.weight",
        dense.kernel,
        lambda a: a.T.reshape(width, heads, head_size),
        lambda a: a.reshape(width, heads * head_size).T,
    )


def _heads_out(name, kernel, heads, head_size):
    """HF `weight [D, N*H]` <-> Keras EinsumDense `kernel [N, H, D]`."""
    width = kernel.shape[-1]
    return Link(
        name,
        kernel,
        lambda a: a.T.reshape(heads, head_size, width),
        lambda a: a.reshape(heads * head_size, width).T,
    )


# ---------------------------------------------------------------------------------------------
# import / export


def _strip_model_prefix(tensors):
    """`bert.encoder...` (BertForPreTraining & co) -> `encoder...`; other names unchanged."""
    if any(name.startswith("bert.") for name in tensors):
        return {(name[len("bert.") :] if name.startswith("bert.") else name): t for name, t in tensors.items()}
    return tensors


def assign_weights(links, tensors, *, allow_unused=(), allow_missing=()):
    """Set every linked variable from `tensors` ({name: SourceTensor}); return the Accounting.

    Raises NlpkitError if a shape does not fit, or if anything is unused or missing that the
    glob patterns do not allow (the table is attached to the error as `.accounting`).
    """
    rows, used = [], set()
    for link in links:
        target_shape = tuple(link.variable.shape)
        tensor = tensors.get(link.source)
        if tensor is None:
            allowed = _matches_any(link.source, allow_missing) or _matches_any(link.variable.path, allow_missing)
            status = "missing (allowed)" if allowed else "missing"
            rows.append(Row(link.source, (), link.variable.path, target_shape, status))
            continue
        value = link.to_model(np.asarray(tensor.value))
        if tuple(value.shape) != target_shape:
            raise NlpkitError(
                f"{tensor.origin} has shape {tuple(tensor.value.shape)}, which does not fit {link.variable.path} "
                f"{target_shape}",
                hint="the config.json does not describe this checkpoint",
            )
        link.variable.assign(value.astype(link.variable.dtype))
        used.add(link.source)
        rows.append(Row(tensor.origin, tuple(tensor.value.shape), link.variable.path, target_shape, "set"))
    for name, tensor in sorted(tensors.items()):
        if name in used:
            continue
        reason = tensor.skip_reason or _BUFFERS.get(name)
        if reason:
            status = f"skipped: {reason}"
        elif _matches_any(tensor.origin, allow_unused) or _matches_any(name, allow_unused):
            status = "unused (allowed)"
        else:
            status = "unused"
        rows.append(Row(tensor.origin, tuple(tensor.value.shape), "", (), status))
    accounting = Accounting(rows)
    if accounting.failures:
        raise _accounting_error(accounting)
    return accounting


def _accounting_error(accounting):
    first = accounting.failures[0]
    unused = sum(row.status == "unused" for row in accounting.rows)
    missing = sum(row.status == "missing" for row in accounting.rows)
    option = "--allow-unused" if first.status == "unused" else "--allow-missing"
    error = NlpkitError(
        f"weight accounting failed: {unused} unused source tensor(s), {missing} model variable(s) not set; "
        f"first: {first.status} '{first.source or first.target}'",
        hint=f"pass {option} PATTERN if that is intended",
    )
    error.accounting = accounting
    return error


def _matches_any(name, patterns):
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


@dataclasses.dataclass
class Source:
    """What a conversion source folder holds."""

    config: dict  # nlpkit config
    tensors: dict  # {hf name: SourceTensor}
    vocab: Path
    lower_case: bool
    weights_file: Path


def read_source(src):
    """Locate and read a HF BERT folder, a Google TF BERT folder, or a TF checkpoint prefix."""
    src = Path(src)
    folder = src if src.is_dir() else src.parent
    if src.is_dir():
        weights = _find_weights(src)
    elif Path(f"{src}.index").is_file():
        weights = src
    elif src.is_file():
        raise NlpkitError(f"{src} is a file", hint=f"pass the folder that holds it: {folder}")
    else:
        raise NlpkitError(f"{src} does not exist", hint="pass a folder with config.json, vocab.txt and the weights")
    config_path = next((folder / n for n in ("config.json", "bert_config.json") if (folder / n).is_file()), None)
    if config_path is None:
        raise NlpkitError(f"{folder}: no config.json or bert_config.json", hint="the BERT config must sit beside the weights")
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise NlpkitError(f"{folder}: no vocab.txt", hint="the WordPiece vocabulary must sit beside the weights")
    hf_config = read_config_file(config_path)
    if weights.suffix == ".safetensors":
        tensors = checkpoint_import.read_safetensors(weights)
    elif weights.suffix == ".bin":
        tensors = checkpoint_import.read_pytorch_bin(weights)
    else:
        tensors = checkpoint_import.read_tf_checkpoint(weights)
    return Source(
        config=bert_config_from_hf(hf_config, str(config_path)),
        tensors=_strip_model_prefix(tensors),
        vocab=vocab,
        lower_case=_lower_case(folder, vocab),
        weights_file=weights,
    )


def _find_weights(folder):
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    prefix = checkpoint_import.find_tf_checkpoint(folder)
    if prefix is None:
        raise NlpkitError(
            f"{folder}: no model.safetensors, pytorch_model.bin or TF checkpoint (*.ckpt.index)",
            hint="pass the folder that holds the weights",
        )
    return prefix


def _lower_case(folder, vocab):
    """From tokenizer_config.json if present; else: an uncased vocab has no upper-case token."""
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        setting = read_config_file(tokenizer_config).get("do_lower_case")
        if isinstance(setting, bool):
            return bool(setting)
    with open(vocab, encoding="utf-8") as file:
        return not any(re.search(r"[A-Z]", line) for line in file if not line.startswith("["))


def convert(src, output, *, allow_unused=(), allow_missing=(), overwrite=False):
    """Convert a pretrained BERT (see `read_source`) into a model directory; returns the Accounting."""
    source = read_source(src)
    # Zeros are as good as random values for variables the checkpoint sets, and much faster.
    with contextlib.nullcontext() if allow_missing else weights_to_be_loaded():
        encoder = build_encoder(source.config)
        encoder(dummy_inputs(), training=False)
    accounting = assign_weights(bert_links(encoder), source.tensors, allow_unused=allow_unused, allow_missing=allow_missing)
    save_model_dir(encoder, source.config, source.vocab, output, lower_case=source.lower_case, overwrite=overwrite)
    return accounting


def export_hf(model_dir, output, *, overwrite=False):
    """Write a model directory's BERT encoder as a Hugging Face folder (safetensors)."""
    from safetensors.numpy import save_file

    document = read_config(model_dir)
    config = document["encoder"]
    check_hf_compatible(config)
    encoder = load_model(model_dir)
    if not hasattr(encoder, "transformer_layers"):
        raise NlpkitError(f"{model_dir} holds a model with a head", hint="export the encoder's model directory")
    assets = tokenizer_assets(model_dir)
    if not assets or assets["type"] != "wordpiece":
        raise NlpkitError(f"{model_dir} has no WordPiece vocab.txt", hint="HF BERT needs one; rebuild with --vocab")
    tensors = {link.source: np.ascontiguousarray(link.to_source(np.asarray(link.variable))) for link in bert_links(encoder)}
    with atomic_dir(output, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config_from_bert(config), indent=2) + "\n", encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(
            json.dumps({"do_lower_case": assets.get("lower_case", True), "tokenizer_class": "BertTokenizer"}, indent=2)
            + "\n",
            encoding="utf-8",
        )
        (tmp / "vocab.txt").write_bytes(assets["path"].read_bytes())
    return sorted(tensors)
