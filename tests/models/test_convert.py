"""Conversion of tiny synthetic BERT checkpoints in every source format, strict accounting, HF export."""

import json
import pickle
import re
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import nlpkit
from nlpkit.models import convert as conversion
from nlpkit.errors import NlpkitError
from tests.encoders import bert_reference as ref
from tests.encoders import torch_zip

rng = np.random.default_rng(0)
TENSORS = ref.random_bert_tensors(rng)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(35)]


def _hf_folder(path, tensors=TENSORS, weights="safetensors", config=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config or ref.hf_config()))
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    if weights == "safetensors":
        save_file(dict(tensors), str(path / "model.safetensors"))
    else:
        _write_torch_zip(path / "pytorch_model.bin", tensors)
    return path


def _inputs():
    ids = np.array([[2, 7, 9, 11, 3, 0], [2, 30, 3, 0, 0, 0]], "int32")
    return ids, (ids > 0).astype("int32"), np.array([[0, 0, 0, 1, 1, 0], [0, 1, 1, 0, 0, 0]], "int32")


def _run(model_dir):
    ids, mask, type_ids = _inputs()
    outputs = nlpkit.load_model(model_dir)(dict(input_word_ids=ids, input_mask=mask, input_type_ids=type_ids))
    return np.asarray(outputs["sequence_output"]), np.asarray(outputs["pooled_output"])


def _check_against_reference(model_dir, tensors=TENSORS):
    ids, mask, type_ids = _inputs()
    sequence, pooled = _run(model_dir)
    want_sequence, want_pooled = ref.bert_forward(tensors, 2, ids, mask, type_ids)
    real = mask.astype(bool)
    np.testing.assert_allclose(sequence[real], want_sequence[real], atol=1e-5, rtol=0)
    np.testing.assert_allclose(pooled, want_pooled, atol=1e-5, rtol=0)


# --- a torch.save zip file written without PyTorch, following its documented layout -------------


def _write_torch_zip(path, tensors):
    """The query weight is stored transposed (strided) and the key weight shares one storage with
    the value weight (at an offset), as torch allows."""
    views = {}
    query, key, value = (f"encoder.layer.0.attention.self.{n}.weight" for n in ("query", "key", "value"))
    for index, (name, array) in enumerate(tensors.items()):
        if name == key:
            continue
        if name == query:  # stored as the transpose, read back through strides
            storage = torch_zip.Storage(index, np.ascontiguousarray(array.T))
            views[name] = torch_zip.View(storage, 0, array.shape, (1, array.shape[0]))
        elif name == value:  # key and value in one storage, value at an offset
            storage = torch_zip.Storage(index, np.concatenate([tensors[key].reshape(-1), array.reshape(-1)]))
            views[key] = torch_zip.View(storage, 0, array.shape, (array.shape[1], 1))
            views[name] = torch_zip.View(storage, array.size, array.shape, (array.shape[1], 1))
        else:
            views[name] = torch_zip.contiguous(index, array)
    torch_zip.write_torch_zip(path, views)


# --- Google's original TF BERT naming -------------------------------------------------------------


def _google_name(hf_name):
    name = re.sub(r"^encoder\.layer\.(\d+)\.", r"encoder/layer_\1/", hf_name)
    name = "bert/" + name.replace(".", "/")
    if "embeddings/" in name and not name.startswith("bert/embeddings/LayerNorm"):
        return name.rsplit("/", 1)[0], False  # bert/embeddings/word_embeddings
    if "LayerNorm" in name:
        return name.replace("/weight", "/gamma").replace("/bias", "/beta"), False
    return name.replace("/weight", "/kernel"), name.endswith("/weight")


def _write_tf_checkpoint(folder, extra):
    import tensorflow as tf

    folder.mkdir(parents=True)
    (folder / "bert_config.json").write_text(json.dumps(ref.hf_config()))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    names, values = [], []
    for hf_name, array in TENSORS.items():
        name, transpose = _google_name(hf_name)
        names.append(name)
        values.append(array.T if transpose else array)
    for name, array in extra.items():
        names.append(name)
        values.append(array)
    tf.raw_ops.SaveV2(
        prefix=str(folder / "bert_model.ckpt"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(v) for v in values],
    )


# --- tests ------------------------------------------------------------------------------------------


def test_safetensors_conversion_matches_numpy_reference(tmp_path):
    accounting = conversion.convert(_hf_folder(tmp_path / "hf"), tmp_path / "model")
    assert accounting.count("set") == len(TENSORS) and not accounting.failures
    _check_against_reference(tmp_path / "model")


def test_pytorch_bin_read_without_torch_gives_the_same_weights(tmp_path):
    from nlpkit.models.checkpoint_import import read_pytorch_bin

    folder = _hf_folder(tmp_path / "hf", weights="bin")
    read = read_pytorch_bin(folder / "pytorch_model.bin")
    assert sorted(read) == sorted(TENSORS)
    for name, tensor in read.items():
        np.testing.assert_array_equal(tensor.value, TENSORS[name])
    conversion.convert(folder, tmp_path / "model")
    _check_against_reference(tmp_path / "model")


