"""Masked-LM inputs: dynamic masking inside `tf.data`, and packing documents into sentence pairs.

TensorFlow-only. `MlmMasker` is a map function on *batches* of `input_word_ids` / `input_mask`;
it is stateless-random (seeded per batch), so the same seed and batch index always give the same
masks — which is what exact resume and seed determinism need. `pack_documents` is a streaming
generator: memory stays bounded whatever the corpus size.
"""

import re

import numpy as np

from nlpkit._tf import import_tensorflow
from nlpkit.errors import NlpkitError

tf = import_tensorflow()

# "[CLS]", "[unused12]", "<pad>", "</s>": tokens that are never masked nor drawn as random tokens.
_SPECIAL_TOKEN = re.compile(r"^(\[[^\]\s]+\]|<[^>\s]+>)$")
_SENTENCEPIECE_WORD_START = "\u2581"  # "▁"


def is_special_token(token):
    """True for bracketed control tokens such as `[CLS]`, `[unused3]`, `<pad>`."""
    return bool(_SPECIAL_TOKEN.match(token))


def continuation_flags(vocab):
    """For each vocab entry, True if the piece continues the previous word (never starts one).

    WordPiece vocabs mark continuations with a leading `##`; SentencePiece vocabs instead mark word
    starts with `▁`, so there every ordinary piece without it is a continuation.
    """
    sentencepiece = any(token.startswith(_SENTENCEPIECE_WORD_START) for token in vocab)
    if sentencepiece:
        return [not (token.startswith(_SENTENCEPIECE_WORD_START) or is_special_token(token)) for token in vocab]
    return [token.startswith("##") for token in vocab]


