"""SentencePiece tokenization (a .model file) on tensorflow-text's SentencepieceTokenizer, with Model
Garden's options (lower_case, strip_diacritics, subword sampling, offsets)."""

import base64

from nlpkit._tf import import_tensorflow
from nlpkit.errors import NlpkitError, one_of_names
from nlpkit.text.offsets import normalize_with_offsets
from nlpkit.text.vocab import load_sentencepiece_processor

tf = import_tensorflow()
import keras  # noqa: E402 - imported after TensorFlow so its import noise stays filtered
import tensorflow_text as tf_text  # noqa: E402


def _piece_id(processor, candidates, fallback):
    """Id of the first candidate piece the model knows, else `fallback`."""
    for piece in candidates:
        index = processor.piece_to_id(piece)  # the unknown piece's id when the model lacks `piece`
        if processor.id_to_piece(index) == piece:
            return index
    return fallback


def strip_diacritics_and_case_fold(texts, *, lower_case, strip_diacritics):
    """Model Garden's SentencePiece pre-normalisation of [N] strings: NFD and drop combining marks
    (Mn) when `strip_diacritics`, then NFKC case folding when `lower_case`."""
    if strip_diacritics:
        texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFD"), r"\p{Mn}", "")
    if lower_case:
        texts = tf_text.case_fold_utf8(texts)
    return texts


class SentencePieceTokenizer:
    """Text -> SentencePiece ids, and back.

    Args:
        model: path of a .model file (or its bytes).
        add_bos: prepend the model's BOS id; add_eos: append its EOS id.
        lower_case: NFKC case-fold the text first (Model Garden's lower_case).
        strip_diacritics: NFD the text and drop its combining marks first.
        nbest_size, alpha: subword sampling (unigram models; BPE-dropout for BPE with alpha the
            drop probability), used only by `tokenize(..., training=True)`: nbest_size 0 or 1 never
            samples, > 1 samples among the n best segmentations, < 0 from all of them, with
            inverse temperature alpha.

    `cls_id`, `sep_id`, `pad_id`, `unk_id` name the ids BertPackInputs uses: [CLS]/[SEP]/<pad> pieces when
    the model has them (ALBERT-style), else BOS/EOS, and pad 0 when the model has no pad piece.
    """

    def __init__(self, model, *, add_bos=False, add_eos=False, lower_case=False, strip_diacritics=False,
                 nbest_size=0, alpha=1.0):
        self.processor, self.model_bytes = load_sentencepiece_processor(model)
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.lower_case = lower_case
        self.strip_diacritics = strip_diacritics
        self.nbest_size = nbest_size
        self.alpha = alpha
        options = dict(model=self.model_bytes, out_type=tf.int32, add_bos=add_bos, add_eos=add_eos)
        self.tf_tokenizer = tf_text.SentencepieceTokenizer(**options)
        samples = nbest_size not in (0, 1)
        self.sampling_tokenizer = tf_text.SentencepieceTokenizer(**options, nbest_size=nbest_size, alpha=alpha) if samples else None
        processor = self.processor
        self.unk_id = processor.unk_id()
        self.cls_id = _piece_id(processor, ["[CLS]"], max(processor.bos_id(), 0))
        self.sep_id = _piece_id(processor, ["[SEP]"], max(processor.eos_id(), 0))
        self.pad_id = _piece_id(processor, ["<pad>", "[PAD]"], max(processor.pad_id(), 0))
        self.mask_id = _piece_id(processor, ["[MASK]"], self.unk_id)

    @property
    def vocab_size(self):
        return self.processor.get_piece_size()

    def get_special_tokens_dict(self):
        """Model Garden's special-token ids: start_of_sequence_id, end_of_segment_id, padding_id (the
        cls/sep/pad ids above, so BOS/EOS where the model has no [CLS]/[SEP]), mask_id (only when the
        model has a [MASK] piece) and vocab_size."""
        ids = {"vocab_size": self.vocab_size, "start_of_sequence_id": self.cls_id,
               "end_of_segment_id": self.sep_id, "padding_id": self.pad_id}
        if self.mask_id != self.unk_id:
            ids["mask_id"] = self.mask_id
        return ids

    def normalize(self, texts):
        """The lower_case / strip_diacritics step of [N] texts (the model's own normaliser runs after it)."""
        return strip_diacritics_and_case_fold(texts, lower_case=self.lower_case, strip_diacritics=self.strip_diacritics)

    def _tokenizer(self, training):
        return self.sampling_tokenizer if training and self.sampling_tokenizer is not None else self.tf_tokenizer

    def tokenize(self, texts, training=False):
        """[B] strings -> int32 RaggedTensor [B, (pieces)]; sampled segmentations when training."""
        return self._tokenizer(training).tokenize(self.normalize(tf.convert_to_tensor(texts, dtype=tf.string)))

    def tokenize_with_offsets(self, texts, training=False):
        """[B] strings -> (ids, starts, ends): int32 ids and int64 byte offsets into the original
        strings (through lower_case and strip_diacritics too), RaggedTensors [B, (pieces)].

        The span of a piece is tensorflow-text's, widened to whole original characters: a "▁" piece
        covers the space before it (the dummy prefix at the start covers nothing); of the byte-fallback
        pieces of one character, the last covers the character and the others nothing.
        """
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if not (self.lower_case or self.strip_diacritics):
            return self._tokenizer(training).tokenize_with_offsets(texts)
        normalized, to_original = normalize_with_offsets(texts, self.normalize)
        ids, starts, ends = self._tokenizer(training).tokenize_with_offsets(normalized)
        return (ids, *to_original(starts, ends))

    def detokenize(self, ids):
        """int ids [B, (pieces)] (ragged or dense) -> [B] strings."""
        return self.tf_tokenizer.detokenize(ids)

    def id_to_token(self, ids):
        return self.tf_tokenizer.id_to_string(ids)