def test_pickle_naming_other_globals_is_refused(tmp_path):
    from nlpkit.models.checkpoint_import import read_pytorch_bin

    class Payload:
        def __reduce__(self):
            import os

            return os.getcwd, ()

    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"x": Payload()}, protocol=2))
    with pytest.raises(NlpkitError, match="refusing to unpickle 'posix.getcwd'"):
        read_pytorch_bin(path)


def test_google_tf_checkpoint_needs_its_head_allowed(tmp_path):
    head = {"cls/predictions/output_bias": np.zeros(40, "float32")}
    optimizer = {"global_step": np.array(7, "int64"), "bert/pooler/dense/kernel/adam_m": np.zeros((16, 16), "float32")}
    _write_tf_checkpoint(tmp_path / "google", {**head, **optimizer})
    with pytest.raises(NlpkitError, match="1 unused source tensor.*cls/predictions/output_bias") as caught:
        conversion.convert(tmp_path / "google", tmp_path / "model")
    assert [row.source for row in caught.value.accounting.failures] == ["cls/predictions/output_bias"]
    assert not (tmp_path / "model").exists()  # nothing half-written

    accounting = conversion.convert(tmp_path / "google", tmp_path / "model", allow_unused=["cls/*"])
    statuses = {row.source: row.status for row in accounting.rows}
    assert statuses["cls/predictions/output_bias"] == "unused (allowed)"
    assert statuses["global_step"] == statuses["bert/pooler/dense/kernel/adam_m"] == "skipped: optimizer state"
    assert statuses["bert/encoder/layer_1/intermediate/dense/kernel"] == "set"
    _check_against_reference(tmp_path / "model")


def test_missing_tensor_fails_unless_allowed(tmp_path):
    partial = {k: v for k, v in TENSORS.items() if not k.startswith("pooler.")}
    folder = _hf_folder(tmp_path / "hf", tensors=partial)
    with pytest.raises(NlpkitError, match="2 model variable\\(s\\) not set.*missing 'pooler.dense"):
        conversion.convert(folder, tmp_path / "model")
    accounting = conversion.convert(folder, tmp_path / "model", allow_missing=["pooler.*"])
    assert accounting.count("missing (allowed)") == 2


def test_extra_tensor_fails_unless_allowed(tmp_path):
    folder = _hf_folder(tmp_path / "hf", tensors={**TENSORS, "extra.weight": np.ones(3, "float32")})
    with pytest.raises(NlpkitError, match="unused 'extra.weight'"):
        conversion.convert(folder, tmp_path / "model")
    conversion.convert(folder, tmp_path / "model", allow_unused=["extra.*"])


def test_shape_mismatch_names_the_tensor(tmp_path):
    bad = {**TENSORS, "pooler.dense.bias": np.zeros(5, "float32")}
    with pytest.raises(NlpkitError, match=r"pooler.dense.bias has shape \(5,\)"):
        conversion.convert(_hf_folder(tmp_path / "hf", tensors=bad), tmp_path / "model")


def test_pretraining_checkpoint_names_with_bert_prefix(tmp_path):
    prefixed = {f"bert.{k}": v for k, v in TENSORS.items()}
    prefixed["cls.predictions.bias"] = np.zeros(40, "float32")
    accounting = conversion.convert(_hf_folder(tmp_path / "hf", tensors=prefixed), tmp_path / "model", allow_unused=["cls.*"])
    assert accounting.count("set") == len(TENSORS)
    _check_against_reference(tmp_path / "model")


def test_export_back_to_hf_is_lossless(tmp_path):
    conversion.convert(_hf_folder(tmp_path / "hf"), tmp_path / "model")
    conversion.export_hf(tmp_path / "model", tmp_path / "back")
    exported = load_file(tmp_path / "back" / "model.safetensors")
    assert sorted(exported) == sorted(TENSORS)
    for name, array in TENSORS.items():
        np.testing.assert_array_equal(exported[name], array, err_msg=name)
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    for key, value in ref.hf_config().items():
        assert config[key] == value, key
    assert (tmp_path / "back" / "vocab.txt").read_text() == (tmp_path / "hf" / "vocab.txt").read_text()
    # ... and the exported folder converts again to the same model.
    conversion.convert(tmp_path / "back", tmp_path / "again")
    np.testing.assert_array_equal(_run(tmp_path / "again")[0], _run(tmp_path / "model")[0])


def test_unsupported_configs_are_refused(tmp_path):
    with pytest.raises(NlpkitError, match="hidden_act 'gelu_fast'"):
        conversion.convert(_hf_folder(tmp_path / "a", config={**ref.hf_config(), "hidden_act": "gelu_fast"}), tmp_path / "m")
    with pytest.raises(NlpkitError, match="no model.safetensors"):
        conversion.convert(tmp_path, tmp_path / "m")
