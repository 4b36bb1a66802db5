"""SmolVLA's checkpoint layout: the published lerobot/smolvla_base's 500 tensors (`checkpoints/smolvla_base_tensors.tsv`)
against the full-size config read from the published config.json files (through `jax.eval_shape`: no memory), the
derived sizes, and the processor statistics and tokenizer files of the fixture's layout."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

from smolvla_helpers import smolvla_dir
from multinet_jax.models import smolvla, smolvla_checkpoint
from multinet_jax.weights import flatten_params
from multinet_jax.weights.trees import CheckpointError

SPEC = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "smolvla_base_tensors.tsv"


def _published_spec() -> dict[str, tuple[tuple[int, ...], str]]:
    specs = {}
    for line in SPEC.read_text().splitlines()[1:]:
        name, shape, dtype, _ = line.split("\t")
        specs[name] = (tuple(int(dim) for dim in shape.split(",")), dtype)
    return specs


def _write_published_layout(directory: pathlib.Path) -> pathlib.Path:
    """lerobot/smolvla_base's config.json fields and SmolVLM2-500M's config.json, as files (the backbone by its
    absolute path, as LeRobot writes a local one)."""
    backbone = directory / "SmolVLM2-500M-Video-Instruct"
    backbone.mkdir(parents=True)
    (backbone / "config.json").write_text(json.dumps(smolvla_checkpoint.SMOLVLM2_500M))
    policy = directory / "smolvla_base"
    policy.mkdir()
    (policy / "config.json").write_text(json.dumps({**smolvla_checkpoint.SMOLVLA_BASE, "vlm_model_name": str(backbone)}))
    return policy


def test_full_size_smolvla_base_layout_with_eval_shape(tmp_path):
    """Every published tensor is read, each into a Flax parameter of the shape the transform gives, and the tree
    holds nothing else: 450,046,176 parameters."""
    specs = _published_spec()
    assert len(specs) == 500
    config = smolvla_checkpoint.read_config(_write_published_layout(tmp_path), "bfloat16")
    assert config == smolvla_checkpoint.named_config("smolvla_base", "bfloat16")  # what the benchmark suite builds
    assert (config.vlm.width, config.vlm.depth, config.expert.width, config.expert.mlp_dim) == (960, 16, 720, 2048)
    assert (config.vision.depth, config.vision.mlp_dim, config.image_tokens) == (12, 3072, 64)
    assert smolvla_checkpoint.tensor_shapes(config) == {name: shape for name, (shape, _) in specs.items()}
    expected = flatten_params(smolvla.param_shapes(config))  # jax.eval_shape
    sources = smolvla_checkpoint.tensor_sources(config)
    assert set(sources) == set(expected)
    read = [name for source in sources.values() for layer in source.names for name in layer]
    assert sorted(read) == sorted(specs)  # each tensor read exactly once
    for path, source in sources.items():
        # Zero-stride views: the transforms see full-size shapes without the memory.
        layers = [source.transform(*(np.broadcast_to(np.zeros((), np.uint8), specs[name][0]) for name in names))
                  for names in source.names]
        shape = (len(layers), *layers[0].shape) if source.stacked else layers[0].shape
        assert shape == expected[path].shape, path
    total = sum(math.prod(leaf.shape) for leaf in expected.values())
    assert total == sum(math.prod(shape) for shape, _ in specs.values()) == 450_046_176
    assert {leaf.dtype for leaf in expected.values()} == {np.dtype("bfloat16")}


def test_the_expert_alternates_self_and_cross_attention_layers():
    config = smolvla_checkpoint.named_config("smolvla_base")
    assert [config.layer_kind(index) for index in range(4)] == ["self_attn", "cross_attn", "self_attn", "cross_attn"]
    sources = smolvla_checkpoint.tensor_sources(config)
    cross_k = sources["expert/layers/cross_attn_0/attn/kv_einsum/w"].names
    assert [names[0] for names in cross_k][:2] == [f"model.vlm_with_expert.lm_expert.layers.{i}.self_attn.k_proj.weight"
                                                  for i in (1, 3)]
    specs = _published_spec()  # the published cross-attention layers are the odd ones: their k/v read 320 channels
    assert specs["model.vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight"][0] == (320, 320)
    assert specs["model.vlm_with_expert.lm_expert.layers.2.self_attn.k_proj.weight"][0] == (320, 720)
    assert smolvla_checkpoint.intermediate_size(720) == 2048


def test_fixture_layout_statistics_and_tokenizer():
    directory = smolvla_dir()
    assert smolvla_checkpoint.is_smolvla(directory)
    config = smolvla_checkpoint.read_config(directory)
    assert config.cameras == ("observation.images.camera1", "observation.images.camera2")
    assert (config.state_dim, config.action_dim, config.pad_language_to) == (6, 6, "longest")
    stats = smolvla_checkpoint.read_norm_stats(directory, config)
    assert set(stats) == {"state", "actions"} and stats["actions"]["std"].shape == (6,)
    backbone = smolvla_checkpoint.backbone_of(directory)
    tokenizer = smolvla_checkpoint.SmolVLATokenizer(backbone, 48, "max_length")
    tokens, mask = tokenizer.tokenize_tasks(["pick up the red cube"])
    assert tokens.shape == (1, 48) and mask.sum() == len(tokenizer.encode("pick up the red cube\n"))
    assert (tokens[0, ~mask[0]] == tokenizer.pad_id).all() and tokenizer.decode(tokens[0, mask[0]]) == "pick up the red cube\n"
    short = smolvla_checkpoint.SmolVLATokenizer(backbone, 3, "longest")  # the fixture keeps SmolVLM2's left truncation
    assert short.truncation_side == "left" and short.encode("pick up the red cube\n") == tokenizer.encode("pick up the red cube\n")[-3:]


def test_a_negative_action_std_in_the_unnormalizers_statistics_is_refused_naming_the_file(tmp_path):
    """LeRobot's unnormalizer multiplies by the std: a negative one would mirror that action dim with nothing failing."""
    import shutil

    from safetensors.numpy import load_file, save_file

    policy = shutil.copytree(smolvla_dir(), tmp_path / "policy")
    stats_file = policy / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    tensors = load_file(stats_file)
    tensors["action.std"] = tensors["action.std"].copy()
    tensors["action.std"][4] = -abs(tensors["action.std"][4])
    save_file(tensors, stats_file)
    config = smolvla_checkpoint.read_config(smolvla_dir())  # the copy's backbone is not beside it
    with pytest.raises(CheckpointError, match=rf"^{stats_file}: action: 'std' is negative in 1 of 6 dims, first dim 4: -"):
        smolvla_checkpoint.read_norm_stats(policy, config)