class MlmMasker:
    """Chooses masked-LM targets in a batch and corrupts them (80 % `[MASK]`, 10 % random, 10 % kept).

    Per sequence, `max(1, round(masked_lm_prob * n))` tokens are chosen (at most
    `max_predictions_per_seq`), where `n` counts the non-padding, non-special tokens. With
    `whole_word=True` a word's pieces are chosen together: words are taken in random order while
    their pieces still fit in that budget (so a sequence may get slightly fewer than the budget).

    Args:
      vocab: list of tokens (index = id); gives the `[MASK]` id, the special tokens and the word pieces.
      max_predictions_per_seq: P, size of the padded target outputs.
      masked_lm_prob: fraction of tokens to predict.
      whole_word: choose whole words rather than single pieces.
      mask_token: the token written over 80 % of the chosen positions.
      mask_rate, random_rate: shares of chosen positions replaced by `[MASK]` and by a random
        ordinary token; the rest keep their token.

    Call: `masker(features, seed)` with `features` a dict holding `input_word_ids` and `input_mask`
    (int `[B, T]`, extra keys pass through) and `seed` an int `[2]` tensor. Returns the dict with
    `input_word_ids` corrupted and `masked_lm_positions`, `masked_lm_ids` (int32 `[B, P]`) and
    `masked_lm_weights` (float32 `[B, P]`, 1 for a real target, 0 for padding) added.
    """

    def __init__(
        self,
        vocab,
        *,
        max_predictions_per_seq=20,
        masked_lm_prob=0.15,
        whole_word=False,
        mask_token="[MASK]",
        mask_rate=0.8,
        random_rate=0.1,
    ):
        vocab = list(vocab)
        if mask_token not in vocab:
            raise NlpkitError(f"the vocab has no mask token {mask_token!r}", hint="add it to the vocab or pass --mask-token")
        if not 0.0 < masked_lm_prob <= 1.0:
            raise NlpkitError(f"masked_lm_prob must be in (0, 1], got {masked_lm_prob}")
        if max_predictions_per_seq < 1:
            raise NlpkitError(f"max_predictions_per_seq must be at least 1, got {max_predictions_per_seq}")
        if mask_rate < 0 or random_rate < 0 or mask_rate + random_rate > 1:
            raise NlpkitError(f"mask_rate + random_rate must be within [0, 1], got {mask_rate} + {random_rate}")
        self.max_predictions_per_seq = int(max_predictions_per_seq)
        self.masked_lm_prob = float(masked_lm_prob)
        self.whole_word = bool(whole_word)
        self.mask_rate = float(mask_rate)
        self.random_rate = float(random_rate)
        self.mask_id = vocab.index(mask_token)
        special = np.array([is_special_token(token) for token in vocab])
        self._special = tf.constant(special)
        self._continuation = tf.constant(np.array(continuation_flags(vocab)) & ~special)
        self._ordinary_ids = tf.constant(np.flatnonzero(~special).astype(np.int32))
        if int(self._ordinary_ids.shape[0]) == 0:
            raise NlpkitError("the vocab holds only special tokens", hint="check --vocab")

    def __call__(self, features, seed):
        ids = tf.cast(features["input_word_ids"], tf.int32)
        candidates = tf.logical_and(tf.cast(features["input_mask"], tf.bool), ~tf.gather(self._special, ids))
        select_seed, action_seed, random_id_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        chosen = self._choose(ids, candidates, select_seed)
        positions, weights = self._first_positions(chosen)
        corrupted = self._corrupt(ids, chosen, action_seed, random_id_seed)
        out = dict(features)
        out["input_word_ids"] = tf.cast(corrupted, features["input_word_ids"].dtype)
        out["masked_lm_positions"] = positions
        out["masked_lm_ids"] = tf.gather(ids, positions, batch_dims=1) * tf.cast(weights, tf.int32)
        out["masked_lm_weights"] = weights
        return out

    def _word_starts(self, ids, candidates):
        if not self.whole_word:
            return candidates
        continues = tf.gather(self._continuation, ids)
        # A continuation piece right after a non-candidate (e.g. after [CLS]) starts its own word.
        previous_is_candidate = tf.pad(candidates[:, :-1], [[0, 0], [1, 0]])
        return tf.logical_and(candidates, ~tf.logical_and(continues, previous_is_candidate))

    def _choose(self, ids, candidates, seed):
        """Bool `[B, T]`: the positions to predict (whole words when asked)."""
        batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
        starts = self._word_starts(ids, candidates)
        # Word index of every candidate position; a word is a start plus the pieces after it.
        word_index = tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1
        word_index = tf.where(candidates, tf.maximum(word_index, 0), length)  # `length` = no word
        row_offset = tf.range(batch)[:, None] * (length + 1)
        word_lengths = tf.math.unsorted_segment_sum(
            tf.cast(candidates, tf.int32), word_index + row_offset, batch * (length + 1)
        )
        word_lengths = tf.reshape(word_lengths, [batch, length + 1])[:, :length]
        n_words = tf.reduce_sum(tf.cast(starts, tf.int32), axis=1, keepdims=True)
        # Words in random order, taken greedily while their pieces fit in the budget. Two vectorised
        # passes: the longest fitting prefix, then the later words that fit what is left.
        keys = tf.random.stateless_uniform([batch, length], seed)
        is_word = tf.range(length)[None, :] < n_words
        order = tf.argsort(tf.where(is_word, keys, 2.0), axis=1, stable=True)
        lengths_in_order = tf.gather(word_lengths, order, batch_dims=1)
        budget = self._budget(tf.reduce_sum(tf.cast(candidates, tf.int32), axis=1, keepdims=True))
        taken = _fitting_prefix(lengths_in_order, is_word, budget)
        left = budget - tf.reduce_sum(tf.where(taken, lengths_in_order, 0), axis=1, keepdims=True)
        more = _fitting_prefix(lengths_in_order, is_word & ~taken & (lengths_in_order <= left), left)
        taken_in_order = taken | more
        taken_word = tf.gather(taken_in_order, tf.argsort(order, axis=1), batch_dims=1)
        taken_word = tf.pad(taken_word, [[0, 0], [0, 1]])  # index `length` (no word) is never taken
        return tf.gather(taken_word, word_index, batch_dims=1)

    def _budget(self, n_candidates):
        wanted = tf.cast(tf.round(tf.cast(n_candidates, tf.float32) * self.masked_lm_prob), tf.int32)
        wanted = tf.minimum(tf.maximum(wanted, 1), self.max_predictions_per_seq)
        return tf.minimum(wanted, n_candidates)

    def _first_positions(self, chosen):
        """The chosen positions in increasing order, padded with 0 to `[B, P]`, and their weights."""
        length = tf.shape(chosen)[1]
        positions = tf.range(length)[None, :]
        ranked = tf.sort(tf.where(chosen, positions, length + positions), axis=1)
        width = self.max_predictions_per_seq
        ranked = tf.pad(ranked, [[0, 0], [0, tf.maximum(width - length, 0)]], constant_values=2 * length)
        ranked = ranked[:, :width]
        weights = ranked < length
        return tf.where(weights, ranked, 0), tf.cast(weights, tf.float32)

    def _corrupt(self, ids, chosen, action_seed, random_id_seed):
        draw = tf.random.stateless_uniform(tf.shape(ids), action_seed)
        random_ids = tf.gather(
            self._ordinary_ids,
            tf.random.stateless_uniform(
                tf.shape(ids), random_id_seed, maxval=tf.shape(self._ordinary_ids)[0], dtype=tf.int32
            ),
        )
        replacement = tf.where(draw < self.mask_rate, self.mask_id, ids)
        replacement = tf.where(
            tf.logical_and(draw >= self.mask_rate, draw < self.mask_rate + self.random_rate), random_ids, replacement
        )
        return tf.where(chosen, replacement, ids)


def _fitting_prefix(lengths, allowed, budget):
    """Among `allowed` items (in order), those whose running total of `lengths` stays within `budget`."""
    running = tf.cumsum(tf.where(allowed, lengths, 0), axis=1)
    return allowed & (running <= budget)


