"""Magma's Hugging Face checkpoint: the full Magma-8B layout proven with `jax.eval_shape` against a hand-written spec,
sizes read from the headers, sharded files, the older layer-scale name, and one error naming the file and field for
each way a checkpoint can be wrong."""

from __future__ import annotations

import json
import math
import pathlib

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import shared_path
from data_helpers import writable_copy
from magma_helpers import magma_dir, magma_model
from multinet_jax import weights
from multinet_jax.models import magma, magma_checkpoint, magma_inputs
from multinet_jax.weights.trees import CheckpointError

SPEC = pathlib.Path(__file__).parent / "param_specs" / "magma_8b.tsv"


def _spec() -> dict[str, tuple[int, ...]]:
    lines = [line for line in SPEC.read_text().splitlines() if not line.startswith("#")][1:]
    return {name: tuple(int(dim) for dim in shape.split(",")) for name, shape, _, _ in (line.split("\t") for line in lines)}


def copy_model(tmp_path: pathlib.Path) -> pathlib.Path:
    return writable_copy(magma_dir(), tmp_path / "magma")


def _edit_json(path: pathlib.Path, edit) -> None:
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def _edit_tensors(directory: pathlib.Path, edit) -> None:
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors")


def test_full_size_magma_8b_layout_with_eval_shape(tmp_path):
    """Every tensor of Magma-8B's spec read, each mapped shape fitting the Flax tree, ~8.9B parameters; the sizes come
    from config.json plus the headers' ConvNeXt exactly as the suite's named config has them."""
    specs = _spec()
    config = magma_checkpoint.named_config("magma_8b", "bfloat16")
    (tmp_path / "config.json").write_text(json.dumps(magma_checkpoint.NAMED_CONFIGS["magma_8b"]))
    assert magma_checkpoint.read_config(tmp_path, specs, "bfloat16") == config  # the ConvNeXt from the shapes alone
    assert magma_checkpoint.tensor_shapes(config) == specs
    expected = weights.flatten_params(magma.param_shapes(config))  # jax.eval_shape: no memory
    sources = magma_checkpoint.tensor_sources(config, magma_checkpoint.layer_scale_name(specs))
    assert set(sources) == set(expected)
    read = {name for source in sources.values() for layer in source.names for name in layer}
    assert read == set(specs) and not magma_checkpoint.unused_tensors(specs)
    for path, source in sources.items():
        # Zero-stride views: the transforms see full-size shapes without the memory.
        layer = source.transform(*(np.broadcast_to(np.zeros((), np.uint8), specs[name]) for name in source.names[0]))
        want = expected[path].shape
        assert (len(source.names), *layer.shape) == want if source.stacked else layer.shape == want, path
    total = sum(math.prod(leaf.shape) for leaf in expected.values())
    assert total == sum(math.prod(shape) for shape in specs.values())
    assert 8.8e9 < total < 9.0e9 and {leaf.dtype for leaf in expected.values()} == {np.dtype("bfloat16")}


def test_fixture_config_is_the_named_tiny_config():
    assert magma_model().config == magma_checkpoint.named_config("magma_tiny")


def test_sharded_files_and_the_older_layer_scale_name_load_the_same_parameters(tmp_path):
    target = copy_model(tmp_path)
    tensors = load_file(target / "model.safetensors")
    renamed = {name.removesuffix(".gamma") + ".weight" if name.endswith(".gamma") else name: value
               for name, value in tensors.items()}  # what transformers < 4.49 wrote
    (target / "model.safetensors").unlink()
    weights.safetensors.save_checkpoint(renamed, target, num_shards=3)
    for name in ("modeling_magma.py", "image_tower_magma.py"):
        (target / name).write_text("raise SystemExit('the trust_remote_code files must not run')\n")
    loaded = magma.load(target)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded.params),
                 jax.tree.map(np.asarray, magma_model().params))


