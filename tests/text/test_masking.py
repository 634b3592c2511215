"""Dynamic MLM masking (statistics on a large sample, checked against NumPy) and document packing."""

import numpy as np
import pytest
import tensorflow as tf

from nlpkit.errors import NlpkitError
from nlpkit.text.masking import MlmMasker, mask_dataset, pack_documents

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"]
WORDS = [f"w{i}" for i in range(600)]
PIECES = [f"##p{i}" for i in range(400)]
VOCAB = SPECIAL + WORDS + PIECES
PAD, UNK, CLS, SEP, MASK = range(5)
FIRST_WORD, FIRST_PIECE = len(SPECIAL), len(SPECIAL) + len(WORDS)
P = 12


def _batch(rng, batch=768, length=48, piece_share=0.35):
    """Random sequences: [CLS] tokens [SEP] [UNK]-sprinkled, then padding; words followed by '##' pieces."""
    ids = np.zeros((batch, length), np.int32)
    for row in range(batch):
        n = rng.integers(4, length + 1)
        body = np.where(
            rng.random(n - 2) < piece_share,
            rng.integers(FIRST_PIECE, len(VOCAB), n - 2),
            rng.integers(FIRST_WORD, FIRST_PIECE, n - 2),
        )
        body[rng.random(n - 2) < 0.03] = UNK
        ids[row, :n] = [CLS, *body, SEP]
    return ids, (ids != PAD).astype(np.int32)


