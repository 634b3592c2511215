"""`nlpkit pretrain` inputs and objectives: tokenized shards, csv/jsonl tables, next-sentence and sentence order."""

import csv
import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from nlpkit.data.bundled import bert_vocab_path
from nlpkit.errors import NlpkitError
from nlpkit.models.pretrainer import MaskedLMPretrainer, pretraining_losses
from nlpkit.text.vocab import load_wordpiece_vocab
from nlpkit.text.wordpiece import WordPieceTokenizer
from nlpkit.data import corpus as corpus_module
from nlpkit.data.corpus import _examples, text_documents
from nlpkit.training.pretrain import build_dataset, run_pretraining
from tests.cli import run_cli
from tests.training.test_pretrain import MICRO_BERT, _config, corpus  # noqa: F401 - `corpus` is a fixture

SEQ_LENGTH = 32


@pytest.fixture(autouse=True)
def small_shuffle_buffer(monkeypatch):
    """Enough mixing for these tests; filling the real buffer (1000 rows) would cost seconds per dataset."""
    monkeypatch.setattr(corpus_module, "_SHUFFLE_BUFFER", 64)


@pytest.fixture(scope="module")
def wordpiece():
    """(vocab list, tokenizer) of the bundled bert-base-uncased vocab."""
    vocab = load_wordpiece_vocab(bert_vocab_path())
    return vocab, WordPieceTokenizer(vocab, lower_case=True)


@pytest.fixture(scope="module")
def tables(corpus, tmp_path_factory):
    """The fixture's articles (plus a one-line one) as news.txt, and as `body` rows of news.jsonl / news.csv."""
    text = (corpus / "news.txt").read_text(encoding="utf-8")
    documents = [block.split("\n") for block in text.strip().split("\n\n")] + [["a single line makes one sentence ."]]
    folder = tmp_path_factory.mktemp("tables")
    (folder / "news.txt").write_text("\n\n".join("\n".join(d) for d in documents) + "\n", encoding="utf-8")
    with open(folder / "news.jsonl", "w", encoding="utf-8") as handle:
        for index, document in enumerate(documents):
            handle.write(json.dumps({"id": index, "body": "\n".join(document)}) + "\n")
    with open(folder / "news.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "body"])
        writer.writerows((index, "\n".join(document)) for index, document in enumerate(documents))
    return folder


def _restored_batches(dataset, count):
    """Per batch (numpy): ids with the masked targets written back, fed ids, positions, weights, type ids, labels."""
    out = []
    for features, targets, weights in dataset.take(count).as_numpy_iterator():
        labels = None
        if isinstance(targets, dict):
            labels, targets, weights = targets["sentence"], targets["masked_lm"], weights["masked_lm"]
        fed = features["input_word_ids"]
        ids = fed.copy()
        for row in range(len(ids)):
            real = weights[row] > 0
            ids[row, features["masked_lm_positions"][row][real]] = targets[row][real]
        out.append((ids, fed, features["masked_lm_positions"], weights, features["input_type_ids"], labels))
    return out


def _shard_rows(folder):
    """Every input_word_ids row of a tokenize folder, parsed here with plain tf.train.Example."""
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = []
    for name in manifest["files"]:
        for record in tf.data.TFRecordDataset(str(folder / name)).as_numpy_iterator():
            example = tf.train.Example.FromString(record)
            rows.append(list(example.features.feature["input_word_ids"].int64_list.value))
    return np.array(rows)


def _one_red_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_tokenized_shards_feed_the_masker_directly(corpus, wordpiece, tmp_path, capsys):
    shards = tmp_path / "shards"
    code, _, err = run_cli(
        capsys, "tokenize", corpus / "news.txt", "--vocab", bert_vocab_path(), "--output", shards,
        "--seq-length", SEQ_LENGTH,
    )  # fmt: skip
    assert code == 0, err
    pretrain = ["pretrain", "--data", shards, "--preset", corpus / "micro.json",
                "--batch-size", 8, "--max-steps", 2, "--checkpoint-every", 2]  # fmt: skip
    # No --seq-length: the shards' length is adopted and saved with the run.
    code, _, err = run_cli(capsys, *pretrain, "--vocab", bert_vocab_path(), "--output", tmp_path / "run")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "pretrain_config.json").read_text())["seq_length"] == SEQ_LENGTH
    assert (tmp_path / "run" / "checkpoints" / "step-000002").is_dir()

    # Every fed row is a shard row: equal outside the masked positions, and the targets are its ids there.
    rows = _shard_rows(shards)
    vocab, tokenizer = wordpiece
    config = _config(corpus, tmp_path / "unused", data=str(shards)).resolved()
    checked = 0
    for ids, fed, positions, weights, _, _ in _restored_batches(build_dataset(config, tokenizer, vocab, 8, 0), 3):
        for row in range(len(ids)):
            kept = np.ones(SEQ_LENGTH, bool)
            kept[positions[row][weights[row] > 0]] = False
            matches = rows[(rows[:, kept] == fed[row][kept]).all(axis=1)]
            assert any((match == ids[row]).all() for match in matches), row
            checked += 1
    assert checked == 24

    # A vocab with the same size but other bytes than the shards' one: exit 2, one line naming the manifest.
    other = tmp_path / "vocab.txt"
    tokens = bert_vocab_path().read_text(encoding="utf-8").splitlines()
    other.write_text("\n".join(tokens[:1] + ["[unused-other]"] + tokens[2:]) + "\n", encoding="utf-8")
    code, _, err = run_cli(capsys, *pretrain, "--vocab", other, "--output", tmp_path / "bad-vocab")
    line = _one_red_line(err)
    assert code == 2 and "manifest.json" in line and "another vocab" in line, err
    code, _, err = run_cli(
        capsys, *pretrain, "--vocab", bert_vocab_path(), "--seq-length", 16, "--output", tmp_path / "bad-length"
    )
    assert code == 2 and "--seq-length 16" in _one_red_line(err), err
    with pytest.raises(NlpkitError, match="--objective sop needs sentence pairs"):
        run_pretraining(_config(corpus, tmp_path / "sop", data=str(shards), objective="sop"))
    assert not (tmp_path / "bad-vocab").exists() and not (tmp_path / "sop").exists()


