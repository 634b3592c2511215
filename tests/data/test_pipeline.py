"""The tf.data reader of plain text gives exactly the rows of the Python reader (`sources.iter_rows`)."""

import json

from nlpkit.data import bundled
from nlpkit.data.pipeline import _read_by_tf_data, _text_lines_dataset, tokenize_to_disk
from nlpkit.data.sources import check_source, iter_rows, open_source
from nlpkit.text.tokenizers import load_tokenizer

TRICKY = {
    # BOM, \r\n endings, trailing spaces, lines that str.strip() empties (Unicode spaces, NEL,
    # separators \x1c-\x1f, \v, \f), no final newline.
    "a.txt": "\ufeffFirst line  \r\nsecond\r\nthird\n\n   \n\u3000\xa0\n\x85\n\x1c\x1f\x0b\x0c\n \r\nlast, no newline  ",
    "b.txt": "naïve café\r\n\r\n\t\nx\u2028y\n" + "a long line " * 500 + "\n",
}


def _write(folder, files):
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("utf-8"))
    return folder


def test_tf_data_reader_gives_the_python_readers_rows(tmp_path):
    source = check_source(open_source(str(_write(tmp_path / "in", TRICKY))))
    assert _read_by_tf_data(source)
    want = [text for batch in iter_rows(source, batch_size=3) for text in batch["text"]]
    got = [text.decode("utf-8") for batch in _text_lines_dataset(source, 3).as_numpy_iterator()
           for text in batch["text"]]
    assert got == want
    assert len(want) == 7


def test_python_reader_kept_where_tf_data_would_differ(tmp_path):
    lone_cr = check_source(open_source(str(_write(tmp_path / "mac", {"m.txt": "old\rmac\n"}))))
    assert not _read_by_tf_data(lone_cr)  # tf.data drops a lone \r instead of ending the line
    replace = check_source(open_source(str(_write(tmp_path / "plain", {"p.txt": "x\n"})), errors="replace"))
    assert not _read_by_tf_data(replace)
    assert not _read_by_tf_data(open_source(str(tmp_path / "plain")))  # not checked for UTF-8 yet


def test_both_readers_tokenize_alike(tmp_path):
    tokenizer = load_tokenizer(bundled.bert_vocab_path())
    outputs = []
    for name, newline in (("unix", "\n"), ("mac", "\r")):  # the second goes through the Python reader
        folder = _write(tmp_path / name, {"t.txt": newline.join(["Héllo, world!", "", "Second line here."]) + newline})
        output = tmp_path / f"{name}.jsonl"
        tokenize_to_disk(check_source(open_source(str(folder))), tokenizer, output,
                         vocab_path=bundled.bert_vocab_path(), seq_length=8, fmt="jsonl")
        outputs.append([json.loads(line) for line in output.read_text().splitlines()])
    assert outputs[0] == outputs[1] and len(outputs[0]) == 2


LABELLED_CSV = "text,label\nw,b\nx,10\ny,a\nz,2\nv,b\nu,2.0\n"
# The one label encoding, worked by hand: integer-looking labels first in numeric order ("2" < "10";
# 2.0 read as a float in a JSON file is the label "2"), then the others alphabetically.
LABEL_NAMES = ["2", "10", "a", "b"]
LABEL_IDS = [3, 1, 2, 0, 3, 0]


def test_tokenize_and_finetune_number_labels_the_same_sorted_way(tmp_path):
    from nlpkit.data.labelled import label_ids, label_names, read_examples
    from nlpkit.data.pipeline import LabelEncoder

    path = tmp_path / "labelled.jsonl"
    rows = [line.split(",") for line in LABELLED_CSV.splitlines()[1:]]
    path.write_text("".join(json.dumps({"text": t, "label": 2.0 if v == "2.0" else v}) + "\n" for t, v in rows))
    source = open_source(str(path), label_column="label")
    encoder = LabelEncoder.for_source(source)
    assert encoder.names == LABEL_NAMES
    assert [i for batch in iter_rows(source) for i in encoder.encode(batch["label"])] == LABEL_IDS
    examples = read_examples(path)
    assert label_names(examples.labels) == LABEL_NAMES
    assert label_ids(examples, LABEL_NAMES).tolist() == LABEL_IDS

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "u", "v", "w", "x", "y", "z"]) + "\n")
    manifest = tokenize_to_disk(source, load_tokenizer(vocab), tmp_path / "out.jsonl", vocab_path=vocab,
                                seq_length=4, fmt="jsonl")
    assert manifest["label_names"] == LABEL_NAMES
    written = [json.loads(line)["label"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == LABEL_IDS


def test_a_row_without_label_is_named_before_anything_is_written(tmp_path):
    import pytest

    from nlpkit.errors import NlpkitError

    path = tmp_path / "labelled.csv"
    path.write_text("text,label\nw,b\nx,\n")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nw\nx\n")
    with pytest.raises(NlpkitError, match="row 2 has no label"):
        tokenize_to_disk(open_source(str(path), label_column="label"), load_tokenizer(vocab), tmp_path / "o.jsonl",
                         vocab_path=vocab, seq_length=4, fmt="jsonl")
    assert not (tmp_path / "o.jsonl").exists()
