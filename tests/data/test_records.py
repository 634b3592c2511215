"""TFRecord shards + manifest and JSON lines written by the tokenize pipeline, read back independently."""

import json

import numpy as np
import pytest

from nlpkit.data.pipeline import tokenize_to_disk
from nlpkit.data.records import load_records, read_manifest, tf
from nlpkit.data.sources import open_source
from nlpkit.errors import NlpkitError
from nlpkit.text.wordpiece import WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "##s", "."]


@pytest.fixture()
def setup(tmp_path):
    vocab_path = tmp_path / "vocab.txt"
    vocab_path.write_text("\n".join(VOCAB) + "\n")
    data = tmp_path / "d.csv"
    data.write_text("text,pair,label\na b,c,pos\nbs bs bs bs,a,neg\nc.,,pos\n")
    return tmp_path, vocab_path, data


# Hand-worked with VOCAB, seq_length 6 (budget 3 for two segments, round robin):
# "a b" + "c"      -> [CLS] a b [SEP] c [SEP]                 (3 tokens, fits)
# "bs bs bs bs"+"a"-> b ##s b ##s b ##s b ##s | a -> A keeps 2, B keeps 1 (9 tokens, truncated)
# "c." + ""        -> [CLS] c . [SEP] [SEP] [PAD]
EXPECTED_IDS = [[2, 5, 6, 3, 7, 3], [2, 6, 8, 3, 5, 3], [2, 7, 9, 3, 3, 0]]
EXPECTED_MASK = [[1] * 6, [1] * 6, [1, 1, 1, 1, 1, 0]]
EXPECTED_TYPES = [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 0]]


def run(tmp_path, vocab_path, data, fmt, output, **options):
    source = open_source(data, pair_column="pair", label_column="label")
    return tokenize_to_disk(
        source, WordPieceTokenizer(vocab_path), output, vocab_path=vocab_path, seq_length=6, fmt=fmt,
        batch_size=2, **options,
    )


def test_tfrecord_shards_manifest_and_reader(setup):
    tmp_path, vocab_path, data = setup
    out = tmp_path / "out"
    manifest = run(tmp_path, vocab_path, data, "tfrecord", out, rows_per_shard=2)
    on_disk = read_manifest(out)
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["files"] == ["part-00000.tfrecord", "part-00001.tfrecord"]
    assert on_disk["shard_rows"] == [2, 1] and on_disk["rows"] == 3
    assert on_disk["label_names"] == ["neg", "pos"]  # sorted: the one label encoding
    assert on_disk["truncation"] == {
        "strategy": "round_robin", "truncated_rows": 1, "truncated_fraction": round(1 / 3, 6), "tokens_dropped": 6
    }
    # Raw protos, parsed without nlpkit's reader.
    raw = [tf.train.Example.FromString(r.numpy()) for f in on_disk["files"] for r in tf.data.TFRecordDataset(str(out / f))]
    assert [list(e.features.feature["input_word_ids"].int64_list.value) for e in raw] == EXPECTED_IDS
    assert [e.features.feature["label"].int64_list.value[0] for e in raw] == [1, 0, 1]
    rows = list(load_records(out).as_numpy_iterator())
    np.testing.assert_array_equal([r["input_mask"] for r in rows], EXPECTED_MASK)
    np.testing.assert_array_equal([r["input_type_ids"] for r in rows], EXPECTED_TYPES)
    assert rows[0]["input_word_ids"].dtype == np.int32


def test_jsonl_rows_in_input_order(setup):
    tmp_path, vocab_path, data = setup
    out = tmp_path / "out.jsonl"
    run(tmp_path, vocab_path, data, "jsonl", out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["input_word_ids"] for line in lines] == EXPECTED_IDS
    assert [line["input_mask"] for line in lines] == EXPECTED_MASK
    assert [line["input_type_ids"] for line in lines] == EXPECTED_TYPES


def test_failure_leaves_no_output(setup):
    tmp_path, vocab_path, _ = setup
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,pair,label\nok,a,1\n\xff,b,0\n")
    with pytest.raises(NlpkitError, match="bad.csv:3"):
        run(tmp_path, vocab_path, bad, "jsonl", tmp_path / "o.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "d.csv", "vocab.txt"]


def test_refuses_to_replace_a_foreign_folder(setup):
    tmp_path, vocab_path, data = setup
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(NlpkitError, match="not an nlpkit tokenize folder"):
        run(tmp_path, vocab_path, data, "tfrecord", tmp_path / "mine")
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep"