def mask_dataset(dataset, masker, seed, skip=0):
    """Apply `masker` to a dataset of batches, seeding batch i with (seed, i): same seed, same masks.

    `skip` drops the first batches before masking them (resuming a run at its data position); the
    batches after them get the same masks as in a run that never stopped.
    """
    seed = tf.constant(int(seed), tf.int64)

    def apply(index, features):
        return masker(features, tf.stack([seed, index]))

    dataset = dataset.enumerate().skip(skip)
    apply = tf.autograph.experimental.do_not_convert(apply)  # plain TF ops: AutoGraph only costs start-up time
    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# --------------------------------------------------------------------------------------------------
# Packing documents into sentence pairs.


def _truncate_pair(first, second, max_tokens, rng):
    """Drop tokens from the longer segment (randomly its front or back) until both fit."""
    del first[max_tokens:], second[max_tokens:]  # cheap cap first: a huge sentence needs no long loop
    while len(first) + len(second) > max_tokens:
        longer = first if len(first) > len(second) else second
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _split_chunk(chunk, rng):
    """Cut a list of sentences in two at a random boundary: (segment A, segment B).

    A lone sentence is cut at a random token instead, so both segments are non-empty when possible.
    """
    if len(chunk) == 1:
        sentence = chunk[0]
        cut = int(rng.integers(1, len(sentence))) if len(sentence) > 1 else 1
        return sentence[:cut], sentence[cut:]
    cut = int(rng.integers(1, len(chunk)))
    return [t for s in chunk[:cut] for t in s], [t for s in chunk[cut:] for t in s]


def _encode(first, second, seq_length, cls_id, sep_id):
    ids = [cls_id, *first, sep_id] + ([*second, sep_id] if second else [])
    types = [0] * (len(first) + 2) + [1] * (len(ids) - len(first) - 2)
    pad = seq_length - len(ids)
    return {
        "input_word_ids": np.array(ids + [0] * pad, np.int32),
        "input_mask": np.array([1] * len(ids) + [0] * pad, np.int32),
        "input_type_ids": np.array(types + [0] * pad, np.int32),
    }


def pack_documents(
    documents,
    *,
    seq_length,
    cls_id,
    sep_id,
    short_seq_prob=0.1,
    objective=None,
    seed=0,
    pool_size=64,
):
    """Pack documents (each a list of sentences, a sentence a list of ids) into BERT sequences.

    Consecutive sentences of one document are gathered until they fill `seq_length - 3` tokens
    (or, with probability `short_seq_prob`, a random shorter target, so the model also sees short
    inputs), then split at a random sentence boundary into `[CLS] A [SEP] B [SEP]`.

    objective: None (no label), "nsp" (half the time B is a random span of another document:
      `next_sentence_labels` 1 = random, 0 = real continuation) or "sop" (half the time A and B
      are swapped: `sentence_order_labels` 1 = swapped). "nsp" draws the random B from a pool of
      the last `pool_size` documents seen, so the corpus is streamed, never held in memory.

    Yields dicts of int32 arrays `[seq_length]`: input_word_ids, input_mask, input_type_ids (+ label).
    """
    if objective not in (None, "nsp", "sop"):
        raise NlpkitError(f"unknown sentence objective {objective!r}", hint="use none, nsp or sop")
    if seq_length < 5:
        raise NlpkitError(f"seq_length must be at least 5, got {seq_length}")
    rng = np.random.default_rng(seed)
    max_tokens = seq_length - 3
    pool = []
    for document in documents:
        sentences = [list(s) for s in document if len(s)]
        if not sentences:
            continue
        for chunk in _chunks(sentences, max_tokens, short_seq_prob, rng):
            first, second = _split_chunk(chunk, rng)
            label = None
            if objective == "nsp":
                label = int(bool(pool) and rng.random() < 0.5)
                if label:
                    other = pool[rng.integers(len(pool))]
                    start = rng.integers(len(other))
                    second = [t for sentence in other[start:] for t in sentence][:max_tokens]
            elif objective == "sop":
                label = int(bool(second) and rng.random() < 0.5)
                if label:
                    first, second = second, first
            _truncate_pair(first, second, max_tokens, rng)
            example = _encode(first, second, seq_length, cls_id, sep_id)
            if objective is not None:
                example["next_sentence_labels" if objective == "nsp" else "sentence_order_labels"] = np.int32(label)
            yield example
        pool.append(sentences)
        if len(pool) > pool_size:
            pool.pop(rng.integers(len(pool)))


def _chunks(sentences, max_tokens, short_seq_prob, rng):
    """Group consecutive sentences until their tokens reach a (sometimes shortened) target length."""
    target = _target_length(max_tokens, short_seq_prob, rng)
    chunk, size = [], 0
    for sentence in sentences:
        chunk.append(sentence)
        size += len(sentence)
        if size >= target:
            yield chunk
            chunk, size = [], 0
            target = _target_length(max_tokens, short_seq_prob, rng)
    if chunk:
        yield chunk


def _target_length(max_tokens, short_seq_prob, rng):
    return int(rng.integers(2, max_tokens + 1)) if rng.random() < short_seq_prob else max_tokens
