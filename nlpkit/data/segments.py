"""Transformer-XL pretraining data: documents laid out as B parallel streams of consecutive segments.

TensorFlow-only (tf.data). Batch slot i of step t+1 holds the segment of slot i's document that
follows the one it held at step t, so the memory a `RecurrentMemoryPretrainer` keeps per slot is
the context of the same document. A slot whose document ends takes the next unused document of
the corpus and flags the step with `document_start` = 1 (its memory is then masked out). The last
segment of a document is padded (a segment never mixes two documents). A pass over the corpus
ends at the first step some slot finds no document left; the other slots' unfinished documents
are dropped and the next pass (`repeat`) starts every slot on a new document.
"""

import numpy as np

from nlpkit._tf import import_tensorflow
from nlpkit.data.records import FEATURES
from nlpkit.errors import NlpkitError
from nlpkit.models.recurrent_memory import DOCUMENT_START

tf = import_tensorflow()


def stream_batches(documents, num_streams, seq_length):
    """Yield batches (dicts of int32 arrays) of `num_streams` parallel document streams.

    documents: iterable of documents, each a list of sentences, a sentence a list of token ids
      (a document's sentences are concatenated; empty documents are skipped).
    Yields `input_word_ids`, `input_mask`, `input_type_ids` `[num_streams, seq_length]` (type ids
    all 0, the memory's segment) and `document_start` `[num_streams]`.
    """
    documents = (tokens for tokens in (_flatten(document) for document in documents) if tokens)
    current = [[] for _ in range(num_streams)]  # each slot's document
    offset = [0] * num_streams  # where its next segment starts
    while True:
        starts = np.zeros(num_streams, np.int32)
        for slot in range(num_streams):
            if offset[slot] >= len(current[slot]):
                current[slot] = next(documents, None)
                if current[slot] is None:
                    return
                offset[slot], starts[slot] = 0, 1
        segments = [current[slot][offset[slot] : offset[slot] + seq_length] for slot in range(num_streams)]
        offset = [position + seq_length for position in offset]
        yield _batch(segments, starts, seq_length)


def _flatten(document):
    return [token for sentence in document for token in sentence]


def _batch(segments, starts, seq_length):
    ids = np.zeros((len(segments), seq_length), np.int32)
    mask = np.zeros_like(ids)
    for slot, segment in enumerate(segments):
        ids[slot, : len(segment)] = segment
        mask[slot, : len(segment)] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": np.zeros_like(ids), DOCUMENT_START: starts}


def stream_dataset(documents, num_streams, seq_length):
    """Endless dataset of `stream_batches` over `documents()` (a callable: a fresh pass each repeat)."""
    signature = {name: tf.TensorSpec([num_streams, seq_length], tf.int32) for name in FEATURES}
    signature[DOCUMENT_START] = tf.TensorSpec([num_streams], tf.int32)
    dataset = tf.data.Dataset.from_generator(
        lambda: stream_batches(documents(), num_streams, seq_length), output_signature=signature
    )
    return dataset.repeat()


def check_memory_run(config, kind, replicas):
    """Options a run with Transformer-XL memory cannot honour: one clear error each.

    kind: the --data kind ("shards", "table", "text"); replicas: the strategy's replicas in sync.
    """
    if config.objective != "none":
        raise NlpkitError(
            f"--objective {config.objective} needs sentence pairs, but a TransformerXL with mem_len > 0 "
            "trains on consecutive segments of each document",
            hint="use --objective none, or a model config with mem_len 0",
        )
    if kind == "shards":
        raise NlpkitError(
            f"--data {config.data} holds packed rows without document boundaries, which a TransformerXL "
            "with mem_len > 0 needs to carry its memory",
            hint="pass the raw text (or a csv/json/jsonl/parquet file) as --data, or use mem_len 0",
        )
    if replicas > 1:
        raise NlpkitError(
            f"a TransformerXL with mem_len > 0 trains on one replica, the strategy has {replicas}",
            hint="pass --strategy cpu or gpu, or use a model config with mem_len 0",
        )
