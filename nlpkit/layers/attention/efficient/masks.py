"""Mask objects of the inner-attention contract (after fast-transformers' masking module).

An inner attention receives three masks: `attn_mask` (which keys each query may see),
`query_lengths` and `key_lengths` (which positions of each sample are real). The objects say
whether they are certainly all ones (`all_ones`) and whether they are lower-triangular
(`lower_triangular`), so an attention can take a fast path or refuse a mask it cannot honour.
`attention_mask` gives the catalogue's `[B, T, S]` form (`[1, T, S]` when the mask is the same
for every sample); 1/True = may attend. Every mask also offers fast-transformers' `BaseMask`
forms: `float_matrix`, `additive_matrix`, `additive_matrix_finite` and `lengths`.
"""

import keras
import numpy as np
from keras import ops

from nlpkit.errors import NlpkitError
from nlpkit.layers.masks import causal_mask


def concrete_value(x):
    """`x` as a NumPy array when its values are known now (eager), else None (traced/symbolic)."""
    if x is None or isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # noqa: BLE001 - symbolic tensors and tracers refuse conversion; that is the answer
        return None


# Added to a disallowed score by `additive_matrix_finite`: -inf's stand-in (fast-transformers' value).
FINITE_MASK_VALUE = -1e24


class BaseMask:
    """The forms every mask derives from its `bool_matrix` (fast-transformers' `BaseMask`).

    `float_matrix`: float32, 1.0 where kept, 0.0 elsewhere (a multiplicative mask).
    `additive_matrix`: float32, 0.0 where kept, -inf elsewhere (added to softmax scores).
    `additive_matrix_finite`: as `additive_matrix` with -1e24 for -inf (float32 only: it
    overflows float16 to -inf).
    `lengths`: the row lengths of a mask whose rows are ones followed by zeros (checked when the
    values are known; a traced mask is trusted).
    """

    @property
    def float_matrix(self):
        return ops.cast(self.bool_matrix, "float32")

    @property
    def additive_matrix(self):
        return ops.where(self.bool_matrix, 0.0, float("-inf"))

    @property
    def additive_matrix_finite(self):
        return ops.where(self.bool_matrix, 0.0, FINITE_MASK_VALUE)

    @property
    def lengths(self):
        matrix = self.bool_matrix
        lengths = ops.sum(ops.cast(matrix, "int32"), axis=-1)
        value, counts = concrete_value(matrix), concrete_value(lengths)
        if value is not None and not np.array_equal(value, np.arange(value.shape[-1]) < counts[..., None]):
            raise NlpkitError(
                f"{type(self).__name__} is not a length mask (some row is not ones followed by zeros)",
                hint="read bool_matrix instead of lengths for this mask",
            )
        return lengths


@keras.saving.register_keras_serializable(package="nlpkit")
class FullMask(BaseMask):
    """An arbitrary attention mask `[T, S]` or `[B, T, S]`, or all ones of shape `[N, M]`.

    Args:
      mask: boolean or 0/1 array `[T, S]` or `[B, T, S]`; None = all ones.
      N: number of queries T when `mask` is None.
      M: number of keys S when `mask` is None (default N).
    """

    def __init__(self, mask=None, N=None, M=None):
        if mask is None:
            if N is None:
                raise NlpkitError("FullMask needs a mask or its size N", hint="pass FullMask(mask) or FullMask(N=T, M=S)")
            self._mask = None
            self.shape = (N, N if M is None else M)
            return
        if len(mask.shape) not in (2, 3):
            raise NlpkitError(
                f"attn_mask must be [T, S] or [B, T, S], got shape {tuple(mask.shape)}",
                hint="pass a 2-D or 3-D attention mask (1 = may attend)",
            )
        self._mask = ops.cast(mask, "bool")
        self.shape = tuple(mask.shape[-2:])

    def get_config(self):
        """Only an all-ones mask is a constant that a saved model can store as a call argument."""
        if self._mask is not None:
            raise NlpkitError("a FullMask holding a tensor cannot be saved", hint="pass the mask array as a model input")
        return {"N": self.shape[0], "M": self.shape[1]}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def all_ones(self):
        if self._mask is None:
            return True
        value = concrete_value(self._mask)
        return value is not None and bool(value.all())

    @property
    def lower_triangular(self):
        """True when the mask is exactly the causal mask (ones on and below the diagonal)."""
        value = None if self._mask is None else concrete_value(self._mask)
        if value is None:
            return self._mask is None and self.shape[0] == 1 == self.shape[1]
        return value.shape[-1] == value.shape[-2] and bool(np.all(value == np.tril(np.ones(self.shape, bool))))

    @property
    def bool_matrix(self):
        """`[T, S]` or `[B, T, S]` boolean tensor."""
        if self._mask is None:
            return ops.ones(self.shape, "bool")
        return self._mask

    @property
    def attention_mask(self):
        """`[B, T, S]` (or `[1, T, S]`) boolean tensor: the catalogue's form."""
        matrix = self.bool_matrix
        return ops.expand_dims(matrix, 0) if len(matrix.shape) == 2 else matrix


