"""Models: an encoder with a task head (what `nlpkit finetune` trains and `export` serves)."""

from nlpkit.models.classifier import TextClassifier

__all__ = ["TextClassifier"]
