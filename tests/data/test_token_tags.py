"""CoNLL / JSON-lines tagged sentences: reading, IOB checks naming file:line, IOB1 conversion, real data."""

import json

import pytest

from nlpkit.data import token_tags as tt
from nlpkit.errors import NlpkitError

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_conll_reads_sentences_skips_docstart_and_takes_the_last_column(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL, encoding="utf-8")
    sentences = tt.read_tagged(path)
    assert [s.tokens for s in sentences] == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"]]
    assert sentences[1].lines == [8, 9]
    chunks = tt.read_tagged(path, tag_column=2)
    assert chunks[0].tags == ["B-NP", "B-VP", "B-NP", "I-NP"]
    assert tt.tag_names(sentences) == ["O", "B-MISC", "B-ORG", "B-PER", "I-PER"]


def test_json_lines_and_their_length_mismatch(tmp_path):
    path = tmp_path / "dev.jsonl"
    rows = [{"tokens": ["Peter", "runs"], "tags": ["B-PER", "O"], "text": "Peter runs"},
            {"tokens": ["in", "Paris", "."], "tags": ["O", "B-LOC"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(NlpkitError, match=r"dev\.jsonl:2: 2 tags for 3 tokens"):
        tt.read_tagged(path)
    rows[1]["tags"].append("O")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    sentences = tt.read_tagged(path)
    assert sentences[0].text == "Peter runs" and sentences[1].tags == ["O", "B-LOC", "O"]


@pytest.mark.parametrize("text, message", [
    ("EU B-ORG\n\nsays O\nBlackburn I-PER\n", r"bad\.conll:4: tag I-PER follows O"),
    ("EU B-ORG\n\nPeter B-PER\nBlackburn I-LOC\n", r"bad\.conll:4: tag I-LOC follows B-PER"),
    ("EU B-ORG\n\nPeter B-PER\nBlackburn I-PER\nsaid I-PER\nit B-X\nto I-Y\n", r"bad\.conll:7: tag I-Y follows B-X"),
    ("EU B-ORG\n\nPeter B-PER\nBlackburn PER\n", r"bad\.conll:4: tag 'PER' is not O, B-TYPE or I-TYPE"),
])
def test_invalid_iob2_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.conll"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(NlpkitError, match=message):
        tt.read_tagged(path)
    if "follows" in message:
        tt.read_tagged(path, scheme="none")  # plain tags are not checked


def test_iob1_is_converted_to_iob2(tmp_path):
    path = tmp_path / "iob1.conll"
    path.write_text("U.N. I-ORG\nofficial O\nEkeus I-PER\nheads O\nfor O\nBaghdad I-LOC\nParis I-LOC\n"
                    "Rome B-LOC\n", encoding="utf-8")
    with pytest.raises(NlpkitError, match=r"iob1\.conll:1: tag I-ORG follows O"):
        tt.read_tagged(path)
    assert tt.read_tagged(path, scheme="iob1")[0].tags == [
        "B-ORG", "O", "B-PER", "O", "O", "B-LOC", "I-LOC", "B-LOC"]
    with pytest.raises(NlpkitError, match="--tag-scheme 'bio3'"):
        tt.read_tagged(path, scheme="bio3")


def test_entity_spans_follow_conlleval():
    assert tt.entity_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]) == [
        ("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6)]
    # Predictions may be invalid IOB2: I after O starts an entity, a type change ends one.
    assert tt.entity_spans(["I-ORG", "I-ORG", "I-PER", "O", "I-LOC"]) == [("ORG", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]
    assert tt.entity_spans(["O", "O"]) == []


def test_unknown_tag_names_file_and_line(tmp_path):
    path = tmp_path / "test.conll"
    path.write_text("EU B-ORG\n\nPeter B-PER\nsays O\n", encoding="utf-8")
    with pytest.raises(NlpkitError, match=r"test\.conll:3: tag 'B-PER' is unknown to the model"):
        tt.tag_ids(tt.read_tagged(path), ["O", "B-ORG"])


def test_real_chunking_sample_reads_as_its_blank_line_blocks(tmp_path):
    text = tt.chunking_sample_text()
    blocks = [block.splitlines() for block in text.strip().split("\n\n")]
    path = tt.write_chunking_sample(tmp_path / "chunks.conll")
    sentences = tt.read_tagged(path)  # the gold chunks are valid IOB2
    assert [s.tokens for s in sentences] == [[line.split()[0] for line in block] for block in blocks]
    assert [s.tags for s in sentences] == [[line.split()[2] for line in block] for block in blocks]
    pos = tt.read_tagged(tt.write_chunking_sample(tmp_path / "pos.conll", "pos"), scheme="none")
    assert pos[0].tags[:3] == [line.split()[1] for line in blocks[0][:3]]


def test_missing_archive_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPKIT_DATA_DIR", str(tmp_path))
    with pytest.raises(NlpkitError, match="pip download --no-deps --no-binary :all: seqeval==1.2.2"):
        tt.chunking_sample_text()
