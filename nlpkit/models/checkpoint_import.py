"""Read pretrained BERT weights from disk into NumPy arrays, without PyTorch.

Every reader returns `{name: SourceTensor}` keyed by the Hugging Face name of the tensor
(`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...), in the
Hugging Face layout (dense weights `[out, in]`), so one weight map serves every source format;
`SourceTensor.origin` keeps the name as it is in the file, for the accounting table.

- `model.safetensors`: the `safetensors` package's NumPy API.
- `pytorch_model.bin`: the zip format of `torch.save`, unpickled by a restricted unpickler that
  only knows how to rebuild tensors (anything else in the pickle is refused: a pickle can run code).
- Google's original TensorFlow BERT checkpoints (`bert_model.ckpt.*`): `tf.train.load_checkpoint`.
"""

import collections
import dataclasses
import math
import pickle
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from nlpkit.errors import NlpkitError


@dataclasses.dataclass
class SourceTensor:
    """One tensor of a checkpoint: its value (HF layout) and its name in the file."""

    value: np.ndarray
    origin: str
    skip_reason: str = ""  # set for tensors that are not model weights (optimizer state, buffers)


def read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise NlpkitError(f"{path}: cannot read safetensors file ({err})", hint="is the download complete?")
    return {name: SourceTensor(value, name) for name, value in arrays.items()}


# ---------------------------------------------------------------------------------------------
# pytorch_model.bin (torch.save zip format) without PyTorch


_TORCH_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


class _StorageType:
    """Stands in for `torch.FloatStorage` & co: only carries the dtype."""

    def __init__(self, name):
        import ml_dtypes  # noqa: F401 - registers "bfloat16" with NumPy

        self.dtype = np.dtype(_TORCH_STORAGE_DTYPES[name])


@dataclasses.dataclass
class _BadTensor:
    """Stands in for a tensor whose view does not fit its storage; refused once its name is known."""

    reason: str


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args):
    """`torch._utils._rebuild_tensor_v2`: a strided view of a flat storage, copied.

    The view is checked against the storage first: `as_strided` trusts its arguments and would
    read (or crash on) memory outside the storage.
    """
    problem = _view_problem(storage, storage_offset, size, stride)
    if problem:
        return _BadTensor(problem)
    if not size:
        return storage[storage_offset : storage_offset + 1].reshape(()).copy()
    itemsize = storage.dtype.itemsize
    flat = storage[storage_offset:]
    view = np.lib.stride_tricks.as_strided(flat, shape=tuple(size), strides=[s * itemsize for s in stride])
    return view.copy()