@keras.saving.register_keras_serializable(package="nlpkit")
class SentencepieceTokenizer(keras.layers.Layer):
    """Keras preprocessing layer: raw text -> SentencePiece ids (TensorFlow tensors, tf.data, SavedModel).

    Takes Model Garden's `SentencepieceTokenizer` arguments (`model_file_path` or
    `model_serialized_proto`, `lower_case`, `strip_diacritics`, `nbest_size`, `alpha`,
    `tokenize_with_offsets`); unlike Model Garden, offsets work with strip_diacritics too.

    Args:
        model: path of a .model file (`model_file_path` is the same).
        model_serialized_proto: the model's bytes instead of a path (kept base64 in the config).
        add_bos: prepend BOS. add_eos: append EOS.
        lower_case, strip_diacritics, nbest_size, alpha: as for `SentencePieceTokenizer`; sampling
            only when called with training=True (deterministic in inference and with nbest_size 0).
        tokenize_with_offsets: return `(ids, starts, ends)`, int64 byte offsets into the input.

    Input: string tensor [B] (or scalar). Output: int32 RaggedTensor [B, (pieces)] (1-D for a scalar);
    with tokenize_with_offsets that and two int64 tensors of the same shape.
    `detokenize(ids)` maps ids back to text; `get_special_tokens_dict()` gives Model Garden's ids.
    """

    def __init__(self, model=None, add_bos=False, add_eos=False, lower_case=False, strip_diacritics=False,
                 nbest_size=0, alpha=1.0, tokenize_with_offsets=False, *, model_file_path=None,
                 model_serialized_proto=None, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        model = one_of_names("SentencepieceTokenizer", ("model", "model_file_path"), (model, model_file_path))
        if (model is None) == (model_serialized_proto is None):
            raise NlpkitError("SentencepieceTokenizer needs exactly one of model (model_file_path) and "
                              "model_serialized_proto", hint="pass the .model path or its bytes")
        self.model = None if model is None else str(model)
        if isinstance(model_serialized_proto, str):  # from a config
            model_serialized_proto = base64.b64decode(model_serialized_proto)
        self.model_serialized_proto = model_serialized_proto
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.lower_case = lower_case
        self.strip_diacritics = strip_diacritics
        self.nbest_size = nbest_size
        self.alpha = alpha
        self.tokenize_with_offsets = tokenize_with_offsets
        self.tokenizer = SentencePieceTokenizer(
            model if model is not None else model_serialized_proto, add_bos=add_bos, add_eos=add_eos,
            lower_case=lower_case, strip_diacritics=strip_diacritics, nbest_size=nbest_size, alpha=alpha,
        )
        # The ops' model resources must be attributes of the layer so a SavedModel tracks (exports) them.
        self.tf_tokenizer = self.tokenizer.tf_tokenizer
        self.sampling_tokenizer = self.tokenizer.sampling_tokenizer

    @property
    def vocab_size(self):
        return self.tokenizer.vocab_size

    def get_special_tokens_dict(self):
        return self.tokenizer.get_special_tokens_dict()

    def call(self, inputs, training=None):
        inputs = tf.convert_to_tensor(inputs, dtype=tf.string)
        tokenize = self.tokenizer.tokenize_with_offsets if self.tokenize_with_offsets else self.tokenizer.tokenize
        if inputs.shape.rank == 0:
            return tf.nest.map_structure(lambda part: part[0], tokenize(inputs[None], training=bool(training)))
        return tokenize(inputs, training=bool(training))

    def detokenize(self, ids):
        return self.tokenizer.detokenize(ids)

    def get_config(self):
        config = super().get_config()
        proto = self.model_serialized_proto
        config.update(
            model=self.model,
            model_serialized_proto=None if proto is None else base64.b64encode(proto).decode("ascii"),
            add_bos=self.add_bos,
            add_eos=self.add_eos,
            lower_case=self.lower_case,
            strip_diacritics=self.strip_diacritics,
            nbest_size=self.nbest_size,
            alpha=self.alpha,
            tokenize_with_offsets=self.tokenize_with_offsets,
        )
        return config