def test_csv_and_jsonl_rows_are_documents_of_lines(corpus, tables, wordpiece, tmp_path, capsys):
    vocab, tokenizer = wordpiece

    def packed(name, **options):
        config = _config(corpus, tmp_path / "unused", data=str(tables / name), objective="sop", **options).resolved()
        return [example["input_word_ids"].tolist() + [int(example["sentence_order_labels"])]
                for example in _examples(config, tokenizer, vocab)]

    # A row is a document and its lines are sentences: the same packing as the equivalent text file.
    from_text = packed("news.txt")
    assert len(from_text) > 50
    assert packed("news.jsonl", text_column="body") == from_text
    assert packed("news.csv", text_column="body") == from_text

    command = ["pretrain", "--data", tables / "news.csv", "--preset", corpus / "micro.json",
               "--vocab", bert_vocab_path(), "--output", tmp_path / "run"]  # fmt: skip
    code, _, err = run_cli(capsys, *command, "--seq-length", SEQ_LENGTH, "--text-column", "title")
    line = _one_red_line(err)
    assert code == 2 and "'title'" in line and "id, body" in line, err
    # The default --seq-length 128 does not fit the micro model's 64 positions: one line, not a traceback.
    code, _, err = run_cli(capsys, *command, "--text-column", "body")
    assert code == 2 and "max_sequence_length 64" in _one_red_line(err), err
    assert not (tmp_path / "run").exists()


def _in_order(first, second, document):
    """True if `first` then `second` (id lists) occur as contiguous runs, in this order, in `document`."""
    text, a, b = (" " + " ".join(map(str, ids)) + " " for ids in (document, first, second))
    start = text.find(a)
    return start >= 0 and (not second or text.find(b, start + len(a) - 1) >= 0)


def _segments(ids, types):
    """Segment A and B of `[CLS] A [SEP] B [SEP]` (padding dropped)."""
    length = int(np.count_nonzero(ids))  # [PAD] is id 0, and only padding is
    a = [int(t) for t, k in zip(ids[1:length], types[1:length]) if k == 0][:-1]
    b = [int(t) for t, k in zip(ids[1:length], types[1:length]) if k == 1][:-1]
    return a, b