@pytest.mark.parametrize(("file", "edit", "message"), [
    ("config.json", lambda raw: raw.pop("vision_config"), r"config.json: missing field 'vision_config'"),
    ("config.json", lambda raw: raw["vision_config"].update(mm_projector_type="linear"),
     r"config.json: vision_config.mm_projector_type: 'linear'; only 'mlp2x_gelu'"),
    # timm's convnext_large normalizes with eps 1e-6, not convnext_xxlarge's 1e-5; other names Magma cannot build
    ("config.json", lambda raw: raw["vision_config"].update(vision_backbone="convnextlarge"),
     r"config.json: vision_config.vision_backbone: 'convnextlarge'; only \['convnextxxlarge'\] \(Magma-8B's\)"),
    ("config.json", lambda raw: raw["vision_config"].update(vision_backbone="convnext_base_w"),
     r"config.json: vision_config.vision_backbone: 'convnext_base_w'; only"),
    ("config.json", lambda raw: raw["vision_config"].update(mm_hidden_size=32),
     r"config.json: vision_config.mm_hidden_size: 32, but the checkpoint's ConvNeXt ends with width 48"),
    ("config.json", lambda raw: raw["text_config"].update(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
     r"config.json: text_config: rope_scaling .* is not supported"),
    ("config.json", lambda raw: raw["text_config"].pop("vocab_size"), r"config.json: text_config: missing field 'vocab_size'"),
    # read by int() / float() these would load a model of 3 layers, or of the text's number, silently
    ("config.json", lambda raw: raw["text_config"].update(num_hidden_layers=3.7),
     r"config.json: text_config.num_hidden_layers: expected an integer in \[1, ...\], got 3.7"),
    ("config.json", lambda raw: raw["text_config"].update(rms_norm_eps="1e-6"),
     r"config.json: text_config.rms_norm_eps: expected a positive number, got '1e-6'"),
    ("config.json", lambda raw: raw["text_config"].update(rope_theta=-500000.0),
     r"config.json: text_config.rope_theta: expected a positive number, got -500000.0"),
    ("config.json", lambda raw: raw["vision_config"].update(img_size=100),
     r"config.json: vision_config.img_size: 100; expected a positive multiple of the ConvNeXt's stride 32"),
    ("config.json", lambda raw: raw.update(image_token_index=5000), r"config.json: image_token_index: 5000 is not an id"),
    ("config.json", lambda raw: raw.update(tokenizer_vocab_size=999),
     r"config.json: tokenizer_vocab_size: 999, but the tokenizer's base vocabulary has 1000 tokens"),
    ("preprocessor_config.json", lambda raw: raw.update(anyres_strategy="global"),
     r"preprocessor_config.json: anyres_strategy: only 'crop'"),
    ("preprocessor_config.json", lambda raw: raw.update(base_img_size=100),
     r"preprocessor_config.json: base_img_size must be a multiple of 32"),
    ("tokenizer_config.json", lambda raw: raw.pop("chat_template"),
     r"tokenizer_config.json: chat_template: only Meta-Llama-3-Instruct's template \(Magma-8B's\) is rendered here"),
    # Llama-3.1's: the same markers, with a system header holding the knowledge date, which chat_text never writes.
    ("tokenizer_config.json", lambda raw: raw.update(chat_template=raw["chat_template"].replace(
        "{{ content }}", "{% if loop.index0 == 0 %}{{ bos_token + '<|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023<|eot_id|>' }}{% endif %}{{ content }}")),
     r"tokenizer_config.json: chat_template: only Meta-Llama-3-Instruct's template"),
])
def test_bad_config_fields_are_named(tmp_path, file, edit, message):
    target = copy_model(tmp_path)
    _edit_json(target / file, edit)
    with pytest.raises(CheckpointError, match=message):
        magma.load(target)


def test_malformed_config_json_is_named(tmp_path):
    target = copy_model(tmp_path)
    (target / "config.json").write_text('{"model_type": "magma",')
    with pytest.raises(CheckpointError, match=r"config.json: unreadable JSON"):
        magma.load(target)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda tensors: tensors.pop("multi_modal_projector.row_seperator"),
     r"missing \['multi_modal_projector.row_seperator'\], unexpected \[\]"),
    (lambda tensors: tensors.update({"multi_modal_projector.proj.0.bias": np.zeros(3, np.float32)}),
     r"projector/fc1/bias: expected shape \(64,\), the checkpoint gives \(3,\)"),
    (lambda tensors: tensors.update({"vision_tower.clip_vision_model.trunk.stages.2.blocks.5.conv_dw.weight":
                                     np.zeros((24, 1, 7, 7), np.float32)}),
     r"ConvNeXt stage 2: blocks \[0, 1, 5\] must be numbered from 0"),
    (lambda tensors: tensors["language_model.model.layers.1.mlp.up_proj.weight"].__setitem__((3, 4), np.nan),
     r"language_model.model.layers.1.mlp.up_proj.weight.*(NaN|non-finite)"),
])
def test_bad_tensors_are_named(tmp_path, edit, message):
    target = copy_model(tmp_path)
    _edit_tensors(target, edit)
    with pytest.raises(CheckpointError, match=message):
        magma.load(target)


