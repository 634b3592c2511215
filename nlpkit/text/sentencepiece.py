"""SentencePiece tokenization (a .model file) on tensorflow-text's SentencepieceTokenizer."""

from nlpkit._tf import import_tensorflow
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


class SentencePieceTokenizer:
    """Text -> SentencePiece ids, and back.

    Args:
        model: path of a .model file (or its bytes).
        add_bos: prepend the model's BOS id; add_eos: append its EOS id.

    `cls_id`, `sep_id`, `pad_id`, `unk_id` name the ids BertPackInputs uses: [CLS]/[SEP]/<pad> pieces when
    the model has them (ALBERT-style), else BOS/EOS, and pad 0 when the model has no pad piece.
    """

    def __init__(self, model, *, add_bos=False, add_eos=False):
        self.processor, self.model_bytes = load_sentencepiece_processor(model)
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.tf_tokenizer = tf_text.SentencepieceTokenizer(
            model=self.model_bytes, out_type=tf.int32, add_bos=add_bos, add_eos=add_eos
        )
        processor = self.processor
        self.unk_id = processor.unk_id()
        self.cls_id = _piece_id(processor, ["[CLS]"], max(processor.bos_id(), 0))
        self.sep_id = _piece_id(processor, ["[SEP]"], max(processor.eos_id(), 0))
        self.pad_id = _piece_id(processor, ["<pad>", "[PAD]"], max(processor.pad_id(), 0))
        self.mask_id = _piece_id(processor, ["[MASK]"], self.unk_id)

    @property
    def vocab_size(self):
        return self.processor.get_piece_size()

    def tokenize(self, texts):
        """[B] strings -> int32 RaggedTensor [B, (pieces)]."""
        return self.tf_tokenizer.tokenize(tf.convert_to_tensor(texts, dtype=tf.string))

    def detokenize(self, ids):
        """int ids [B, (pieces)] (ragged or dense) -> [B] strings."""
        return self.tf_tokenizer.detokenize(ids)

    def id_to_token(self, ids):
        return self.tf_tokenizer.id_to_string(ids)


@keras.saving.register_keras_serializable(package="nlpkit")
class SentencepieceTokenizer(keras.layers.Layer):
    """Keras preprocessing layer: raw text -> SentencePiece ids (TensorFlow tensors, tf.data, SavedModel).

    Args:
        model: path of a .model file.
        add_bos: prepend BOS. add_eos: append EOS.

    Input: string tensor [B] (or scalar). Output: int32 RaggedTensor [B, (pieces)] (1-D for a scalar).
    `detokenize(ids)` maps ids back to text.
    """

    def __init__(self, model, add_bos=False, add_eos=False, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.model = str(model)
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.tokenizer = SentencePieceTokenizer(model, add_bos=add_bos, add_eos=add_eos)
        # The op's model resource must be an attribute of the layer so a SavedModel tracks (exports) it.
        self.tf_tokenizer = self.tokenizer.tf_tokenizer

    def call(self, inputs):
        return self.tokenizer.tokenize(inputs)

    def detokenize(self, ids):
        return self.tokenizer.detokenize(ids)

    def get_config(self):
        config = super().get_config()
        config.update(model=self.model, add_bos=self.add_bos, add_eos=self.add_eos)
        return config
