"""Data (TensorFlow-only): reading text sources, TFRecord/JSONL outputs, the tokenize pipeline, bundled data.

Modules: sources, records, pipeline, bundled. This package imports nothing so `bundled` stays cheap.
"""
