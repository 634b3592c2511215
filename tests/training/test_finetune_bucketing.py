"""Length bucketing of fine-tuning batches (`nlpkit.data.buckets`, `finetune --bucketing`), on real packed reviews.

Checked against what bucketing must preserve: the same batches for the same (seed, epoch) and
resume point, every row once per epoch, no row ever cut, and the model's outputs for a row
unchanged whether it is padded to --seq-length or only to its bucket.
"""

import collections

import numpy as np
import pytest

from nlpkit.data import buckets
from nlpkit.data.bundled import bert_vocab_path, reviews
from nlpkit.data.labelled import TextPacker

SEQ = 48
MICRO = 8


@pytest.fixture(scope="module")
def packed():
    texts = [text for text, _ in reviews()[:200]]
    inputs = TextPacker(str(bert_vocab_path()), SEQ).pack(texts)
    labels = np.arange(len(texts), dtype="int32")  # the row's own index: shows which row each batch holds
    return inputs, labels


def _batches(inputs, labels, count, seed=0, skip=0, token_targets=None, micro=MICRO):
    lengths = buckets.row_lengths(inputs["input_mask"])
    columns = (inputs, labels) if token_targets is None else (inputs, labels, token_targets)
    dataset = buckets.epoch_batches(columns, micro, seed, skip, lengths=lengths,
                                    boundaries=buckets.bucket_boundaries(SEQ), cut=(True, False, True))
    return [tuple(np.asarray(part) if not isinstance(part, dict) else {k: np.asarray(v) for k, v in part.items()}
                  for part in batch) for batch in dataset.take(count)]


def test_row_lengths_match_a_python_count(packed):
    inputs, _ = packed
    want = [max((i + 1 for i, m in enumerate(row) if m), default=0) for row in inputs["input_mask"].tolist()]
    assert buckets.row_lengths(inputs["input_mask"]).tolist() == want


def test_the_order_is_a_function_of_seed_and_epoch_and_resumes_at_any_batch(packed):
    inputs, labels = packed
    first = [batch[1].tolist() for batch in _batches(inputs, labels, 60)]
    again = [batch[1].tolist() for batch in _batches(inputs, labels, 60)]
    assert first == again
    resumed = [batch[1].tolist() for batch in _batches(inputs, labels, 20, skip=40)]
    assert resumed == first[40:]
    buckets.tf.random.set_seed(12345)  # another process: other global seed, other ops made before
    buckets.tf.random.uniform([3])
    rebuilt = [batch[1].tolist() for batch in _batches(inputs, labels, 60)]
    assert rebuilt == first
    other_seed = [batch[1].tolist() for batch in _batches(inputs, labels, 60, seed=1)]
    assert other_seed != first
    per_epoch = len(labels) // MICRO
    assert first[:per_epoch] != first[per_epoch:2 * per_epoch]  # each epoch draws its own order


def test_every_row_is_visited_exactly_once_per_epoch(packed):
    inputs, labels = packed
    per_epoch = len(labels) // MICRO  # 200 rows, 25 micro-batches: epochs line up with batches
    stream = [row for batch in _batches(inputs, labels, 3 * per_epoch) for row in batch[1].tolist()]
    for epoch in range(3):
        assert sorted(stream[epoch * len(labels):(epoch + 1) * len(labels)]) == list(range(len(labels)))