def _view_problem(storage, offset, size, stride):
    """Why (offset, size, stride) is not a view inside `storage`, or '' when it is."""
    if isinstance(storage, _BadTensor):
        return storage.reason
    if not isinstance(storage, np.ndarray):
        return "has no storage"
    if not _is_int(offset) or not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        return "has a malformed view (offset, size, stride)"
    if not all(map(_is_int, [*size, *stride])) or len(size) != len(stride):
        return f"has a malformed view (size {tuple(size)}, stride {tuple(stride)})"
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        return f"has a negative offset, size or stride (offset {offset}, size {tuple(size)}, stride {tuple(stride)})"
    if 0 in size:
        return "" if offset <= storage.size else f"starts at {offset}, past its storage of {storage.size} elements"
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        return (
            f"reads past its storage (size {tuple(size)}, stride {tuple(stride)}, offset {offset} reach element "
            f"{last}; the storage holds {storage.size})"
        )
    if math.prod(size) > storage.size:  # only stride-0 views do that; a weights file has none
        return f"has {math.prod(size)} elements (size {tuple(size)}), more than its storage of {storage.size}"
    return ""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_parameter(data, *unused_args):
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles `data.pkl` of a torch zip file, allowing only tensor-rebuilding globals."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def __init__(self, file, archive, prefix, path):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._path = path

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _StorageType(name)
        raise NlpkitError(
            f"{self._path}: refusing to unpickle '{module}.{name}' (only tensors are read from .bin files)",
            hint="convert the checkpoint to model.safetensors, or check where this file came from",
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 5:
            raise NlpkitError(f"{self._path}: unexpected persistent object {pid!r:.60}", hint="not a torch weights file")
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise NlpkitError(f"{self._path}: unexpected persistent object {kind!r}", hint="not a torch weights file")
        member = f"{self._prefix}/data/{key}"
        try:
            raw = self._archive.read(member)
        except KeyError:
            return _BadTensor(f"has no storage ({member} is not in the archive)")
        if not isinstance(numel, int) or numel < 0 or numel * storage_type.dtype.itemsize > len(raw):
            return _BadTensor(
                f"claims {numel!r} {storage_type.dtype} elements but its storage {member} holds {len(raw)} bytes"
            )
        return np.frombuffer(raw, dtype=storage_type.dtype, count=numel)


def read_pytorch_bin(path):
    """Tensors of a `torch.save` zip file (PyTorch >= 1.6), read without PyTorch."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise NlpkitError(
            f"{path}: not a zip-format PyTorch file (saved by PyTorch < 1.6?)",
            hint="re-save it with a recent PyTorch, or use model.safetensors",
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise NlpkitError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}", hint="not a torch file")
        prefix = pickles[0][: -len("/data.pkl")]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise NlpkitError(f"{path}: big-endian torch files are not supported", hint="re-save on a little-endian machine")
        try:
            with archive.open(pickles[0]) as file:
                state = _TorchUnpickler(file, archive, prefix, path).load()
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, KeyError, IndexError,
                zipfile.BadZipFile, zlib.error) as err:
            raise NlpkitError(f"{path}: damaged data.pkl ({type(err).__name__}: {err})", hint="download the file again")
    if not isinstance(state, dict):
        raise NlpkitError(f"{path}: expected a state dict of tensors", hint="save model.state_dict(), not the model")
    for name, value in state.items():
        if isinstance(value, _BadTensor):
            raise NlpkitError(f"{path}: tensor '{name}' {value.reason}", hint="the file is damaged or not a torch checkpoint")
        if not isinstance(value, np.ndarray):
            raise NlpkitError(f"{path}: entry '{name}' is not a tensor", hint="save model.state_dict(), not the model")
    return {name: SourceTensor(value, name) for name, value in state.items()}


# ---------------------------------------------------------------------------------------------
# Google's original TensorFlow BERT checkpoints

# (pattern on the TF name, replacement giving the HF name); applied in order, first match wins.
_TF_RENAMES = [
    (r"^bert/embeddings/(word|position|token_type)_embeddings$", r"embeddings.\1_embeddings.weight"),
    (r"^bert/encoder/layer_(\d+)/", r"encoder.layer.\1."),
    (r"^bert/", ""),
]
_TF_OPTIMIZER_STATE = re.compile(r"(^global_step$|/adam_[mv]$|/Momentum$|/AdamWeightDecay|^beta[12]_power)")


def _tf_name_to_hf(name):
    """`bert/encoder/layer_0/attention/self/query/kernel` -> `encoder.layer.0.attention.self.query.weight`."""
    for pattern, replacement in _TF_RENAMES:
        if re.search(pattern, name):
            name = re.sub(pattern, replacement, name, count=1)
            if name.endswith(".weight"):
                return name
    name = name.replace("/", ".")
    for tf_leaf, hf_leaf in ((".kernel", ".weight"), (".gamma", ".weight"), (".beta", ".bias"), (".output_bias", ".bias")):
        if name.endswith(tf_leaf):
            return name[: -len(tf_leaf)] + hf_leaf
    return name


def read_tf_checkpoint(path):
    """Tensors of a TF name-based checkpoint (`path` is the prefix, e.g. `.../bert_model.ckpt`)."""
    import tensorflow as tf  # local: the rest of the readers need only NumPy

    try:
        reader = tf.train.load_checkpoint(str(path))
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as err:
        raise NlpkitError(f"{path}: cannot read TensorFlow checkpoint ({err})", hint="pass the prefix, e.g. bert_model.ckpt")
    tensors = {}
    for origin in sorted(reader.get_variable_to_shape_map()):
        try:
            value = reader.get_tensor(origin)
        except (tf.errors.OpError, ValueError, IndexError) as err:  # IndexError: a truncated data file
            raise NlpkitError(f"{path}: cannot read tensor '{origin}' ({err.message if hasattr(err, 'message') else err})",
                              hint="the checkpoint is damaged; download it again")
        if _TF_OPTIMIZER_STATE.search(origin):
            tensors[origin] = SourceTensor(value, origin, skip_reason="optimizer state")
            continue
        name = _tf_name_to_hf(origin)
        if origin.endswith("/kernel") and value.ndim == 2:
            value = value.T  # TF dense kernels are [in, out]; HF weights are [out, in]
        tensors[name] = SourceTensor(np.ascontiguousarray(value), origin)
    return tensors


def find_tf_checkpoint(directory):
    """The checkpoint prefix inside a folder of Google's BERT release, or None."""
    indexes = sorted(Path(directory).glob("*.ckpt*.index")) or sorted(Path(directory).glob("*.index"))
    return indexes[0].with_suffix("") if indexes else None
