"""Reading local text / csv / jsonl / parquet inputs, and every bad-input error, through `datasets`."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpkit.data.sources import iter_rows, open_source, read_texts
from nlpkit.errors import NlpkitError


def rows(path, **options):
    batches = list(iter_rows(open_source(path, **options), batch_size=2))
    return {key: [v for batch in batches for v in batch[key]] for key in batches[0]}


def test_text_file_skips_blank_lines(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\n   \nsecond é\n", encoding="utf-8")
    assert rows(tmp_path / "a.txt") == {"text": ["first line", "second é"]}


def test_folder_of_text_files_in_name_order(tmp_path):
    (tmp_path / "b.txt").write_text("two\n")
    (tmp_path / "a.txt").write_text("one\n")
    (tmp_path / ".hidden.txt").write_text("hidden\n")
    assert read_texts(tmp_path) == ["one", "two"]


def test_csv_jsonl_parquet_columns(tmp_path):
    (tmp_path / "d.csv").write_text('premise,hypothesis,gold\n"A, b",c,yes\nd,e,no\n', encoding="utf-8")
    got = rows(tmp_path / "d.csv", text_column="premise", pair_column="hypothesis", label_column="gold")
    assert got == {"text": ["A, b", "d"], "pair": ["c", "e"], "label": ["yes", "no"]}
    (tmp_path / "d.jsonl").write_text('{"text": "x", "y": 1}\n{"text": "z", "y": 0}\n{"text": "w", "y": 1}\n')
    assert rows(tmp_path / "d.jsonl", label_column="y") == {"text": ["x", "z", "w"], "label": [1, 0, 1]}
    pq.write_table(pa.table({"text": ["p", "q"], "label": [3, 4]}), tmp_path / "d.parquet")
    assert rows(tmp_path / "d.parquet", label_column="label") == {"text": ["p", "q"], "label": [3, 4]}


def test_non_utf8_names_file_and_line_unless_replaced(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good\nalso good\nbad \xff byte\n")
    with pytest.raises(NlpkitError, match=r"bad.txt:3: bytes that are not UTF-8 at column 5"):
        rows(path)
    assert rows(path, errors="replace") == {"text": ["good", "also good", "bad \ufffd byte"]}
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "ok"}\n{"text": "x \xfe"}\n')
    with pytest.raises(NlpkitError, match=r"bad.jsonl:2"):
        rows(jsonl)
    assert rows(jsonl, errors="replace") == {"text": ["ok", "x \ufffd"]}


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_input(tmp_path, content):
    (tmp_path / "e.txt").write_bytes(content)
    with pytest.raises(NlpkitError, match="empty|no text rows"):
        rows(tmp_path / "e.txt")


def test_unknown_column_lists_the_columns(tmp_path):
    (tmp_path / "d.csv").write_text("sentence,label\nhi,1\n")
    with pytest.raises(NlpkitError, match=r"column 'text' is not in .* \(columns: sentence, label\)"):
        rows(tmp_path / "d.csv")
    with pytest.raises(NlpkitError, match="has only the column 'text'"):
        open_source(_text_file(tmp_path), label_column="label")


def _text_file(tmp_path):
    (tmp_path / "t.txt").write_text("x\n")
    return tmp_path / "t.txt"


def test_missing_paths_and_offline_hub_name(tmp_path):
    with pytest.raises(NlpkitError, match="does not exist"):
        open_source(tmp_path / "missing.csv")
    with pytest.raises(NlpkitError, match="holds no"):
        open_source(tmp_path)
    with pytest.raises(NlpkitError, match="input no_such_dataset_xyz: cannot load dataset 'no_such_dataset_xyz': .* cache"):
        rows("no_such_dataset_xyz")