def test_group_by_length_is_a_permutation_with_the_short_chunk_last():
    """n = 103 rows, chunks of 8 in windows of 32: every row once, chunks of sorted lengths, the short one last."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 49, 103).astype("int32")
    order = rng.permutation(103).astype("int64")
    got = buckets.group_by_length(buckets.tf.constant(order), buckets.tf.constant(lengths), 32, 8, [0, 1]).numpy()
    assert sorted(got.tolist()) == list(range(103))
    for window in range(0, 103, 32):  # a window holds the same rows as before, only reordered
        assert sorted(got[window:window + 32].tolist()) == sorted(order[window:window + 32].tolist())
    for start in range(0, 96, 8):  # each chunk: rows of one sorted run of its window
        chunk = lengths[got[start:start + 8]]
        assert np.all(np.diff(chunk) >= 0)
    assert sorted(lengths[got[96:]].tolist()) == sorted(lengths[order[96:]])[-7:]  # the last window's longest


def test_a_batch_is_cut_to_the_smallest_bucket_holding_its_longest_row(packed):
    inputs, labels = packed
    lengths = buckets.row_lengths(inputs["input_mask"])
    boundaries = buckets.bucket_boundaries(SEQ)
    token_targets = np.where(inputs["input_mask"] == 1, inputs["input_word_ids"] % 7, -100).astype("int32")
    widths = collections.Counter()
    for features, rows, targets in _batches(inputs, labels, 50, token_targets=token_targets):
        width = features["input_word_ids"].shape[1]
        longest = lengths[rows].max()
        assert width >= longest and width == min(b for b in boundaries if b >= longest)
        for name, column in features.items():  # nothing but padding dropped
            np.testing.assert_array_equal(column, inputs[name][rows, :width])
            assert not inputs[name][rows, width:].any()
        np.testing.assert_array_equal(targets, token_targets[rows, :width])
        widths[width] += 1
    assert len(widths) > 2 and sum(w * n for w, n in widths.items()) < 0.8 * SEQ * sum(widths.values())


def test_bucket_boundaries():
    assert buckets.bucket_boundaries(48) == (8, 16, 24, 32, 40, 48)
    assert buckets.bucket_boundaries(128, compiled=True) == (32, 64, 96, 128)
    assert buckets.bucket_boundaries(50, compiled=True) == (16, 32, 48, 50)
    assert buckets.bucket_boundaries(6) == (6,)


def _models():
    import keras

    from nlpkit.encoders.presets import build_encoder
    from nlpkit.models import tasks
    from nlpkit.models.classifier import TextClassifier
    from tests.classifier_fixtures import TINY_ENCODER

    keras.utils.set_random_seed(3)
    encoder = build_encoder({**TINY_ENCODER, "num_layers": 2})
    return {"classification": TextClassifier(encoder, 3), "sngp": TextClassifier(encoder, 3, head="sngp"),
            "multi-label": tasks.MultiLabelClassifier(encoder, num_labels=3),
            "regression": tasks.TextRegressor(encoder, target_mean=0.0, target_std=1.0),
            "token-classification": tasks.TokenTagger(encoder, num_tags=5)}


@pytest.mark.parametrize("task", ["classification", "sngp", "multi-label", "regression", "token-classification"])
def test_outputs_of_a_row_do_not_depend_on_its_padding(packed, task):
    """The same rows through the model padded to 48 and cut to their bucket: equal outputs (masked positions
    change nothing), on the real positions for the per-token task."""
    inputs, labels = packed
    model = _models()[task]
    lengths = buckets.row_lengths(inputs["input_mask"])
    # A batch cut well short of 48 whose longest row fills it: a cut one position short would show.
    features, rows = next(batch[:2] for batch in _batches(inputs, labels, 40) if lengths[batch[1]].max() in (16, 24))
    width = features["input_word_ids"].shape[1]
    padded = np.asarray(model({name: column[rows] for name, column in inputs.items()}, training=False))
    cut = np.asarray(model(features, training=False))
    if task == "token-classification":
        padded = padded[:, :width]
        real = inputs["input_mask"][rows, :width] == 1
        padded, cut = padded[real], cut[real]
    np.testing.assert_allclose(cut, padded, rtol=1e-4, atol=1e-5)


def test_no_bucketing_flag_reaches_the_run(tmp_path, capsys):
    import json

    from tests.classifier_fixtures import finetune_args, write_easy_task
    from tests.cli import run_cli_ok

    task = write_easy_task(tmp_path / "task", per_class=16, test_per_class=8)
    for flag, want in (("--no-bucketing", False), ("--bucketing", True)):
        output = tmp_path / flag
        run_cli_ok(*finetune_args(task, output, epochs=1), "--max-steps", 1, flag)
        assert json.loads((output / "finetune_config.json").read_text())["bucketing"] is want