def _pairs_and_labels(corpus, wordpiece, tmp_path, objective):
    vocab, tokenizer = wordpiece
    config = _config(corpus, tmp_path / "unused", objective=objective, short_seq_prob=0.0).resolved()
    documents = [[t for sentence in d for t in sentence] for d in text_documents(config.data, tokenizer)]
    pairs = []
    for ids, _, _, _, types, labels in _restored_batches(build_dataset(config, tokenizer, vocab, 16, 0), 4):
        pairs.extend((*_segments(row, row_types), int(label)) for row, row_types, label in zip(ids, types, labels))
    assert 0.25 < np.mean([label for *_, label in pairs]) < 0.75, pairs
    return pairs, documents


def test_sentence_order_labels_say_which_pairs_were_swapped(corpus, wordpiece, tmp_path):
    pairs, documents = _pairs_and_labels(corpus, wordpiece, tmp_path, "sop")
    swapped_back = [(b, a) if label else (a, b) for a, b, label in pairs]
    assert all(any(_in_order(a, b, d) for d in documents) for a, b in swapped_back)
    as_fed = [any(_in_order(a, b, d) for d in documents) for a, b, label in pairs if label]
    assert np.mean(as_fed) < 0.1


def test_next_sentence_labels_say_which_second_segments_are_random(corpus, wordpiece, tmp_path):
    pairs, documents = _pairs_and_labels(corpus, wordpiece, tmp_path, "nsp")
    follows = [any(_in_order(a, b, d) for d in documents) for a, b, _ in pairs]
    assert all(f for f, (*_, label) in zip(follows, pairs) if label == 0)
    assert np.mean([f for f, (*_, label) in zip(follows, pairs) if label == 1]) < 0.1


def test_loss_is_masked_lm_plus_sentence_cross_entropy():
    from nlpkit.encoders.bert import BertEncoder

    rng = np.random.default_rng(3)
    encoder = BertEncoder(vocab_size=40, hidden_size=8, num_layers=1, num_attention_heads=2, inner_dim=16)
    model = MaskedLMPretrainer(encoder, sentence_classes=2)
    ids = rng.integers(5, 40, (4, 6)).astype("int32")
    features = dict(input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=np.zeros_like(ids),
                    masked_lm_positions=rng.integers(0, 6, (4, 3)).astype("int32"))  # fmt: skip
    targets = {"masked_lm": rng.integers(0, 40, (4, 3)), "sentence": np.array([0, 1, 1, 0])}
    mlm_weights = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]], "float32")
    weights = {"masked_lm": mlm_weights, "sentence": np.ones(4, "float32")}
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=pretraining_losses())
    outputs = {name: np.asarray(value, "float64") for name, value in model(features).items()}

    def cross_entropy(logits, labels):
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        return -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]

    mlm = (cross_entropy(outputs["masked_lm"], targets["masked_lm"]) * mlm_weights).sum() / mlm_weights.sum()
    sentence = cross_entropy(outputs["sentence"], targets["sentence"]).mean()
    loss = model.test_on_batch(features, targets, sample_weight=weights, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, mlm + sentence, rtol=1e-5)


def test_sop_run_on_jsonl_learns_and_the_objective_is_part_of_the_run(corpus, tables, tmp_path):
    config = _config(
        corpus, tmp_path / "run", data=str(tables / "news.jsonl"), text_column="body", objective="sop",
        max_steps=12, checkpoint_every=12, learning_rate=3e-2,
    )  # fmt: skip
    history = run_pretraining(config)["history"]
    losses = [h["loss"] for h in history]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses
    # Near-zero initial logits: the first loss is ln(vocab size) for masked-LM plus ln(2) for the sentence term.
    np.testing.assert_allclose(losses[0], np.log(MICRO_BERT["vocab_size"]) + np.log(2), atol=0.05)
    assert all(0.0 <= h["sentence_accuracy"] <= 1.0 for h in history)
    assert (tmp_path / "run" / "config.json").is_file()
    with pytest.raises(NlpkitError, match=r"differs in: objective"):
        run_pretraining(dataclasses.replace(config, objective="nsp"))