@keras.saving.register_keras_serializable(package="nlpkit")
class TriangularMask(FullMask):
    """The causal mask of N queries over N keys: query t sees keys s <= t.

    Args:
      N: sequence length.
    """

    def __init__(self, N):
        self._mask = None
        self.shape = (N, N)

    def get_config(self):
        return {"N": self.shape[0]}

    @property
    def all_ones(self):
        return self.shape[0] == 1

    @property
    def lower_triangular(self):
        return True

    @property
    def bool_matrix(self):
        return causal_mask(self.shape[0])


class LengthMask(BaseMask):
    """Which positions of each sample are real: the first `lengths[b]` of `max_len`.

    Args:
      lengths: int array `[B]`; None = every sample has `max_len` positions.
      max_len: padded length (default: the largest length, known only for concrete lengths).
    A non-prefix padding mask `[B, L]` is accepted through `LengthMask.from_padding`.
    `lower_triangular` is always False: it is not a query x key mask.
    """

    def __init__(self, lengths=None, max_len=None):
        self._matrix = None
        if lengths is not None and len(lengths.shape) != 1:
            raise NlpkitError(
                f"lengths must be a 1-D array [B], got shape {tuple(lengths.shape)}",
                hint="pass one length per sample",
            )
        if max_len is None:
            value = concrete_value(lengths)
            if value is None:
                raise NlpkitError("LengthMask needs max_len for symbolic lengths", hint="pass max_len=T")
            max_len = int(value.max()) if value.size else 0
        self._lengths = None if lengths is None else ops.cast(lengths, "int32")
        self.max_len = max_len

    @classmethod
    def from_padding(cls, padding):
        """From a `[B, L]` padding mask (1 = real position, any pattern)."""
        mask = cls(None, max_len=padding.shape[-1])
        mask._matrix = ops.cast(padding, "bool")
        return mask

    @property
    def all_ones(self):
        if self._matrix is None and self._lengths is None:
            return True
        value = concrete_value(self.bool_matrix)
        return value is not None and bool(value.all())

    @property
    def lower_triangular(self):
        return False

    @property
    def shape(self):
        return tuple(self.bool_matrix.shape)

    @property
    def lengths(self):
        """`[B]` int32 number of real positions (None when every position is real)."""
        if self._matrix is not None:
            return ops.sum(ops.cast(self._matrix, "int32"), axis=-1)
        return self._lengths

    @property
    def bool_matrix(self):
        """`[B, L]` boolean (True = real position); `[1, L]` when there are no lengths."""
        if self._matrix is not None:
            return self._matrix
        positions = ops.expand_dims(ops.arange(self.max_len, dtype="int32"), 0)
        if self._lengths is None:
            return ops.ones((1, self.max_len), "bool")
        return ops.less(positions, ops.expand_dims(self._lengths, 1))


def as_attn_mask(mask, queries_length, keys_length):
    """A mask object, an array (`[T, S]`/`[B, T, S]`) or None -> a mask object."""
    if isinstance(mask, FullMask):
        return mask
    if mask is None:
        return FullMask(N=queries_length, M=keys_length)
    return FullMask(mask)


def as_length_mask(lengths, max_len):
    """A LengthMask, a `[B]` lengths array or None -> a LengthMask over `max_len` positions."""
    if isinstance(lengths, LengthMask):
        return lengths
    return LengthMask(lengths, max_len=max_len)


def is_key_padding(attention_mask):
    """Whether a mask is `[B, 1, S]` (or `[B, S]`): key padding, the same for every query."""
    return len(attention_mask.shape) == 2 or (len(attention_mask.shape) == 3 and attention_mask.shape[1] == 1)


def factorize_padding(attention_mask):
    """`[B, T, S]` padding-style mask -> (query padding `[B, T]`, key padding `[B, S]`).

    Attentions that can only drop keys and queries (linear, clustered, reformer, kernel) accept a
    dense mask only when it is the outer product of the two. That is verified whenever the mask's
    values are known (eager calls); a traced mask is trusted to follow that contract.
    """
    mask = ops.cast(attention_mask, "bool")
    if len(mask.shape) == 2:
        mask = ops.expand_dims(mask, 0)
    query_padding = ops.any(mask, axis=-1)
    key_padding = ops.any(mask, axis=-2)
    value = concrete_value(mask)
    if value is not None:
        rebuilt = np.asarray(concrete_value(query_padding))[:, :, None] & np.asarray(concrete_value(key_padding))[:, None, :]
        if not np.array_equal(np.broadcast_to(value, rebuilt.shape), rebuilt):
            raise NlpkitError(
                "this attention honours only padding masks, but attention_mask is not one "
                "(it is not query_padding x key_padding)",
                hint="use a full-softmax or local attention for arbitrary masks",
            )
    return query_padding, key_padding
