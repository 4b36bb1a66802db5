"""Hugging Face checkpoints: OpenVLA's layout recognized, sharded files + index, the full 7B layout proven with
`jax.eval_shape`, Python files ignored, and an error naming the file for each way a checkpoint can be wrong."""

from __future__ import annotations

import json
import math
import pathlib
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import shared_path
from openvla_helpers import openvla_dir, openvla_model
from multinet_jax import weights
from multinet_jax.models import load_model, openvla, openvla_checkpoint, registry


def copy_model(tmp_path: pathlib.Path) -> pathlib.Path:
    target = tmp_path / "openvla"
    shutil.copytree(openvla_dir(), target)
    return target


def write_sharded(directory: pathlib.Path, shards: int = 3) -> None:
    """Rewrite `model.safetensors` as HF's sharded layout: model-0000N-of-0000M.safetensors + index."""
    tensors = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    weights.safetensors.save_checkpoint(tensors, directory, num_shards=shards)


def test_layout_is_recognized_and_python_files_are_never_read(tmp_path):
    target = copy_model(tmp_path)
    assert registry.format_of(str(target)).name == "huggingface_openvla"
    for name in ("modeling_prismatic.py", "processing_prismatic.py", "configuration_prismatic.py"):
        (target / name).write_text("raise SystemExit('the trust_remote_code files must not run')\n")
    write_sharded(target)
    model = load_model(target)
    reference = openvla_model()
    assert model.family == "openvla"
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, model.params),
                 jax.tree.map(np.asarray, reference.params))


def test_full_size_openvla_7b_layout_with_eval_shape(tmp_path):
    """The 982 tensors of openvla-7b: every one mapped or known unused, and each mapped shape fits the Flax tree."""
    specs = {}
    for line in shared_path("openvla_reference", "param_specs_openvla_7b.tsv").read_text().splitlines()[1:]:
        name, shape, _, _ = line.split("\t")
        specs[name] = tuple(int(dim) for dim in shape.split(","))
    assert len(specs) == 982
    raw = json.loads((pathlib.Path(openvla_dir()) / "config.json").read_text())
    raw.pop("tiny_timm_overrides")  # the real checkpoint's config: backbone sizes from the timm ids
    raw["text_config"] = {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = openvla_checkpoint.read_config(tmp_path, "bfloat16")
    assert config == openvla_checkpoint.named_config("openvla_7b", "bfloat16")  # what the benchmark suite builds
    assert openvla_checkpoint.tensor_shapes(config) == specs  # what the demo and benchmarks write
    expected = weights.flatten_params(openvla.param_shapes(config))  # jax.eval_shape: no memory
    sources = openvla_checkpoint.tensor_sources(config)
    assert set(sources) == set(expected)
    read = {name for source in sources.values() for layer in source.names for name in layer}
    unused = openvla_checkpoint.unused_tensors(config, specs)
    assert read | unused == set(specs) and not read & unused
    for path, source in sources.items():
        # Zero-stride views: the transforms see full-size shapes without the memory.
        layer = source.transform(*(np.broadcast_to(np.zeros((), np.uint8), specs[name]) for name in source.names[0]))
        want = expected[path].shape
        assert (len(source.names), *layer.shape) == want if source.stacked else layer.shape == want, path
    total = sum(math.prod(leaf.shape) for leaf in expected.values())
    assert total + sum(math.prod(specs[name]) for name in unused) == sum(math.prod(s) for s in specs.values())
    assert 7.4e9 < total < 7.6e9 and {leaf.dtype for leaf in expected.values()} == {np.dtype("bfloat16")}


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    target = copy_model(tmp_path)
    tensors = load_file(target / "model.safetensors")
    tensors["extra.weight"] = np.zeros(2, np.float32)
    del tensors["projector.fc3.bias"]
    save_file(tensors, target / "model.safetensors")
    with pytest.raises(weights.CheckpointError, match=r"missing \['projector.fc3.bias'\], unexpected \['extra.weight'\]"):
        load_model(target)


def test_wrong_tensor_shape_is_named(tmp_path):
    target = copy_model(tmp_path)
    tensors = load_file(target / "model.safetensors")
    tensors["projector.fc3.bias"] = np.zeros(3, np.float32)
    save_file(tensors, target / "model.safetensors")
    with pytest.raises(weights.CheckpointError, match=r"projector/fc3/bias: expected shape \(64,\), the checkpoint gives \(3,\)"):
        load_model(target)


def test_truncated_file_and_missing_shard_are_named(tmp_path):
    target = copy_model(tmp_path)
    data = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(weights.CheckpointError, match=r"model.safetensors: unreadable safetensors header"):
        load_model(target)
    (target / "model.safetensors").write_bytes(data)
    write_sharded(target)
    (target / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(weights.CheckpointError, match=r"index.json: names shard files that are missing: \['model-00002-of-00003"):
        load_model(target)


@pytest.mark.parametrize(("file", "edit", "message"), [
    ("config.json", lambda raw: raw.pop("timm_model_ids"), r"config.json: missing field 'timm_model_ids'"),
    ("config.json", lambda raw: raw.update(timm_model_ids=["vit_base_patch16_224", "vit_so400m_patch14_siglip_224"]),
     r"config.json: timm_model_ids: 'vit_base_patch16_224' is not one of OpenVLA's ViTs"),
    # Prismatic hands them to timm as the ViTs' activations (openvla-7b's are null)
    ("config.json", lambda raw: raw.update(timm_override_act_layers=["quick_gelu", "quick_gelu"]),
     r"config.json: timm_override_act_layers: \['quick_gelu', 'quick_gelu'\]; only the ViTs' own activations"),
    ("preprocessor_config.json", lambda raw: raw.update(image_resize_strategy="letterbox"),
     r"preprocessor_config.json: image_resize_strategy: only 'resize-naive'"),
    ("preprocessor_config.json", lambda raw: raw.pop("tvf_normalize_params"),
     r"preprocessor_config.json: tvf_resize_params/tvf_normalize_params: missing field"),
])
def test_bad_config_fields_are_named(tmp_path, file, edit, message):
    target = copy_model(tmp_path)
    raw = json.loads((target / file).read_text())
    edit(raw)
    (target / file).write_text(json.dumps(raw))
    with pytest.raises(weights.CheckpointError, match=message):
        load_model(target)


def test_no_weights_and_bad_tokenizer_are_named(tmp_path):
    target = copy_model(tmp_path)
    tokenizer = (target / "tokenizer.model").read_bytes()
    (target / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(weights.CheckpointError, match=r"tokenizer.model: not a SentencePiece model"):
        load_model(target)
    (target / "tokenizer.model").write_bytes(tokenizer)
    (target / "model.safetensors").unlink()
    with pytest.raises(weights.CheckpointError, match=r"holds neither model.safetensors nor model.safetensors.index.json"):
        load_model(target)
