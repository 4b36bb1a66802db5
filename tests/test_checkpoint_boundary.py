"""What a checkpoint, tokenizer or cached asset must be before it is read as one: real files from `../shared`, edited
the way a wrong or corrupted copy would be, refused with the file and the field named."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import sentencepiece
from safetensors.numpy import load_file, save_file
from sentencepiece import sentencepiece_model_pb2

from act2answer_helpers import item_set
from conftest import shared_path
from models_helpers import openpi_checkpoint
from multinet_jax import assets, demo, metrics, models, tokenizers, weights
from multinet_jax.demo import datasets
from multinet_jax.models import openpi_checkpoint as openpi_files
from multinet_jax.probing import runner
from multinet_jax.tokenizers import paligemma, sentencepiece_training
from multinet_jax.weights import safetensors
from multinet_jax.weights.trees import CheckpointError
from tokenizers_helpers import build_test_paligemma


def _copy(source: pathlib.Path, target: pathlib.Path, *, linked: tuple[str, ...] = ()) -> pathlib.Path:
    """A writable copy of a shared directory; the `linked` files are symlinked (left unchanged, not copied)."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.name in linked:
            (target / path.name).symlink_to(path)
        elif path.is_dir():
            shutil.copytree(path, target / path.name)
        else:
            shutil.copyfile(path, target / path.name)
    for path in target.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return target


def _openvla(tmp_path: pathlib.Path, name: str = "openvla") -> pathlib.Path:
    return _copy(shared_path("openvla_reference", "model"), tmp_path / name)


def _edit_json(path: pathlib.Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


# -- 1. OpenVLA's bundled tokenizer.model must be its embedding's ---------------------------------------------------

def test_openvla_refuses_a_bundled_tokenizer_the_embedding_does_not_hold(tmp_path):
    directory = _openvla(tmp_path)
    shutil.copyfile(shared_path("tokenizers", "gemma_tokenizer.model"), directory / "tokenizer.model")
    with pytest.raises(CheckpointError, match=rf"{directory}/tokenizer.model: 256000 pieces, but {directory}/config.json "
                       r"gives 1024 \(text_config.vocab_size 1088 less pad_to_multiple_of 64\)"):
        models.load_model(directory)


# -- 8. OpenVLA config.json fields: type and range ------------------------------------------------------------------

@pytest.mark.parametrize("field, value, edit", [
    ("pad_to_multiple_of", 0, lambda c: c.update(pad_to_multiple_of=0)),
    ("pad_to_multiple_of", "'64x'", lambda c: c.update(pad_to_multiple_of="64x")),
    ("n_action_bins", 1, lambda c: c.update(n_action_bins=1)),
    ("pad_token_id", None, lambda c: c.update(pad_token_id=None)),
    ("image_sizes", r"\[224\]", lambda c: c.update(image_sizes=[224])),
    ("text_config.rms_norm_eps", -1.0, lambda c: c["text_config"].update(rms_norm_eps=-1.0)),
    ("text_config.rope_theta", -1.0, lambda c: c["text_config"].update(rope_theta=-1.0)),
])
def test_openvla_refuses_config_values_of_the_wrong_type_or_range(tmp_path, field, value, edit):
    directory = _openvla(tmp_path)
    _edit_json(directory / "config.json", edit)
    with pytest.raises(CheckpointError, match=rf"{directory}/config.json: {field}: expected .*, got {value}"):
        models.load_model(directory)


def test_openvla_refuses_a_padding_the_tokenizer_contradicts(tmp_path):
    directory = _openvla(tmp_path)
    _edit_json(directory / "config.json", lambda c: c.update(pad_to_multiple_of=32))
    with pytest.raises(CheckpointError, match=r"tokenizer.model: 1024 pieces, but .*config.json gives 1056"):
        models.load_model(directory)


# -- 2. A PaliGemma tokenizer has PaliGemma's special ids -----------------------------------------------------------

def test_paligemma_special_ids_are_gemmas_and_the_demo_tokenizers(tmp_path):
    gemma = sentencepiece.SentencePieceProcessor(model_file=str(shared_path("tokenizers", "gemma_tokenizer.model")))
    real = {"pad": gemma.pad_id(), "eos": gemma.eos_id(), "bos": gemma.bos_id(), "unk": gemma.unk_id()}
    assert paligemma.SPECIAL_IDS == real
    built = build_test_paligemma(tmp_path)  # from the real Gemma file, <locNNNN> appended: accepted
    assert built.vocab_size == paligemma.PALIGEMMA_VOCAB_SIZE
    demo_tokenizer = tokenizers.PaliGemmaTokenizer(demo.build_tokenizer(tmp_path / "demo.model", datasets.corpus()))
    assert (demo_tokenizer.pad_id, demo_tokenizer.eos_id, demo_tokenizer.bos_id) == (real["pad"], real["eos"], real["bos"])


def test_paligemma_tokenizer_refuses_another_models_conventions(tmp_path):
    llama = shared_path("openvla_reference", "model", "tokenizer.model")  # 1024 pieces, as the tiny Pi0's embedding
    with pytest.raises(ValueError, match=rf"{llama}: special ids .*'eos': 2, 'bos': 1.*PaliGemma's are"):
        tokenizers.PaliGemmaTokenizer(llama)


def test_paligemma_tokenizer_refuses_a_full_vocabulary_without_loc_pieces(tmp_path):
    path = tokenizers.build_paligemma_vocab(shared_path("tokenizers", "gemma_tokenizer.model"), tmp_path / "pg.model")
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    proto.pieces[paligemma.GEMMA_VOCAB_SIZE].piece = "<notloc>"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match=rf"{path}: piece 256000 is '<notloc>', PaliGemma's is '<loc0000>'"):
        tokenizers.PaliGemmaTokenizer(path)


