"""TFRecord shards of `nlpkit tokenize`, byte for byte against a reference written here.

The reference tokenizes with the pure-Python original BERT (tests/text/bert_reference), packs and
truncates in plain Python, and serializes each row with protobuf's own `tf.train.Example`
(deterministic: map entries sorted by name, as nlpkit writes them). Batches of 7 rows into shards of
10 make batches straddle shard boundaries.
"""

import csv
import json

import pytest

from nlpkit.data import bundled
from nlpkit.data.pipeline import tokenize_to_disk
from nlpkit.data.records import read_manifest, tf
from nlpkit.data.sources import check_source, open_source
from nlpkit.text.tokenizers import load_tokenizer
from tests.text import bert_reference

VOCAB_PATH = bundled.bert_vocab_path()
CLS, SEP, PAD = 101, 102, 0
SEQ_LENGTH = 24


@pytest.fixture(scope="module")
def vocab():
    return {token: i for i, token in enumerate(VOCAB_PATH.read_text(encoding="utf-8").splitlines())}


def news_lines(count):
    """Real news cut into lines of 1 to 29 words: short ones that fit, long ones that are truncated."""
    words = " ".join(bundled.news_texts(limit=6)).split()
    lines, start = [], 0
    for i in range(count):
        size = 1 + (i * 7) % 29
        lines.append(" ".join(words[start:start + size]))
        start += size
    return lines


def round_robin(lengths, budget):
    """Tokens kept of each segment: one from each in turn while the budget lasts (BERT's pair truncation)."""
    kept = [0] * len(lengths)
    while sum(kept) < budget and any(k < n for k, n in zip(kept, lengths)):
        for i, n in enumerate(lengths):
            if kept[i] < n and sum(kept) < budget:
                kept[i] += 1
    return kept


def reference_record(segments, label=None):
    """tf.train.Example bytes of [CLS] A [SEP] (B [SEP]) padded to SEQ_LENGTH, via protobuf."""
    kept = round_robin([len(s) for s in segments], SEQ_LENGTH - len(segments) - 1)
    ids, types = [CLS], [0]
    for index, (segment, keep) in enumerate(zip(segments, kept)):
        ids += segment[:keep] + [SEP]
        types += [index] * (keep + 1)
    pad = SEQ_LENGTH - len(ids)
    features = {"input_word_ids": ids + [PAD] * pad, "input_mask": [1] * len(ids) + [0] * pad,
                "input_type_ids": types + [0] * pad}
    if label is not None:
        features["label"] = [label]
    example = tf.train.Example(features=tf.train.Features(feature={
        name: tf.train.Feature(int64_list=tf.train.Int64List(value=values)) for name, values in features.items()
    }))
    return example.SerializeToString(deterministic=True), sum(len(s) for s in segments), sum(kept)


def written_records(folder, manifest):
    return [[record.numpy() for record in tf.data.TFRecordDataset(str(folder / name))] for name in manifest["files"]]


def check_against_reference(output, manifest, expected, texts):
    """Shards of 10 rows hold the reference records in input order; the manifest counts them."""
    on_disk = read_manifest(output)
    assert on_disk == json.loads(json.dumps(manifest))
    records = [record for record, _, _ in expected]
    want_shards = [records[i:i + 10] for i in range(0, len(records), 10)]
    assert written_records(output, on_disk) == want_shards
    assert on_disk["shard_rows"] == [len(shard) for shard in want_shards]
    tokens = sum(total for _, total, _ in expected)
    kept = sum(keep for _, _, keep in expected)
    assert on_disk["rows"] == len(records)
    assert on_disk["tokens"] == tokens and on_disk["truncation"]["tokens_dropped"] == tokens - kept
    assert on_disk["truncation"]["truncated_rows"] == sum(total > keep for _, total, keep in expected) > 0
    assert on_disk["bytes"] == sum(len(text.encode("utf-8")) for text in texts)


def test_plain_text_shards_match_the_reference(tmp_path, vocab):
    lines = news_lines(47) + ["Héllo wörld! 中文 😀 naïve café"]
    corpus = tmp_path / "news.txt"
    corpus.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    output = tmp_path / "out"
    manifest = tokenize_to_disk(
        check_source(open_source(str(corpus))), load_tokenizer(VOCAB_PATH), output, vocab_path=VOCAB_PATH,
        seq_length=SEQ_LENGTH, batch_size=7, rows_per_shard=10,
    )
    expected = [reference_record([bert_reference.encode(line, vocab)]) for line in lines]
    check_against_reference(output, manifest, expected, lines)


def test_pairs_with_labels_match_the_reference(tmp_path, vocab):
    lines = news_lines(46)
    rows = [(lines[i], lines[i + 1], ("business", "sport", "tech")[i % 3]) for i in range(0, len(lines), 2)]
    table = tmp_path / "pairs.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "pair", "label"), *rows])
    output = tmp_path / "out"
    manifest = tokenize_to_disk(
        check_source(open_source(str(table), pair_column="pair", label_column="label")), load_tokenizer(VOCAB_PATH),
        output, vocab_path=VOCAB_PATH, seq_length=SEQ_LENGTH, batch_size=7, rows_per_shard=10,
    )
    label_ids = {"business": 0, "sport": 1, "tech": 2}  # sorted label names
    expected = [reference_record([bert_reference.encode(text, vocab), bert_reference.encode(pair, vocab)],
                                 label=label_ids[label]) for text, pair, label in rows]
    check_against_reference(output, manifest, expected, [t for text, pair, _ in rows for t in (text, pair)])