def test_unsupported_policy_settings_are_refused_naming_the_field():
    policy, backbone = smolvla_checkpoint.NAMED_CONFIGS["smolvla_base"]
    cases = {"attention_mode": "self_attn", "num_expert_layers": 8, "self_attn_every_n_layers": 3,
             "resize_imgs_with_padding": [384, 384], "add_image_special_tokens": True, "adapt_to_pi_aloha": True}
    for field, value in cases.items():
        with pytest.raises(CheckpointError, match=field):
            smolvla_checkpoint.parse_config({**policy, field: value}, backbone, "float32", pathlib.Path("config.json"),
                                            pathlib.Path("backbone/config.json"))


@pytest.mark.parametrize(("key", "value"), [("max_length", 8), ("padding", "max_length"), ("padding_side", "left"),
                                            ("tokenizer_name", "HuggingFaceTB/SmolLM2-135M")])
def test_a_tokenizer_step_other_than_config_json_is_refused(tmp_path, key, value):
    """LeRobot >= 0.4 tokenizes with the preprocessor's tokenizer step: settings other than config.json's would cut
    or pad the task otherwise than this package does."""
    import shutil

    policy = shutil.copytree(smolvla_dir(), tmp_path / "policy")
    path = policy / smolvla_checkpoint.PREPROCESSOR_FILE
    raw = json.loads(path.read_text())
    step = next(step for step in raw["steps"] if step["registry_name"] == "tokenizer_processor")
    step["config"][key] = value
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=rf"^{path}: tokenizer_processor.{key}={value!r}, but config.json tokenizes with "):
        smolvla_checkpoint.read_config(policy, backbone=smolvla_checkpoint.backbone_of(smolvla_dir()))


