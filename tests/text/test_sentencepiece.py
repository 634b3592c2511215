"""SentencePiece on tensorflow-text against the sentencepiece library itself, with the real Mistral model."""

import numpy as np
import pytest
import sentencepiece

from nlpkit.data import bundled
from nlpkit.errors import NlpkitError
from nlpkit.text.sentencepiece import SentencePieceTokenizer, SentencepieceTokenizer, tf

MODEL = bundled.spm_model_path()
TEXTS = ["Hello world!", "Ünïcödé and 中文 text.", "  spaces   and\ttabs ", "½ ² emoji 😀", ""]


@pytest.fixture(scope="module")
def reference():
    return sentencepiece.SentencePieceProcessor(model_file=str(MODEL))


@pytest.mark.parametrize("add_bos,add_eos", [(False, False), (True, False), (True, True)])
def test_ids_match_the_sentencepiece_library(reference, add_bos, add_eos):
    tokenizer = SentencePieceTokenizer(MODEL, add_bos=add_bos, add_eos=add_eos)
    expected = reference.encode(TEXTS, add_bos=add_bos, add_eos=add_eos)
    assert tokenizer.tokenize(TEXTS).to_list() == expected


def test_detokenize_round_trip(reference):
    tokenizer = SentencePieceTokenizer(MODEL)
    ids = tokenizer.tokenize(TEXTS[:2])
    assert [t.decode() for t in tokenizer.detokenize(ids).numpy()] == [reference.decode(r) for r in ids.to_list()]
    assert tokenizer.detokenize(ids).numpy()[0] == b"Hello world!"


def test_special_ids_fall_back_to_bos_eos(reference):
    tokenizer = SentencePieceTokenizer(MODEL)
    assert (tokenizer.cls_id, tokenizer.sep_id) == (reference.bos_id(), reference.eos_id())
    assert tokenizer.vocab_size == reference.get_piece_size()


def test_layer_in_tf_data_and_saved_model(tmp_path, reference):
    layer = SentencepieceTokenizer.from_config(SentencepieceTokenizer(str(MODEL), add_bos=True).get_config())
    batch = next(iter(tf.data.Dataset.from_tensor_slices(TEXTS[:2]).batch(2).map(layer)))
    assert batch.to_list() == reference.encode(TEXTS[:2], add_bos=True)
    module = tf.Module()
    module.layer = layer
    module.serve = tf.function(lambda t: layer(t).to_tensor(), input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "spm"))
    out = tf.saved_model.load(str(tmp_path / "spm")).serve(tf.constant(["Hello world!"])).numpy()
    np.testing.assert_array_equal(out, [reference.encode("Hello world!", add_bos=True)])


def test_bad_model_files(tmp_path):
    with pytest.raises(NlpkitError, match="does not exist"):
        SentencePieceTokenizer(tmp_path / "missing.model")
    (tmp_path / "empty.model").write_bytes(b"")
    with pytest.raises(NlpkitError, match="empty"):
        SentencePieceTokenizer(tmp_path / "empty.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(NlpkitError, match="not a SentencePiece model"):
        SentencePieceTokenizer(tmp_path / "junk.model")
