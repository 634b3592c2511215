"""Data (TensorFlow-only): reading text sources, TFRecord/JSONL outputs, the tokenize pipeline, bundled data.

Modules: sources, records, pipeline, bundled, labelled (labelled tables read into packed
classification examples). This package imports nothing so `bundled` stays cheap.
"""
