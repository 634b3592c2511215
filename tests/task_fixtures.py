"""Small helpers shared by the task tests (multi-label, regression, token classification)."""

import csv


def write_labelled_csv(path, rows):
    """A csv with header text,label and the given (text, label) rows; returns the path."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path
