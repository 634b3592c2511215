"""Transformer-XL memory in training: carried from step to step per batch slot, reset at document
starts, laid out as parallel document streams, checkpointed, and used by `nlpkit pretrain`."""

import json
import re

import keras
import numpy as np
import pytest

from nlpkit.data.bundled import bert_vocab_path, news_texts
from nlpkit.encoders.transformer_xl import TransformerXLEncoder
from nlpkit.models.pretrainer import masked_lm_loss
from nlpkit.models.recurrent_memory import DOCUMENT_START, RecurrentMemoryPretrainer
from nlpkit.training.pretrain import PretrainConfig, run_pretraining
from nlpkit.data.segments import stream_batches
from tests.cli import run_cli

V, B, T, P, MEM = 40, 2, 6, 3, 4
XL = dict(
    vocab_size=V, num_layers=2, hidden_size=8, num_attention_heads=2, head_size=4, inner_size=16,
    mem_len=MEM, dropout_rate=0.0, attention_dropout_rate=0.0,
    initializer_range=0.5,  # large enough weights that the memory visibly moves the loss
)  # fmt: skip


def _segment(seed, starts):
    """A stream batch: random ids, masked-LM positions 0..P-1, `document_start` = starts."""
    ids = np.random.default_rng(seed).integers(5, V, (B, T)).astype("int32")
    positions = np.tile(np.arange(P, dtype="int32"), (B, 1))
    return dict(
        input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=np.zeros_like(ids),
        masked_lm_positions=positions, document_start=np.array(starts, "int32"),
    )  # fmt: skip


TARGETS = np.random.default_rng(99).integers(5, V, (B, P)).astype("int32")
WEIGHTS = np.ones((B, P), "float32")


def _model():
    keras.utils.set_random_seed(3)
    model = RecurrentMemoryPretrainer(TransformerXLEncoder(**XL), batch_size=B)
    build = {k: v[:1] for k, v in _segment(0, [1, 1]).items() if k != DOCUMENT_START}
    model(build)  # the build call (no document_start): no memory read or written
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=masked_lm_loss())  # lr 0: weights stay put
    return model


def _inputs(features):
    return {k: features[k] for k in ("input_word_ids", "input_mask", "input_type_ids")}


def _cross_entropy(logits, targets):
    """Mean over all targets of -log softmax(logits)[target], in NumPy."""
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, targets[..., None], -1).mean()


def _manual_logits(model, features, memories=None):
    """Encoder then head, memories passed explicitly: the reference for the model's recurrence."""
    encoded = model.encoder(_inputs(features), memories=memories)
    logits = model.head(encoded["sequence_output"], features["masked_lm_positions"])
    return np.asarray(logits), encoded.get("new_memories")


def test_second_segment_loss_uses_the_first_segments_memory():
    first, second = _segment(1, [1, 1]), _segment(2, [0, 0])
    model = _model()
    model.train_on_batch(first, TARGETS, WEIGHTS)
    loss = float(model.train_on_batch(second, TARGETS, WEIGHTS))
    _, memories = _manual_logits(model, first)
    want, _ = _manual_logits(model, second, memories=memories)
    np.testing.assert_allclose(loss, _cross_entropy(want, TARGETS), rtol=1e-5)

    changed = dict(first, input_word_ids=first["input_word_ids"].copy())
    changed["input_word_ids"][:, 1] = (changed["input_word_ids"][:, 1] + 7) % (V - 5) + 5  # segment 1 only
    model = _model()
    model.train_on_batch(changed, TARGETS, WEIGHTS)
    changed_loss = float(model.train_on_batch(second, TARGETS, WEIGHTS))
    assert abs(changed_loss - loss) > 1e-4, (changed_loss, loss)


def test_memory_is_forgotten_where_a_slot_starts_a_new_document():
    first, second = _segment(1, [1, 1]), _segment(2, [0, 1])  # slot 1 begins another document
    model = _model()
    model(first)
    got = np.asarray(model(second))
    _, memories = _manual_logits(model, first)
    continued, _ = _manual_logits(model, second, memories=memories)
    fresh, _ = _manual_logits(model, second)  # no memory at all
    np.testing.assert_allclose(got[0], continued[0], atol=1e-5)
    np.testing.assert_allclose(got[1], fresh[1], atol=1e-5)
    assert not np.allclose(continued[1], fresh[1], atol=1e-4)  # the reset is what made slot 1 fresh


def test_fit_carries_memory_across_steps_into_the_variables():
    import tensorflow as tf

    first, second = _segment(1, [1, 1]), _segment(2, [0, 0])
    model = _model()
    steps = [tf.data.Dataset.from_tensors((s, TARGETS, WEIGHTS)) for s in (first, second)]
    model.fit(steps[0].concatenate(steps[1]), epochs=1, verbose=0)
    _, memories = _manual_logits(model, first)
    _, memories = _manual_logits(model, second, memories=memories)
    np.testing.assert_allclose(np.asarray(model.memory), np.asarray(memories), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(model.memory_mask), np.ones((B, MEM)))


