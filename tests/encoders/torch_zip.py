"""Write `torch.save` zip files without PyTorch, following its documented layout.

    archive/data.pkl      pickle of the state dict; each tensor is `torch._utils._rebuild_tensor_v2(
                          storage, offset, size, stride, requires_grad, hooks)`, each storage a
                          persistent id ("storage", torch.FloatStorage, key, "cpu", numel)
    archive/data/<key>    the storage's raw little-endian bytes

The views are written as given, so a test can also write views that do not fit their storage.
"""

import collections
import contextlib
import pickle
import sys
import types
import zipfile

import numpy as np


class Storage:
    """A flat float32 storage; `numel` is what the pickle claims (default: the real size)."""

    def __init__(self, key, flat, numel=None, written=True):
        self.key, self.flat = str(key), np.asarray(flat, "<f4").reshape(-1)
        self.numel = self.flat.size if numel is None else numel
        self.written = written


class View:
    """A tensor: `size` elements of `storage` from `offset` with `stride` (in elements)."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride))


def contiguous(name_or_key, array):
    """A View of its own storage holding `array` (row-major)."""
    array = np.asarray(array)
    strides = tuple(int(np.prod(array.shape[i + 1 :])) for i in range(array.ndim))
    return View(Storage(name_or_key, array), 0, array.shape, strides)


@contextlib.contextmanager
def _fake_torch():
    """Modules `torch` and `torch._utils` for pickle's global lookup only (nothing is called)."""
    torch_module, utils_module = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch_module.FloatStorage, utils_module._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    fakes = {"torch": torch_module, "torch._utils": utils_module}
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        yield FloatStorage, _rebuild_tensor_v2
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


def write_torch_zip(path, views):
    """Write {name: View} as a torch zip file at `path`."""
    with _fake_torch() as (float_storage, rebuild):

        class Tensor:
            def __init__(self, view):
                self.args = view.args

            def __reduce__(self):
                return rebuild, (*self.args, False, collections.OrderedDict())

        class Writer(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, Storage):
                    return ("storage", float_storage, obj.key, "cpu", obj.numel)
                return None

        state = collections.OrderedDict((name, Tensor(view)) for name, view in views.items())
        storages = {view.args[0].key: view.args[0] for view in views.values()}
        with zipfile.ZipFile(path, "w") as archive:
            with archive.open("archive/data.pkl", "w") as file:
                Writer(file, protocol=2).dump(state)
            for storage in storages.values():
                if storage.written:
                    archive.writestr(f"archive/data/{storage.key}", storage.flat.tobytes())
            archive.writestr("archive/version", "3\n")