def _run(masker, ids, mask, seed=(7, 0)):
    out = masker({"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask)}, tf.constant(seed, tf.int64))
    return {k: v.numpy() for k, v in out.items()}


def _chosen(out, shape):
    """Bool [B, T] of the chosen positions, rebuilt from positions and weights."""
    chosen = np.zeros(shape, bool)
    rows, cols = np.nonzero(out["masked_lm_weights"])
    chosen[rows, out["masked_lm_positions"][rows, cols]] = True
    return chosen


def _candidates(ids, mask):
    special = np.isin(ids, list(range(len(SPECIAL))))
    return (mask == 1) & ~special


def _word_ids(ids, candidates):
    """Reference word numbering: a candidate starts a word unless it is a '##' piece after a candidate."""
    previous = np.pad(candidates[:, :-1], ((0, 0), (1, 0)))
    starts = candidates & ~((ids >= FIRST_PIECE) & previous)
    return np.where(candidates, np.cumsum(starts, axis=1), -1)


@pytest.fixture(scope="module")
def sample():
    return _batch(np.random.default_rng(0))


def test_token_level_selection_count_split_and_outputs(sample):
    ids, mask = sample
    out = _run(MlmMasker(VOCAB, max_predictions_per_seq=P), ids, mask)
    chosen = _chosen(out, ids.shape)
    candidates = _candidates(ids, mask)
    n = candidates.sum(axis=1)
    # Exact count per sequence: round(0.15 n), at least 1, at most P (closed form).
    np.testing.assert_array_equal(chosen.sum(axis=1), np.minimum(np.maximum(np.round(0.15 * n), 1), P))
    assert not (chosen & ~candidates).any()  # never padding, [CLS], [SEP], [UNK]
    # Targets are the original ids at increasing positions; padding slots are zero.
    w = out["masked_lm_weights"]
    np.testing.assert_array_equal(out["masked_lm_ids"], np.take_along_axis(ids, out["masked_lm_positions"], 1) * w)
    assert (np.diff(np.where(w > 0, out["masked_lm_positions"], 10**6 + np.arange(P)), axis=1) > 0).all()
    assert (out["masked_lm_positions"][w == 0] == 0).all()
    # Unchosen positions are untouched; chosen ones split 80 / 10 / 10 (5 sigma tolerance).
    corrupted = out["input_word_ids"]
    np.testing.assert_array_equal(corrupted[~chosen], ids[~chosen])
    total = chosen.sum()
    masked = (corrupted[chosen] == MASK).mean()
    kept = (corrupted[chosen] == ids[chosen]).mean()
    randomised = 1 - masked - kept
    n_ordinary = len(WORDS) + len(PIECES)
    tolerance = lambda p: 5 * np.sqrt(p * (1 - p) / total)  # noqa: E731
    assert abs(masked - 0.8) < tolerance(0.8)
    assert abs(kept - (0.1 + 0.1 / n_ordinary)) < tolerance(0.1)
    assert abs(randomised - 0.1 * (1 - 1 / n_ordinary)) < tolerance(0.1)
    # Random replacements are ordinary tokens, never special ones.
    replaced = corrupted[chosen & (corrupted != ids) & (corrupted != MASK)]
    assert (replaced >= FIRST_WORD).all()


def test_every_position_equally_likely(sample):
    ids, mask = sample
    masker = MlmMasker(VOCAB, max_predictions_per_seq=P)
    candidates = _candidates(ids, mask)
    chosen = sum(_chosen(_run(masker, ids, mask, seed=(s, 1)), ids.shape).astype(float) for s in range(4))
    # Per position, chosen / candidate rate; sequences of different lengths share positions, so
    # compare with each row's own expected rate (count / candidates) summed over the same cells.
    expected_rate = (np.minimum(np.maximum(np.round(0.15 * candidates.sum(1)), 1), P) / candidates.sum(1))[:, None]
    for lo in range(1, 40, 8):  # position bands of 8
        band = slice(lo, lo + 8)
        want = 4 * (expected_rate * candidates[:, band]).sum()
        assert abs(chosen[:, band].sum() - want) < 5 * np.sqrt(want), (lo, chosen[:, band].sum(), want)


def test_whole_word_keeps_words_together(sample):
    ids, mask = sample
    out = _run(MlmMasker(VOCAB, max_predictions_per_seq=P, whole_word=True), ids, mask)
    chosen = _chosen(out, ids.shape)
    candidates = _candidates(ids, mask)
    words = _word_ids(ids, candidates)
    for row in range(ids.shape[0]):
        chosen_words = np.unique(words[row][chosen[row]])
        # Every piece of a chosen word is chosen, and nothing else.
        np.testing.assert_array_equal(np.isin(words[row], chosen_words) & candidates[row], chosen[row])
    budget = np.minimum(np.maximum(np.round(0.15 * candidates.sum(1)), 1), P)
    assert (chosen.sum(1) <= budget).all()
    assert not (chosen & ~candidates).any()
    # Greedy fill: on average within a fraction of a word of the budget.
    assert chosen.sum() / budget.sum() > 0.93
    assert (chosen.sum(1) > 0).mean() > 0.97


def test_seeded_and_deterministic(sample):
    ids, mask = sample
    masker = MlmMasker(VOCAB, max_predictions_per_seq=P, whole_word=True)
    first, again, other = (_run(masker, ids[:64], mask[:64], seed) for seed in [(1, 2), (1, 2), (1, 3)])
    np.testing.assert_array_equal(first["input_word_ids"], again["input_word_ids"])
    np.testing.assert_array_equal(first["masked_lm_positions"], again["masked_lm_positions"])
    assert (first["masked_lm_positions"] != other["masked_lm_positions"]).any()


def test_mask_dataset_seeds_each_batch_by_index(sample):
    ids, mask = sample
    masker = MlmMasker(VOCAB, max_predictions_per_seq=P)
    data = tf.data.Dataset.from_tensor_slices({"input_word_ids": ids[:64], "input_mask": mask[:64]}).batch(16)
    batches = list(mask_dataset(data, masker, seed=5).as_numpy_iterator())
    want = _run(masker, ids[16:32], mask[16:32], seed=(5, 1))  # batch 1 is seeded (seed, 1)
    np.testing.assert_array_equal(batches[1]["input_word_ids"], want["input_word_ids"])
    assert set(batches[0]) == {"input_word_ids", "input_mask", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights"}
    # Resuming at batch 2 gives batches 2, 3 exactly as the uninterrupted pass did.
    resumed = list(mask_dataset(data, masker, seed=5, skip=2).as_numpy_iterator())
    assert len(resumed) == 2
    for got, want in zip(resumed, batches[2:]):
        np.testing.assert_array_equal(got["input_word_ids"], want["input_word_ids"])
        np.testing.assert_array_equal(got["masked_lm_positions"], want["masked_lm_positions"])


def test_short_sequences_pad_predictions():
    ids = np.array([[CLS, FIRST_WORD, SEP]], np.int32)
    out = _run(MlmMasker(VOCAB, max_predictions_per_seq=5), ids, np.ones_like(ids))
    np.testing.assert_array_equal(out["masked_lm_positions"], [[1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out["masked_lm_weights"], [[1, 0, 0, 0, 0]])


def test_bad_arguments():
    with pytest.raises(NlpkitError, match="mask token"):
        MlmMasker(["[PAD]", "a"])
    with pytest.raises(NlpkitError, match="masked_lm_prob"):
        MlmMasker(VOCAB, masked_lm_prob=0.0)


def _documents(rng, n_docs=40):
    # Token ids encode (document, sentence, position) so a test can trace every token back.
    return [
        [[1000 * (d + 1) + 10 * s + k for k in range(rng.integers(1, 10))] for s in range(rng.integers(1, 12))]
        for d in range(n_docs)
    ]


def _segments(example):
    ids = example["input_word_ids"][example["input_mask"] == 1]
    assert ids[0] == 1 and ids[-1] == 2
    seps = np.flatnonzero(ids == 2)
    first, second = ids[1 : seps[0]], ids[seps[0] + 1 : -1]
    types = example["input_type_ids"][example["input_mask"] == 1]
    np.testing.assert_array_equal(types, [0] * (len(first) + 2) + [1] * (len(ids) - len(first) - 2))
    return first, second


def test_packing_keeps_document_order_and_length():
    docs = _documents(np.random.default_rng(1))
    examples = list(pack_documents(docs, seq_length=32, cls_id=1, sep_id=2, short_seq_prob=0.0))
    flat = [t for d in docs for s in d for t in s]
    emitted = []
    for example in examples:
        assert all(v.shape == (32,) for v in example.values())
        first, second = _segments(example)
        emitted += [*first, *second]
    # Without truncation every token appears once, in order (the documents fit 29 tokens per chunk
    # only sometimes, so allow truncation: the emitted tokens are an ordered subsequence).
    positions = {t: i for i, t in enumerate(flat)}
    order = [positions[t] for t in emitted]
    assert order == sorted(order) and len(emitted) > 0.8 * len(flat)
    lengths = [e["input_mask"].sum() for e in examples]
    assert np.mean(lengths) > 20  # chunks fill towards seq_length when short_seq_prob is 0


def test_short_seq_prob_makes_short_sequences():
    docs = _documents(np.random.default_rng(2), n_docs=200)
    lengths = lambda p: [  # noqa: E731
        e["input_mask"].sum() for e in pack_documents(docs, seq_length=64, cls_id=1, sep_id=2, short_seq_prob=p)
    ]
    assert np.mean(lengths(1.0)) < 0.8 * np.mean(lengths(0.0))


@pytest.mark.parametrize(
    "objective,label_key,relabel",
    [
        # swapped pairs run backwards (ids grow through a document)
        ("sop", "sentence_order_labels", lambda first, second: first[-1] > second[0]),
        # a random B comes from another document (ids encode the document in the thousands)
        ("nsp", "next_sentence_labels", lambda first, second: first[-1] // 1000 != second[0] // 1000),
    ],
)
def test_sentence_pair_labels(objective, label_key, relabel):
    docs = _documents(np.random.default_rng(3), n_docs=200)
    examples = list(pack_documents(docs, seq_length=48, cls_id=1, sep_id=2, objective=objective, seed=1))
    labels = np.array([e[label_key] for e in examples])
    assert 0.4 < labels.mean() < 0.6
    for example, label in zip(examples, labels):
        first, second = _segments(example)
        if len(first) and len(second):
            assert relabel(first, second) == bool(label)


def test_packing_bad_objective():
    with pytest.raises(NlpkitError, match="objective"):
        next(pack_documents([[[5]]], seq_length=16, cls_id=1, sep_id=2, objective="xyz"))