# -- 7. probe checks the tokenizer against the embedding, as eval does ----------------------------------------------

def test_probe_refuses_a_tokenizer_of_another_size_than_the_embedding(tmp_path):
    proto = sentencepiece_training.train(datasets.corpus(), 400, pad_id=0, eos_id=1, bos_id=2, unk_id=3)
    tokenizer = tmp_path / "small.model"
    tokenizer.write_bytes(proto.SerializeToString())
    config = runner.ProbeConfig(checkpoint=openpi_checkpoint("pi0"), tokenizer=str(tokenizer),
                                data_dir=str(item_set(tmp_path / "items")), output_dir=str(tmp_path / "out"),
                                batch_size=4, num_flow_steps=2, num_folds=2, max_token_len=48)
    with pytest.raises(ValueError, match=rf"{tokenizer}: a {len(proto.pieces)}-piece tokenizer, but .* embeds 1024 tokens"):
        runner.run_probe(config, model=models.load_model(openpi_checkpoint("pi0")))
    assert not list((tmp_path / "out").glob("activations*/*"))


# -- 4, 5. Which safetensors files hold which tensors ---------------------------------------------------------------

def _shard(directory: pathlib.Path, shards: list[dict[str, np.ndarray]], weight_map: dict[str, str]) -> None:
    for index, tensors in enumerate(shards):
        save_file(tensors, directory / f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors", metadata={"format": "pt"})
    (directory / safetensors.INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _sharded_openvla(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict[str, np.ndarray], list[str], list[str]]:
    directory = _openvla(tmp_path)
    tensors = load_file(directory / safetensors.SINGLE_FILE)
    (directory / safetensors.SINGLE_FILE).unlink()
    names = sorted(tensors)
    return directory, tensors, names[: len(names) // 2], names[len(names) // 2:]


SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def _halves(tensors: dict, first: list[str], second: list[str]) -> tuple[list[dict], dict[str, str]]:
    """The two shards of the split tensors and the index's weight map that names them right."""
    return ([{n: tensors[n] for n in first}, {n: tensors[n] for n in second}],
            dict.fromkeys(first, SHARDS[0]) | dict.fromkeys(second, SHARDS[1]))


def test_a_tensor_in_two_shards_is_refused(tmp_path):
    directory, tensors, first, second = _sharded_openvla(tmp_path)
    shards, weight_map = _halves(tensors, first, second)
    shards[1][first[0]] = tensors[first[0]] * 0
    _shard(directory, shards, weight_map)
    with pytest.raises(CheckpointError, match=rf"{SHARDS[1]}: tensor '{first[0]}' is also in {SHARDS[0]}"):
        models.load_model(directory)


def test_an_index_that_maps_a_tensor_to_another_shard_is_refused(tmp_path):
    directory, tensors, first, second = _sharded_openvla(tmp_path)
    shards, weight_map = _halves(tensors, first, second)
    _shard(directory, shards, weight_map | {second[-1]: SHARDS[0]})
    with pytest.raises(CheckpointError, match=rf"{safetensors.INDEX_FILE}: weight_map maps '{second[-1]}' to "
                       rf"{SHARDS[0]}, but the tensor is in {SHARDS[1]}"):
        models.load_model(directory)


def test_an_index_naming_a_tensor_no_shard_holds_is_refused(tmp_path):
    directory, tensors, first, second = _sharded_openvla(tmp_path)
    shards, weight_map = _halves(tensors, first, second)
    _shard(directory, shards, weight_map | {"language_model.extra.weight": SHARDS[1]})
    with pytest.raises(CheckpointError, match=r"weight_map names tensors no shard holds: \['language_model.extra.weight'\]"):
        safetensors.read_tensor_specs(directory)


def test_a_single_file_beside_an_index_is_what_loads_as_in_transformers(tmp_path):
    directory = _openvla(tmp_path)
    tensors = load_file(directory / safetensors.SINGLE_FILE)
    _shard(directory, [{name: tensor + 1 for name, tensor in tensors.items()}],
           dict.fromkeys(tensors, "model-00001-of-00001.safetensors"))
    assert safetensors.checkpoint_files(directory) == [directory / safetensors.SINGLE_FILE]
    assert {spec.file for spec in safetensors.read_tensor_specs(directory).values()} == {directory / safetensors.SINGLE_FILE}


# -- minor: finite values are checked in the dtype the parameters are restored as ------------------------------------

def test_a_float32_value_beyond_bfloat16s_range_is_refused_when_restored_as_bfloat16(tmp_path):
    directory = _openvla(tmp_path)
    tensors = load_file(directory / safetensors.SINGLE_FILE)
    tensors["projector.fc1.bias"] = tensors["projector.fc1.bias"].copy()
    tensors["projector.fc1.bias"][0] = 3.4e38  # finite in float32, inf in bfloat16
    save_file(tensors, directory / safetensors.SINGLE_FILE, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model.safetensors: parameters \['projector.fc1.bias'\] hold NaN or infinite"):
        models.load_model(directory, dtype="bfloat16")


# -- 6, 10. openpi's orbax params ----------------------------------------------------------------------------------

def _reference_tree() -> dict:
    """The tiny Pi0's `params/` tree as openpi wrote it (`{"params": ... "value"}`), host arrays."""
    directory = weights.params_directory(openpi_checkpoint("pi0"))
    metadata = ocp.PyTreeCheckpointer().metadata(directory).item_metadata
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), dict(metadata))
    return ocp.PyTreeCheckpointer().restore(directory, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def _save_orbax(tree: dict, step: pathlib.Path) -> pathlib.Path:
    ocp.PyTreeCheckpointer().save(step / "params", tree)
    shutil.copytree(pathlib.Path(openpi_checkpoint("pi0")) / "assets", step / "assets")
    return step


@pytest.mark.parametrize("dtype", [np.int32, np.bool_])
def test_orbax_parameters_that_are_not_floating_point_are_refused(tmp_path, dtype):
    tree = _reference_tree()
    scale = tree["params"]["PaliGemma"]["llm"]["final_norm"]["scale"]
    scale["value"] = scale["value"].astype(dtype)
    step = _save_orbax(tree, tmp_path / "step")
    with pytest.raises(CheckpointError, match=rf"{step}/params: parameters that are not floating point: "
                       rf"\{{'params/PaliGemma/llm/final_norm/scale/value': '{np.dtype(dtype)}'\}}"):
        models.load_model(step)


def test_an_orbax_parameter_stored_twice_is_refused(tmp_path):
    tree = _reference_tree()
    tree["PaliGemma"] = {"llm": {"final_norm": {"scale": tree["params"]["PaliGemma"]["llm"]["final_norm"]["scale"]["value"] + 5}}}
    step = _save_orbax(tree, tmp_path / "step")
    with pytest.raises(CheckpointError, match=rf"{step}/params: parameter PaliGemma/llm/final_norm/scale is stored twice"):
        models.load_model(step)


def test_an_orbax_tree_nested_a_level_too_deep_names_its_directory(tmp_path):
    step = _save_orbax({"params": _reference_tree()}, tmp_path / "step")
    with pytest.raises(CheckpointError, match=rf"{step}/params: not a Pi0/Pi0.5/Pi0-FAST checkpoint: missing"):
        openpi_files.checkpoint_config(step)


# -- 3. a re-download keeps only the cached files that still hash to their record -----------------------------------

def test_a_redownload_fetches_again_a_cached_file_corrupted_since(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTINET_JAX_CACHE", str(tmp_path / "cache"))
    source = _copy(pathlib.Path(openpi_checkpoint("pi0")), tmp_path / "published")
    path = assets.resolve(source.as_uri(), offline=False)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    largest = max(files, key=lambda p: p.stat().st_size)
    corrupt = bytearray(largest.read_bytes())
    corrupt[len(corrupt) // 2] ^= 1  # same size: only its recorded sha256 tells
    largest.write_bytes(bytes(corrupt))
    stats = path / "assets" / "tiny_robot" / "norm_stats.json"
    stats.write_bytes(stats.read_bytes()[:-5])  # another file's size changes: the asset is fetched again
    assert assets.resolve(source.as_uri(), offline=False) == path
    assert largest.read_bytes() == (source / largest.relative_to(path)).read_bytes()
    assert stats.read_bytes() == (source / stats.relative_to(path)).read_bytes()


# -- 9. the MiniLM embedder's weights ------------------------------------------------------------------------------

def _minilm(tmp_path: pathlib.Path, edit) -> pathlib.Path:
    source = shared_path("models", "all-MiniLM-L6-v2")
    directory = _copy(source, tmp_path / "minilm", linked=tuple(p.name for p in source.iterdir() if p.name != "model.safetensors"))
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def test_embedder_weights_holding_nan_are_refused(tmp_path):
    name = "encoder.layer.5.output.dense.weight"

    def poison(tensors):
        tensors[name] = tensors[name].copy()
        tensors[name][0] = np.nan

    directory = _minilm(tmp_path, poison)
    with pytest.raises(CheckpointError, match=rf"{directory}/model.safetensors: parameters \['{name}'\] hold NaN"):
        metrics.SentenceEmbedder(directory)


def test_embedder_weights_missing_a_tensor_name_the_file(tmp_path):
    name = "encoder.layer.5.output.LayerNorm.bias"
    directory = _minilm(tmp_path, lambda tensors: tensors.pop(name))
    with pytest.raises(CheckpointError, match=rf"{directory}/model.safetensors: missing tensor '{name}'"):
        metrics.SentenceEmbedder(directory)