def test_streams_put_each_documents_next_segment_in_the_same_slot():
    documents = [
        [[1, 2, 3], [4, 5]],  # A: 5 tokens -> 3 segments of 2
        [[6, 7]],  # B: 1 segment
        [[]],  # empty: skipped
        [[8, 9, 10]],  # C: 2 segments
        [[11]],  # D
    ]
    batches = list(stream_batches(documents, num_streams=2, seq_length=2))
    # Worked by hand: slot 0 reads A then D; slot 1 reads B then C; at step 3 slot 1 finds no
    # document left, so the pass ends there (D is never emitted).
    want_ids = [[[1, 2], [6, 7]], [[3, 4], [8, 9]], [[5, 0], [10, 0]]]
    want_mask = [[[1, 1], [1, 1]], [[1, 1], [1, 1]], [[1, 0], [1, 0]]]
    want_starts = [[1, 1], [0, 1], [0, 0]]
    assert [b["input_word_ids"].tolist() for b in batches] == want_ids
    assert [b["input_mask"].tolist() for b in batches] == want_mask
    assert [b[DOCUMENT_START].tolist() for b in batches] == want_starts
    assert all(not b["input_type_ids"].any() for b in batches)


MICRO_XL = {
    "kind": "transformer_xl", "vocab_size": 30522, "num_layers": 1, "hidden_size": 16,
    "num_attention_heads": 2, "head_size": 8, "inner_size": 32, "mem_len": 8,
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xl_pretrain")
    with open(folder / "news.txt", "w", encoding="utf-8") as handle:
        for text in news_texts(limit=12):
            handle.write("\n".join(re.split(r"(?<=[.!?]) +", text)) + "\n\n")
    (folder / "xl.json").write_text(json.dumps(MICRO_XL))
    return folder


def _pretrain(capsys, corpus, output, *extra):
    return run_cli(
        capsys, "pretrain", "--data", corpus / "news.txt", "--output", output, "--preset", corpus / "xl.json",
        "--vocab", bert_vocab_path(), "--max-steps", 4, "--batch-size", 3, "--seq-length", 16,
        "--max-predictions", 3, "--checkpoint-every", 2, "--warmup-steps", 1, "--learning-rate", 1e-3, *extra,
    )  # fmt: skip


def _checkpoint(run, step):
    with np.load(run / "checkpoints" / f"step-{step:06d}" / "variables.npz") as arrays:
        return {name: arrays[name] for name in arrays.files}


def test_cli_pretrain_carries_and_checkpoints_memory(capsys, corpus, tmp_path):
    # the library run below uses PretrainConfig's defaults (float32, no XLA): the CLI run must match them
    code, _, err = _pretrain(capsys, corpus, tmp_path / "run", "--precision", "float32", "--no-jit")
    assert code == 0, err
    saved = _checkpoint(tmp_path / "run", 4)
    model = [a for name, a in saved.items() if name.startswith("model/")]  # keyed by variable path
    masks = [a for a in model if a.shape == (3, MICRO_XL["mem_len"])]  # [B, mem_len]
    memories = [a for a in model if a.shape == (3, 1, MICRO_XL["mem_len"], 16)]  # [B, L, mem_len, D]
    assert len(masks) == 1 and len(memories) == 1
    assert masks[0].all() and np.abs(memories[0]).sum() > 0  # 4 steps in: both slots hold real memory

    # The same run interrupted after step 3 resumes from checkpoint 2, memory included: same weights.
    config = PretrainConfig(
        data=str(corpus / "news.txt"), output=str(tmp_path / "resumed"), preset=str(corpus / "xl.json"),
        vocab=str(bert_vocab_path()), max_steps=4, batch_size=3, seq_length=16, max_predictions_per_seq=3,
        checkpoint_every=2, warmup_steps=1, learning_rate=1e-3,
    )  # fmt: skip

    def interrupt_after_step_3(step, loss, tokens_per_s):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pretraining(config, on_step=interrupt_after_step_3)
    assert run_pretraining(config)["start_step"] == 2
    resumed = _checkpoint(tmp_path / "resumed", 4)
    assert resumed.keys() == saved.keys()
    for name in saved:
        np.testing.assert_allclose(resumed[name], saved[name], atol=1e-6, err_msg=name)


def test_options_memory_cannot_honour_are_one_clear_error(corpus, tmp_path):
    from nlpkit.errors import NlpkitError
    from nlpkit.data.segments import check_memory_run

    settings = dict(
        data=str(corpus / "news.txt"), output=str(tmp_path / "run"), preset=str(corpus / "xl.json"),
        vocab=str(bert_vocab_path()), max_steps=1, batch_size=2, seq_length=16,
    )  # fmt: skip
    with pytest.raises(NlpkitError, match="--objective sop needs sentence pairs"):
        run_pretraining(PretrainConfig(**settings, objective="sop"))
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
    config = PretrainConfig(**settings)
    with pytest.raises(NlpkitError, match="without document boundaries"):
        check_memory_run(config, "shards", replicas=1)
    with pytest.raises(NlpkitError, match="one replica, the strategy has 2"):
        check_memory_run(config, "text", replicas=2)
    check_memory_run(config, "text", replicas=1)
