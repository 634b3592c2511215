"""The real all-MiniLM-L6-v2 weights (6 layers, hidden 384), converted into nlpkit, against an
independent NumPy BERT forward pass reading the safetensors file directly."""

import numpy as np
import pytest
from safetensors.numpy import load_file

import nlpkit
from nlpkit.models.convert import convert
from tests.encoders import bert_reference as ref

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Transformers read whole sentences at once!",
    "Hello world",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    output = tmp_path_factory.mktemp("minilm") / "model"
    accounting = convert(ref.minilm_dir(), output)
    return output, accounting


@pytest.fixture(scope="module")
def batch():
    vocab = ref.read_vocab(ref.minilm_dir() / "vocab.txt")
    sequences = [ref.wordpiece(text, vocab) for text in SENTENCES]
    assert all(vocab["[UNK]"] not in s for s in sequences)
    return ref.pack(sequences, max(map(len, sequences)) + 2)


def test_every_tensor_is_accounted_for(converted):
    _, accounting = converted
    tensors = load_file(ref.minilm_dir() / "model.safetensors")
    assert accounting.count("set") == len(tensors) - 1  # all weights ...
    skipped = [row.source for row in accounting.rows if row.status.startswith("skipped")]
    assert skipped == ["embeddings.position_ids"]  # ... and the one buffer, with its reason
    assert not accounting.failures


def test_sequence_output_matches_numpy_bert(converted, batch):
    path, _ = converted
    ids, mask, type_ids = batch
    model = nlpkit.load_model(path)
    outputs = model(dict(input_word_ids=ids, input_mask=mask, input_type_ids=type_ids))
    want_sequence, want_pooled = ref.bert_forward(load_file(ref.minilm_dir() / "model.safetensors"), 12, ids, mask, type_ids)
    real = mask.astype(bool)
    got = np.asarray(outputs["sequence_output"])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[real], want_sequence[real], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(outputs["pooled_output"]), want_pooled, atol=1e-4, rtol=0)
    assert len(outputs["encoder_outputs"]) == 6
    np.testing.assert_array_equal(np.asarray(outputs["encoder_outputs"][-1]), got)


def test_padding_does_not_change_pooled_output(converted, batch):
    ids, mask, type_ids = batch
    model = nlpkit.load_model(converted[0])
    short = model(dict(input_word_ids=ids, input_mask=mask, input_type_ids=type_ids))
    pad = np.zeros((ids.shape[0], 5), "int32")
    padded = model(
        dict(
            input_word_ids=np.concatenate([ids, pad + 7], 1),  # junk ids under a zero mask
            input_mask=np.concatenate([mask, pad], 1),
            input_type_ids=np.concatenate([type_ids, pad], 1),
        )
    )
    np.testing.assert_allclose(np.asarray(padded["pooled_output"]), np.asarray(short["pooled_output"]), atol=1e-5)
