"""Labelled examples for classification: read through `datasets`, map labels, tokenize and pack.

TensorFlow-only (the tokenizers are tensorflow-text). The packed ids are NumPy arrays, so the
Keras model that trains on them can run under any backend.
"""

from dataclasses import dataclass, field

import numpy as np

from nlpkit.errors import NlpkitError

EMPTY_ROW_POLICIES = ("skip", "fail")


@dataclass
class Examples:
    """Texts (and optional second segments) with their raw labels, in input order."""

    texts: list
    pairs: list = None
    labels: list = None
    skipped_empty: int = 0
    source: str = ""
    rows: list = field(default_factory=list)  # 1-based input row number of each kept example

    def __len__(self):
        return len(self.texts)

    def subset(self, indices):
        pick = lambda values: None if values is None else [values[i] for i in indices]  # noqa: E731
        return Examples(
            [self.texts[i] for i in indices], pick(self.pairs), pick(self.labels), 0, self.source, pick(self.rows)
        )


def read_examples(path, *, text_column="text", pair_column=None, label_column="label", empty_rows="skip",
                  errors="strict", option=None):
    """Read a csv / json(l) / parquet / text input, or a cached Hugging Face dataset `NAME[/CONFIG][:SPLIT]`,
    into `Examples` (labels as strings, or None; a ClassLabel column gives its names).

    `option` is the command-line option the input came from ("--train", "--validation", "--test", "--data"):
    it names the input in errors and gives a hub name without `:SPLIT` that option's split.
    """
    from nlpkit.data.sources import iter_rows, open_source

    if empty_rows not in EMPTY_ROW_POLICIES:
        raise NlpkitError(f"--empty-rows {empty_rows!r} is not known", hint="use skip or fail")
    source = open_source(path, text_column=text_column, pair_column=pair_column, label_column=label_column,
                         errors=errors, option=option)
    examples = Examples([], [] if pair_column else None, [] if label_column else None, source=str(path))
    row = 0
    for batch in iter_rows(source):
        for i, text in enumerate(batch["text"]):
            row += 1
            if not text.strip():
                if empty_rows == "fail":
                    raise NlpkitError(f"{path}: row {row} has an empty {text_column!r}",
                                      hint="fix the row or pass --empty-rows skip")
                examples.skipped_empty += 1
                continue
            examples.texts.append(text)
            examples.rows.append(row)
            if pair_column:
                examples.pairs.append(batch["pair"][i])
            if label_column:
                examples.labels.append(label_text(batch["label"][i], path, row))
    if not examples.texts:
        raise NlpkitError(f"{path} has no non-empty text rows", hint="check --text-column")
    return examples


def label_text(value, path, row):
    """A raw label value as the string nlpkit names it by (3.0 -> "3"); a missing one is an error naming the row."""
    if value is None or str(value).strip() == "":
        raise NlpkitError(f"{path}: row {row} has no label", hint="every training row needs a label")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def sorted_labels(labels):
    """The one label encoding of nlpkit: label id = index in the sorted distinct label strings,
    integer-looking labels first, in numeric order ("2" < "10"), then the others alphabetically.

    Used wherever labels get ids (fine-tuning, `nlpkit tokenize`); a model directory keeps the
    names it was trained with, so loading never re-sorts them.
    """
    return sorted(set(labels), key=lambda x: (0, int(x), "") if x.lstrip("-").isdigit() else (1, 0, x))


def label_names(labels):
    """`sorted_labels` of training labels, which must hold at least two classes."""
    names = sorted_labels(labels)
    if len(names) < 2:
        raise NlpkitError(f"the training data has a single class ({names[0]!r})",
                          hint="a classifier needs examples of at least two labels")
    return names


def label_ids(examples, names):
    """Map raw labels to ids; a label the model does not know is an error naming the row."""
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for label, row in zip(examples.labels, examples.rows):
        if label not in index:
            raise NlpkitError(f"{examples.source}: row {row} has label {label!r}, unknown to the model",
                              hint=f"known labels: {', '.join(names)}")
        ids.append(index[label])
    return np.asarray(ids, "int32")


def split_validation(examples, fraction, seed):
    """(train, validation) with a seeded random `fraction` held out."""
    if not 0.0 < fraction < 1.0:
        raise NlpkitError(f"--validation-split must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(len(examples))
    held = max(1, int(round(fraction * len(examples))))
    return examples.subset(sorted(order[held:])), examples.subset(sorted(order[:held]))


class TextPacker:
    """Raw texts (and optional pairs) -> the three int32 `[N, seq_length]` BERT inputs as NumPy."""

    def __init__(self, vocab_path, seq_length, *, lower_case=True, truncation="round_robin"):
        from nlpkit.text.packing import check_seq_length
        from nlpkit.text.tokenizers import load_tokenizer

        check_seq_length(seq_length)
        self.tokenizer = load_tokenizer(vocab_path, lower_case=lower_case)
        self.seq_length = seq_length
        self.truncation = truncation

    def pack_tensors(self, texts, pairs=None):
        """String tensors (or lists) `[B]` -> the three int32 `[B, seq_length]` tensors; TensorFlow ops
        only, so it runs eagerly or inside a traced function (the exported SavedModel's)."""
        from nlpkit.text.packing import pack_inputs

        segments = [self.tokenizer.tokenize(texts)]
        if pairs is not None:
            segments.append(self.tokenizer.tokenize(pairs))
        return pack_inputs(segments, self.seq_length, cls_id=self.tokenizer.cls_id, sep_id=self.tokenizer.sep_id,
                           pad_id=self.tokenizer.pad_id, truncator=self.truncation)

    def pack(self, texts, pairs=None, batch_size=1024):
        """Lists of texts (and pairs) -> the three int32 `[N, seq_length]` inputs as NumPy arrays."""
        parts = []
        for start in range(0, len(texts), batch_size):
            stop = start + batch_size
            packed = self.pack_tensors(texts[start:stop], None if pairs is None else pairs[start:stop])
            parts.append({name: value.numpy() for name, value in packed.items()})
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
