"""Reading text rows from local files or folders (text / csv / json(l) / parquet) or hub datasets.

Plain text is read line by line here; other formats stream through `datasets` (an IterableDataset),
so memory stays bounded however large the corpus.
Every user mistake becomes one NlpkitError line: missing input, a hub dataset name the `datasets` cache
does not hold (`nlpkit.data.hub`), bytes that are not UTF-8 (naming file and line, unless errors="replace"),
no rows, an unknown column.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from nlpkit.errors import NlpkitError

# File suffix -> `datasets` builder name.
KINDS = {
    ".txt": "text",
    ".text": "text",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
}
_UTF8_CHECK_BLOCK = 8 << 20  # bytes of whole lines decoded at once when checking UTF-8


@dataclass
class TextSource:
    """Where the rows come from and which columns to read.

    `kind` is a `datasets` builder (text/csv/json/parquet) for local files, or "hub" for a dataset name.
    """

    name: str
    kind: str
    files: list = field(default_factory=list)
    text_column: str = "text"
    pair_column: str = None
    label_column: str = None
    errors: str = "strict"
    hub: object = None  # `nlpkit.data.hub.HubInput` of a hub dataset name
    checked: bool = False  # set by `check_source`: UTF-8, columns and non-emptiness already verified

    @property
    def columns(self):
        return [c for c in (self.text_column, self.pair_column, self.label_column) if c]


def _files_of(path):
    """Readable data files of a file or folder (sorted, hidden files skipped)."""
    if path.is_file():
        return [path]
    if not path.is_dir():  # a device, socket or pipe: nothing nlpkit can read twice or size up
        raise NlpkitError(f"input {path} is not a regular file or folder", hint="pass a text/csv/json(l)/parquet file")
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in KINDS and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise NlpkitError(f"folder {path} holds no {'/'.join(sorted(KINDS))} files", hint="pass a file or another folder")
    return files


def _looks_like_path(name):
    """A missing input that cannot be a hub dataset name: a data-file suffix, or not `NAME[/CONFIG][:SPLIT]`
    (`./x`, `/x`, `~/x`, `a//b`, `C:\\x`, spaces...)."""
    from nlpkit.data import hub

    return Path(name).suffix.lower() in KINDS or hub.parse(name) is None


def open_source(input_path, *, text_column=None, pair_column=None, label_column=None, errors="strict", option=None):
    """Describe an input and check it can be read: a local file or folder, else a cached Hugging Face dataset
    `NAME[/CONFIG][:SPLIT]` (`nlpkit.data.hub`; `option`, e.g. "--validation", names the default split)."""
    from nlpkit.data import hub

    if errors not in ("strict", "replace"):
        raise NlpkitError(f"unknown --errors {errors!r}", hint="choose strict or replace")
    name = str(input_path)
    path = Path(name).expanduser()
    hub_input = None
    if not path.exists():
        if _looks_like_path(name):
            where = f"{option} {name}" if option else f"input {name}"
            raise NlpkitError(f"{where} does not exist",
                              hint="pass a text/csv/json(l)/parquet file or a folder")
        kind, files, hub_input = "hub", [], hub.resolve(name, option)
    else:
        files = _files_of(path)
        kinds = {KINDS.get(f.suffix.lower(), "text") for f in files}
        if len(kinds) > 1:
            raise NlpkitError(f"folder {path} mixes {', '.join(sorted(kinds))} files", hint="keep one format per folder")
        kind = kinds.pop()
    default_text = "text"
    source = TextSource(
        name=name,
        kind=kind,
        files=files,
        text_column=text_column or default_text,
        pair_column=pair_column,
        label_column=label_column,
        errors=errors,
        hub=hub_input,
    )
    if kind == "text" and (pair_column or label_column or (text_column and text_column != "text")):
        raise NlpkitError(
            f"plain text input {name} has only the column 'text'",
            hint="use csv/json/parquet input for --pair-column/--label-column",
        )
    return source


def _line_blocks(path):
    """(number of the first line, list of whole lines as bytes) for blocks of about 8 MB of a file."""
    with open(path, "rb") as handle:
        first_line = 1
        while lines := handle.readlines(_UTF8_CHECK_BLOCK):
            yield first_line, lines
            first_line += len(lines)


def has_lone_carriage_return(path):
    """Whether a file ends a line with a lone \r (old Mac style), not followed by \n."""
    for _, lines in _line_blocks(path):
        block = b"".join(lines)
        if b"\r" in block and re.search(rb"\r(?!\n)", block):
            return True
    return False


def check_utf8(path, hint="fix the file or pass --errors replace"):
    """Raise NlpkitError naming the file and line of the first byte sequence that is not UTF-8."""
    for first_line, lines in _line_blocks(path):
        try:
            b"".join(lines).decode("utf-8")
        except UnicodeDecodeError:
            for offset, line in enumerate(lines):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise NlpkitError(
                        f"{path}:{first_line + offset}: bytes that are not UTF-8 at column {err.start + 1}",
                        hint=hint,
                    ) from None


def _check_files(source):
    if source.files and all(path.stat().st_size == 0 for path in source.files):
        raise NlpkitError(f"input {source.name} is empty", hint="pass a file with text rows")
    if source.kind not in ("hub", "parquet") and source.errors == "strict":
        for path in source.files:
            check_utf8(path)


def check_source(source):
    """Find bad input before any output is started: bytes that are not UTF-8, unknown columns, no rows."""
    _check_files(source)
    source.checked = True
    next(iter_rows(source, batch_size=64))
    return source


def _load_streaming(source):
    """The `datasets` IterableDataset of a source: the local files (as one train split) or the hub split."""
    from nlpkit.data.hub import import_datasets

    datasets = import_datasets()
    if source.kind == "hub":
        return source.hub.streaming()
    options = {}
    if source.errors == "replace" and source.kind == "csv":
        options["encoding_errors"] = "replace"
    if source.errors == "replace" and source.kind == "json":
        # datasets only re-decodes JSON (with encoding_errors) when the encoding is not spelled "utf-8".
        options.update(encoding="utf_8", encoding_errors="replace")
    if source.kind == "csv" and any(f.suffix.lower() == ".tsv" for f in source.files):
        options["sep"] = "\t"
    return datasets.load_dataset(
        source.kind, data_files=[str(f) for f in source.files], split="train", streaming=True, **options
    )


def _check_columns(source, row):
    missing = [c for c in source.columns if c not in row]
    if missing:
        raise NlpkitError(
            f"column {missing[0]!r} is not in {source.name} (columns: {', '.join(map(str, row))})",
            hint="choose one with --text-column/--pair-column/--label-column",
        )


def iter_rows(source, batch_size=1024):
    """Yield batches as dicts of lists: "text", and "pair" / "label" when those columns are set.

    Blank lines of plain-text files are skipped; other rows are kept in input order (a missing value
    becomes ""). Raises NlpkitError for non-UTF-8 input (strict), unknown columns and empty input.
    """
    if not source.checked:
        _check_files(source)
    rows = 0
    try:
        for batch in _raw_batches(source, batch_size):
            if rows == 0:
                _check_columns(source, batch)
            out = {"text": [_as_text(v) for v in batch[source.text_column]]}
            if source.pair_column:
                out["pair"] = [_as_text(v) for v in batch[source.pair_column]]
            if source.label_column:
                out["label"] = _labels(source, batch[source.label_column])
            if source.kind == "text":
                out = _drop_blank_lines(out)
            if out["text"]:
                rows += len(out["text"])
                yield out
    except NlpkitError:
        raise
    except UnicodeDecodeError as err:
        raise NlpkitError(f"{source.name}: bytes that are not UTF-8 ({err.reason})", hint="pass --errors replace") from None
    except Exception as err:  # noqa: BLE001 - pyarrow/pandas parse errors of a broken file
        raise NlpkitError(f"cannot read {source.name}: {type(err).__name__}: {_first_line(err)}",
                          hint="check the file format") from None
    if rows == 0:
        raise NlpkitError(f"input {source.name} has no text rows", hint="pass a non-empty file")


def _raw_batches(source, batch_size):
    """Batches (dicts of column lists) as `datasets` reads them; plain text files are read here directly."""
    if source.kind == "text":
        return _text_file_batches(source, batch_size)
    return _load_streaming(source).iter(batch_size=batch_size)


def _text_file_batches(source, batch_size):
    """{"text": lines} of plain text files, split as `datasets`' text builder splits them (universal
    newlines: \n, \r\n and \r end a line), without its Arrow round trip, which made reading
    the slowest stage of `nlpkit tokenize`."""
    for path in source.files:
        with open(path, encoding="utf-8", errors=source.errors) as handle:
            pending = []
            for line in handle:
                pending.append(line.rstrip("\n"))
                if len(pending) == batch_size:
                    yield {"text": pending}
                    pending = []
            if pending:
                yield {"text": pending}


def _labels(source, values):
    """Label cells as read; a hub ClassLabel column's ids become its names (-1, "no label", becomes None)."""
    names = source.hub and source.hub.class_names(source.label_column)
    if not names:
        return list(values)
    return [names[v] if isinstance(v, int) and 0 <= v < len(names) else None for v in values]


def _as_text(value):
    return "" if value is None else str(value)


def _drop_blank_lines(batch):
    return {"text": [line for line in batch["text"] if line.strip()]}


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def read_texts(input_path, *, text_column=None, errors="strict", limit=None, option=None):
    """All text-column values of an input as a list (for vocab training on modest corpora)."""
    source = open_source(input_path, text_column=text_column, errors=errors, option=option)
    texts = []
    for batch in iter_rows(source):
        texts.extend(batch["text"])
        if limit is not None and len(texts) >= limit:
            return texts[:limit]
    return texts