def test_magma_8b_resolves_offline_from_the_hub_cache_and_loads(tmp_path, monkeypatch):
    """`magma-8b` names microsoft/Magma-8B; a hub cache holding a Magma in its layout (the fixture's files) resolves
    offline and loads the same parameters."""
    from test_assets import build_hub_cache

    from multinet_jax import assets

    assert assets.lookup("magma-8b").url == "hf://microsoft/Magma-8B"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = build_hub_cache(tmp_path / "hub", pathlib.Path(magma_dir()), "microsoft/Magma-8B")
    assert assets.resolve("magma-8b", offline=True) == snapshot
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, magma.load(snapshot).params),
                 jax.tree.map(np.asarray, magma_model().params))


def test_demo_checkpoint_has_the_published_layout_and_runs(tmp_path):
    """The demo's random tiny Magma (no ../shared needed): the tiny config's tensors, a tokenizer laid out as
    Magma-8B's (two BOS, `<image>` after the special block), and batched actions and text from images of any size."""
    from multinet_jax import demo

    directory = demo.build_checkpoint("magma", tmp_path / "magma_tiny")
    model = magma.load(directory)
    tiny = magma_checkpoint.named_config("magma_tiny")
    assert (model.config.vision, model.config.llm, model.config.vocab_size) == (tiny.vision, tiny.llm, tiny.vocab_size)
    ids = model.tokenizer.encode(model.prompt(magma_inputs.action_prompt("open the drawer")))
    assert ids[:2] == [model.tokenizer.bos_id] * 2 and model.config.image_token_id in ids
    assert model.tokenizer.vocab_size < model.config.image_token_id < model.config.vocab_size
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (120, 160, 3), np.uint8), rng.integers(0, 256, (64, 200, 3), np.uint8)]
    actions = model.predict_action(images, ["open the drawer", "pick up the can"], "google_robot")
    assert actions.shape == (2, 7) and np.isfinite(actions).all()
    for row in (1, 0):  # each row as it is alone
        np.testing.assert_array_equal(model.predict_action(images[row:row + 1], [["open the drawer", "pick up the can"][row]],
                                                           "google_robot")[0], actions[row])
    assert len(model.generate_text(images, ["What is here?", "Describe it."], max_decoding_steps=4)) == 2


def test_the_template_chat_text_renders_is_the_reference_fixtures():
    """The template the loader accepts (the one `chat_text` implements) is the one of the reference fixture
    (`../shared/magma_reference`, whose generator gave it Meta-Llama-3-Instruct's, as Magma-8B ships; the published
    file itself is not here to compare with)."""
    published = json.loads(shared_path("magma_reference", "tokenizer_config.json").read_text())["chat_template"]
    assert magma_inputs.LLAMA3_CHAT_TEMPLATE == published