def test_a_backbone_named_by_its_hub_id_resolves_offline_from_the_hub_cache(tmp_path, monkeypatch):
    """lerobot/smolvla_base names its backbone `HuggingFaceTB/SmolVLM2-500M-Video-Instruct`: the named asset (config and
    tokenizer files) is read from the hub's cache; missing there, offline, the error names the fetch command."""
    from test_assets import build_hub_cache

    repo = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    policy = tmp_path / "policy"
    policy.mkdir()
    raw = json.loads((pathlib.Path(smolvla_dir()) / "config.json").read_text())
    (policy / "config.json").write_text(json.dumps({**raw, "vlm_model_name": repo}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(Exception, match=f"multinet-jax fetch {repo}"):
        smolvla_checkpoint.backbone_of(policy)
    snapshot = build_hub_cache(tmp_path / "hub", pathlib.Path(smolvla_dir()).parent / "tiny_smolvlm2", repo)
    assert smolvla_checkpoint.backbone_of(policy) == snapshot
    assert smolvla_checkpoint.read_config(policy) == smolvla_checkpoint.read_config(smolvla_dir())


def test_written_tiny_checkpoint_has_the_fixtures_tensor_layout(tmp_path):
    """The demo's writer: the tensors LeRobot saved for the same sizes, a backbone folder the loader resolves beside
    the policy, statistics the loader reads back, and a tokenizer with SmolVLM2's special-token layout."""
    from safetensors import safe_open

    policy = smolvla_checkpoint.write_checkpoint(tmp_path / "policy", "smolvla_tiny", seed=3,
                                                 stats={"observation.state": {"mean": np.arange(6.0), "std": np.ones(6)},
                                                        "action": {"mean": np.zeros(6), "std": np.full(6, 2.0)}})
    with safe_open(pathlib.Path(smolvla_dir()) / "model.safetensors", "numpy") as reference:
        fixture = {name: tuple(reference.get_slice(name).get_shape()) for name in reference.keys()}
    with safe_open(policy / "model.safetensors", "numpy") as written:
        assert {name: tuple(written.get_slice(name).get_shape()) for name in written.keys()} == fixture
    config = smolvla_checkpoint.read_config(policy)
    assert config == smolvla_checkpoint.named_config("smolvla_tiny")
    stats = smolvla_checkpoint.read_norm_stats(policy, config)
    np.testing.assert_array_equal(stats["state"]["mean"], np.arange(6.0))
    np.testing.assert_array_equal(stats["actions"]["std"], np.full(6, 2.0))
    tokenizer = smolvla_checkpoint.SmolVLATokenizer(smolvla_checkpoint.backbone_of(policy), 48, "longest")
    assert tokenizer.tokenizer.get_vocab_size() == config.vocab_size == 512
    assert tokenizer.tokenizer.token_to_id("<image>") == 422 and tokenizer.pad_id == 2  # as in SmolVLM2's layout


def _edited_step(policy: pathlib.Path, file: str, registry_name: str, edit) -> pathlib.Path:
    path = policy / file
    raw = json.loads(path.read_text())
    edit(raw["steps"], next(step for step in raw["steps"] if step["registry_name"] == registry_name))
    path.write_text(json.dumps(raw))
    return path


def _visual_mean_std(steps, step):
    step["config"]["norm_map"]["VISUAL"] = "MEAN_STD"


def _observation_keys(steps, step):
    step["config"]["normalize_observation_keys"] = ["observation.images.camera1"]


@pytest.mark.parametrize(("file", "registry_name", "edit", "message"), [
    (smolvla_checkpoint.PREPROCESSOR_FILE, "device_processor",
     lambda steps, step: steps.insert(0, {"registry_name": "image_crop_processor", "config": {"size": [64, 64]}}),
     "step 'image_crop_processor' is not one of LeRobot's SmolVLA steps"),
    (smolvla_checkpoint.POSTPROCESSOR_FILE, "device_processor",
     lambda steps, step: steps.append({"registry_name": "action_clip_processor", "config": {}}),
     "step 'action_clip_processor' is not one of LeRobot's SmolVLA steps"),
    (smolvla_checkpoint.PREPROCESSOR_FILE, "normalizer_processor", _visual_mean_std,
     "norm_map.VISUAL='MEAN_STD': only IDENTITY"),
    (smolvla_checkpoint.POSTPROCESSOR_FILE, "unnormalizer_processor", _visual_mean_std,
     "norm_map.VISUAL='MEAN_STD': only IDENTITY"),
    (smolvla_checkpoint.PREPROCESSOR_FILE, "normalizer_processor", _observation_keys,
     r"normalize_observation_keys=\['observation.images.camera1'\]: only null"),
])
def test_processor_steps_this_package_does_not_reproduce_are_refused(tmp_path, file, registry_name, edit, message):
    """LeRobot runs every step of the pipeline files: one that changes the inputs or outputs in a way not reproduced
    here (another step, images normalized with statistics, a normalizer limited to some keys) would be skipped
    silently, so the checkpoint is refused before its weights load."""
    import shutil

    policy = shutil.copytree(smolvla_dir(), tmp_path / "policy")
    path = _edited_step(policy, file, registry_name, edit)
    with pytest.raises(CheckpointError, match=rf"^{path}: {message}"):
        smolvla_checkpoint.read_config(policy, backbone=smolvla_checkpoint.backbone_of(smolvla_dir()))


@pytest.mark.parametrize("edit", [
    lambda steps, step: step["config"]["norm_map"].update(ACTION="IDENTITY"),
    lambda steps, step: step["config"]["features"].pop("action"),
])
def test_actions_the_unnormalizer_leaves_as_they_are_are_refused(tmp_path, edit):
    """Such a policy emits actions in the data's units; read as normalized, they would be unnormalized again (with
    the split's statistics under --unnormalize=split) and scored, exit 0."""
    import shutil

    policy = shutil.copytree(smolvla_dir(), tmp_path / "policy")
    path = _edited_step(policy, smolvla_checkpoint.POSTPROCESSOR_FILE, "unnormalizer_processor", edit)
    config = smolvla_checkpoint.read_config(smolvla_dir())
    with pytest.raises(CheckpointError, match=rf"^{path}: the unnormalizer leaves action as the policy emits it"):
        smolvla_checkpoint.read_norm_stats(policy, config)
