"""SentencePiece on tensorflow-text against the sentencepiece library itself, with the real Mistral model."""

import unicodedata

import numpy as np
import pytest
import sentencepiece

from nlpkit.data import bundled
from nlpkit.errors import NlpkitError
from nlpkit.text.sentencepiece import SentencePieceTokenizer, SentencepieceTokenizer, tf
from nlpkit.text.vocab_training import train_sentencepiece
from tests.layers.model_garden_config import assert_config_holds_arguments

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


# Offsets, sampling, lower_case / strip_diacritics, special ids and Model Garden's arguments (issue #18).
HAND_WRITTEN = [
    "Héllo, Wörld! Crème brûlée à São Paulo.",
    "東京都の天気は晴れ。中文 text 한국어",
    "emoji 😀👍🏽 and 🇫🇷 flags! ΟΔΟΣ",
    "  two  spaces and\ttab",
]


def real_lines(count=40):
    return bundled.news_texts(limit=count) + [text for text, _ in bundled.reviews()[:count]]


@pytest.fixture(scope="module")
def unigram_model(tmp_path_factory):
    """A 1,000-piece unigram model trained on the bundled news (sampling needs a unigram model)."""
    path = tmp_path_factory.mktemp("spm") / "news_unigram.model"
    news = bundled.news_texts(limit=300)
    train_sentencepiece(lambda: [news], 1000, path, model_type="unigram")
    return path


def python_normalize(text, lower_case, strip_diacritics):
    """Model Garden's pre-normalisation written with unicodedata: strip marks after NFD, then NFKC case folding."""
    if strip_diacritics:
        text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    if lower_case:
        text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return text


def check_slices(tokenizer, texts, ids, starts, ends, normalize):
    """Each piece's offsets slice the original text back to the piece ("▁" = space; the model's dummy
    prefix "▁" at the start has no text). tensorflow-text gives the leading bytes of a byte-fallback
    character empty spans and the whole character to its last byte: those bytes together give the slice."""
    for text, row_ids, row_starts, row_ends in zip(texts, ids.to_list(), starts.to_list(), ends.to_list()):
        raw, pending = text.encode(), b""
        for token_id, start, end in zip(row_ids, row_starts, row_ends):
            piece = tokenizer.processor.id_to_piece(token_id)
            if piece.startswith("<0x") and piece.endswith(">"):
                pending += bytes([int(piece[3:-1], 16)])
                if start == end:
                    continue
                surface, pending = pending.decode(), b""
            else:
                surface = piece.replace("▁", " ")
            expected = normalize(raw[start:end].decode())
            assert surface == expected or (start == 0 and surface == " " + expected), (text, piece, expected)
        assert pending == b""


@pytest.mark.parametrize("lower_case,strip_diacritics", [(False, False), (True, False), (True, True)])
def test_offsets_slice_the_original_text_back_to_each_piece(lower_case, strip_diacritics):
    tokenizer = SentencePieceTokenizer(MODEL, lower_case=lower_case, strip_diacritics=strip_diacritics)
    texts = HAND_WRITTEN + real_lines()
    ids, starts, ends = tokenizer.tokenize_with_offsets(texts)
    assert ids.to_list() == tokenizer.tokenize(texts).to_list()
    check_slices(tokenizer, texts, ids, starts, ends, lambda t: python_normalize(t, lower_case, strip_diacritics))


@pytest.mark.parametrize("lower_case,strip_diacritics", [(True, False), (False, True), (True, True)])
def test_lower_case_and_strip_diacritics_equal_python(reference, lower_case, strip_diacritics):
    tokenizer = SentencePieceTokenizer(MODEL, lower_case=lower_case, strip_diacritics=strip_diacritics)
    texts = HAND_WRITTEN + real_lines()
    normalized = [python_normalize(text, lower_case, strip_diacritics) for text in texts]
    assert [t.decode() for t in tokenizer.normalize(texts).numpy()] == normalized
    assert tokenizer.tokenize(texts).to_list() == reference.encode(normalized)


def test_sampling_varies_between_calls_and_decodes_to_the_same_text(unigram_model):
    reference = sentencepiece.SentencePieceProcessor(model_file=str(unigram_model))
    texts = [text for text, _ in bundled.reviews()[:20]]
    layer = SentencepieceTokenizer(str(unigram_model), nbest_size=-1, alpha=0.1)
    samples = [layer(tf.constant(texts), training=True).to_list() for _ in range(4)]
    assert any(sample != samples[0] for sample in samples[1:])
    decoded = [reference.decode(ids) for ids in reference.encode(texts)]
    for sample in samples:
        assert [reference.decode(ids) for ids in sample] == decoded
    # Deterministic in inference, and with nbest_size=0 even in training.
    assert layer(tf.constant(texts)).to_list() == reference.encode(texts)
    plain = SentencepieceTokenizer(str(unigram_model), nbest_size=0, alpha=0.1)
    assert plain(tf.constant(texts), training=True).to_list() == reference.encode(texts)


def test_special_tokens_dict_has_the_model_ids(reference, unigram_model):
    trained = sentencepiece.SentencePieceProcessor(model_file=str(unigram_model))
    expected = {"vocab_size": trained.get_piece_size(), "start_of_sequence_id": trained.piece_to_id("[CLS]"),
                "end_of_segment_id": trained.piece_to_id("[SEP]"), "padding_id": trained.piece_to_id("<pad>"),
                "mask_id": trained.piece_to_id("[MASK]")}
    assert SentencepieceTokenizer(str(unigram_model)).get_special_tokens_dict() == expected
    # Mistral's model has no [CLS]/[SEP]/[MASK]: BOS/EOS as nlpkit packs them, and no mask_id.
    assert SentencePieceTokenizer(MODEL).get_special_tokens_dict() == {
        "vocab_size": reference.get_piece_size(), "start_of_sequence_id": reference.bos_id(),
        "end_of_segment_id": reference.eos_id(), "padding_id": 0,
    }


@pytest.mark.parametrize("source", ["model_file_path", "model_serialized_proto"])
def test_built_from_model_garden_arguments(reference, source):
    model = {"model_file_path": str(MODEL), "model_serialized_proto": MODEL.read_bytes()}[source]
    model_garden = {source: model, "lower_case": True, "tokenize_with_offsets": True, "nbest_size": 0,
                    "alpha": 1.0, "strip_diacritics": True}
    layer = SentencepieceTokenizer(**model_garden)
    config = assert_config_holds_arguments(  # the config keeps the proto as base64 text
        layer, model_garden, renamed={"model_file_path": "model"}, unchecked=("model_serialized_proto",)
    )
    rebuilt = SentencepieceTokenizer.from_config(config)
    ids, starts, ends = rebuilt(tf.constant(["Héllo World"]))
    assert ids.to_list() == reference.encode(["hello world"])
    check_slices(rebuilt.tokenizer, ["Héllo World"], ids, starts, ends, lambda t: python_normalize(t, True, True))
    with pytest.raises(NlpkitError, match="exactly one"):
        SentencepieceTokenizer(model_file_path=str(MODEL), model_serialized_proto=MODEL.read_bytes())
