"""openpi checkpoint loading: formats, dtype, norm stats, round trips, and an error for each failure."""

from __future__ import annotations

import gc
import json
import pathlib
import re
import shutil
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from models_helpers import openpi_checkpoint, pi0_checkpoint, pi0_io, pi0_observation, relative_error
from multinet_jax import sharding, weights
from multinet_jax.weights import trees
from multinet_jax.models import configs, load_model, param_shapes


@pytest.fixture(scope="module")
def fixture_params():
    """The fixture's parameters as float32 numpy arrays (openpi tree, no `value` leaves)."""
    expected = param_shapes(configs.get_config("pi0_tiny"))
    mesh = sharding.make_mesh()
    params = weights.restore_params(pi0_checkpoint(), expected, sharding.param_shardings(expected, mesh))
    return jax.tree.map(np.asarray, params)


def copy_checkpoint(tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(pi0_checkpoint(), target)
    return target


def test_training_format_restores_into_bfloat16_and_reads_norm_stats():
    model = load_model(pi0_checkpoint(), dtype="bfloat16")
    leaves = jax.tree.leaves(model.params)
    assert {leaf.dtype for leaf in leaves} == {np.dtype("bfloat16")}
    assert model.config == configs.get_config("pi0_tiny", dtype="bfloat16")
    raw = json.loads((pathlib.Path(pi0_checkpoint()) / "assets" / "tiny_robot" / "norm_stats.json").read_text())
    assert set(model.norm_stats) == set(raw["norm_stats"])
    for key, entry in raw["norm_stats"].items():
        for field in ("mean", "std", "q01", "q99"):
            np.testing.assert_array_equal(model.norm_stats[key][field], np.asarray(entry[field], np.float32))


def test_params_dir_itself_loads(fixture_params):
    model = load_model(f"{pi0_checkpoint()}/params")
    flat = weights.flatten_params(model.params)
    for path, value in weights.flatten_params(fixture_params).items():
        np.testing.assert_array_equal(np.asarray(flat[path]), value)


def test_relative_checkpoint_path_loads(monkeypatch, fixture_params):
    checkpoint = pathlib.Path(pi0_checkpoint())
    monkeypatch.chdir(checkpoint.parent)
    model = load_model(checkpoint.name)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, model.params), fixture_params)


def test_round_trip_save_openpi_checkpoint_then_load_model(tmp_path, fixture_params):
    norm_stats = {"actions": {"mean": np.arange(3.0), "std": np.ones(3), "q01": None, "q99": None}}
    weights.save_openpi_checkpoint(fixture_params, tmp_path / "step", norm_stats=norm_stats, asset_id="robot")
    metadata_keys = [tuple(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(
        dict(ocp.PyTreeCheckpointer().metadata(tmp_path / "step" / "params").item_metadata))]
    assert all(keys[0] == "params" and keys[-1] == "value" for keys in metadata_keys)
    model = load_model(tmp_path / "step")
    np.testing.assert_array_equal(model.norm_stats["actions"]["mean"], np.arange(3.0, dtype=np.float32))
    assert model.norm_stats["actions"]["q01"] is None
    io = pi0_io()
    actions = model.sample_actions(pi0_observation(), noise=io["noise"], num_steps=3)
    assert relative_error(actions, io["actions_3step_f32"]) <= 5e-3


def test_pure_dict_params_load(tmp_path, fixture_params):
    ocp.PyTreeCheckpointer().save(tmp_path / "params", fixture_params)
    model = load_model(tmp_path / "params")
    assert model.norm_stats is None
    np.testing.assert_array_equal(
        np.asarray(model.params["action_out_proj"]["kernel"]), fixture_params["action_out_proj"]["kernel"]
    )


@pytest.mark.parametrize("name", ["pi0", "pi05"])
def test_paligemma_only_model_from_pi0_checkpoint_drops_the_action_expert(name):
    config = configs.get_config("pi0_fast_tiny")
    expected = param_shapes(config)
    mesh = sharding.make_mesh()
    params = weights.restore_params(
        openpi_checkpoint(name), expected, sharding.param_shardings(expected, mesh), skip=weights.is_pi0_only
    )
    paths = set(weights.flatten_params(params))
    assert paths == set(weights.flatten_params(expected))
    assert not any(weights.is_pi0_only(path) for path in paths)
    assert "PaliGemma/img/Transformer/encoderblock/LayerNorm_1/scale" in paths
    assert not any(path.startswith("PaliGemma/llm/") and "_1" in path for path in paths)


def test_restore_groups_are_bounded_and_largest_first(monkeypatch):
    monkeypatch.setattr(weights.trees, "RESTORE_GROUP_BYTES", 24)
    shapes = {"a": (4,), "b": (2,), "c": (10,), "d": (1,)}  # float32 bytes: 16, 8, 40, 4
    assert weights.trees.restore_groups(shapes, np.dtype("float32")) == [["c"], ["a", "b"], ["d"]]


def test_restore_in_many_groups_matches_a_plain_orbax_restore(monkeypatch):
    monkeypatch.setattr(weights.trees, "RESTORE_GROUP_BYTES", 64 * 1024)
    directory, entries = weights.read_param_metadata(pi0_checkpoint())
    shapes = {path: tuple(meta.shape) for path, (_, meta) in entries.items()}
    assert len(weights.trees.restore_groups(shapes, np.dtype("float32"))) > 2
    expected = param_shapes(configs.get_config("pi0_tiny"))
    shardings = sharding.param_shardings(expected, sharding.make_mesh())
    params = weights.restore_params(pi0_checkpoint(), expected, shardings)
    metadata = ocp.PyTreeCheckpointer().metadata(directory).item_metadata
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), dict(metadata))
    raw_tree = ocp.PyTreeCheckpointer().restore(directory, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    raw = weights.trees.flatten_tree(raw_tree)
    restored = weights.flatten_params(params)
    assert set(restored) == set(entries)
    for path, (keys, _) in entries.items():
        np.testing.assert_array_equal(np.asarray(restored[path]), raw[keys].astype(np.float32), err_msg=path)


def test_missing_and_unexpected_paths_are_listed(tmp_path, fixture_params):
    params = jax.tree.map(lambda x: x, fixture_params)
    del params["state_proj"]["bias"]
    params["extra_head"] = {"kernel": np.zeros((2, 2), np.float32)}
    weights.save_openpi_checkpoint(params, tmp_path / "broken")
    expected = param_shapes(configs.get_config("pi0_tiny"))
    shardings = sharding.param_shardings(expected, sharding.make_mesh())
    with pytest.raises(weights.CheckpointError, match=r"missing \['state_proj/bias'\], unexpected \['extra_head/kernel'\]"):
        weights.restore_params(tmp_path / "broken", expected, shardings)


def test_shape_mismatch_names_path_expected_and_got(tmp_path, fixture_params):
    params = jax.tree.map(lambda x: x, fixture_params)
    params["action_out_proj"]["bias"] = np.zeros(16, np.float32)
    weights.save_openpi_checkpoint(params, tmp_path / "wrong")
    expected = param_shapes(configs.get_config("pi0_tiny"))
    shardings = sharding.param_shardings(expected, sharding.make_mesh())
    with pytest.raises(weights.CheckpointError, match=r"action_out_proj/bias: expected \(32,\), got \(16,\)"):
        weights.restore_params(tmp_path / "wrong", expected, shardings)


def test_non_finite_parameters_are_named_whether_on_the_host_or_a_device():
    """One check over a restore group: every array holding NaN or inf is named, host (numpy) and device alike,
    bf16 included; finite ones are not."""
    arrays = {"host/ok": np.ones(3, np.float32), "host/inf": np.array([1.0, np.inf], np.float32),
              "device/ok": jax.numpy.zeros((2, 2), jax.numpy.bfloat16),
              "device/nan": jax.numpy.array([[0.0, np.nan]], jax.numpy.bfloat16),
              "device/neg_inf": jax.numpy.array([-np.inf]), "device/int": jax.numpy.arange(4)}
    with pytest.raises(weights.CheckpointError, match=r"^ckpt: parameters \['device/nan', 'device/neg_inf', 'host/inf'\] "):
        trees.check_finite("ckpt", arrays)
    trees.check_finite("ckpt", {path: array for path, array in arrays.items() if path.endswith(("ok", "int"))})


def test_truncated_checkpoint_is_reported(tmp_path):
    target = copy_checkpoint(tmp_path)
    data_files = sorted((target / "params" / "ocdbt.process_0" / "d").iterdir(), key=lambda p: -p.stat().st_size)
    data_files[0].write_bytes(data_files[0].read_bytes()[:100])
    with pytest.raises(weights.CheckpointError, match="could not read the parameter arrays"):
        load_model(target)


def test_a_failed_read_leaves_no_read_running(tmp_path, monkeypatch):
    """orbax closes a restore's event loop at the first failed read: reads still running then post to the closed loop
    ("Event loop is closed") or are dropped mid-way, and Python reports each as unraisable, around the error line."""
    torn_data, torn_index = copy_checkpoint(tmp_path / "data"), copy_checkpoint(tmp_path / "index")
    largest_data_file = max((torn_data / "params" / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size)
    for torn in [largest_data_file, *(torn_index / "params" / "d").iterdir()]:  # params/d: the OCDBT B-tree
        torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for _ in range(5):  # how many reads are still running when one fails depends on the threads' timing
        with pytest.raises(weights.CheckpointError, match=r"could not read the parameter arrays .*OUT_OF_RANGE"):
            load_model(torn_data)
        with pytest.raises(weights.CheckpointError, match=r"unreadable orbax checkpoint metadata \(ValueError: OUT_OF_RANGE"):
            load_model(torn_index)
    time.sleep(0.5)  # a read left running has posted to its closed loop by then,
    gc.collect()  # and one dropped mid-way is finalized here
    assert [f"{report.exc_type.__name__}: {report.exc_value}"[:300] for report in unraisable] == []


def test_unreadable_metadata_is_reported(tmp_path):
    target = copy_checkpoint(tmp_path)
    (target / "params" / "_METADATA").write_text("{not json")
    with pytest.raises(weights.CheckpointError, match="unreadable orbax checkpoint metadata"):
        load_model(target)


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(weights.CheckpointError, match="no such checkpoint directory"):
        load_model(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(weights.CheckpointError, match=r"empty: not a checkpoint format this project reads \(known: openpi"):
        load_model(tmp_path / "empty")
    with pytest.raises(weights.CheckpointError, match="holds an orbax checkpoint"):
        weights.params_directory(tmp_path / "empty")


def test_other_model_type_is_rejected(tmp_path):
    weights.save_openpi_checkpoint({"encoder": {"kernel": np.zeros((4, 4), np.float32)}}, tmp_path / "other")
    with pytest.raises(ValueError, match="not a Pi0/Pi0.5/Pi0-FAST checkpoint"):
        load_model(tmp_path / "other")


def test_malformed_norm_stats_name_the_file(tmp_path):
    asset = tmp_path / "assets" / "robot"
    asset.mkdir(parents=True)
    (asset / "norm_stats.json").write_text(json.dumps({"norm_stats": {"state": {"mean": [0.0]}}}))
    with pytest.raises(weights.CheckpointError, match=r"norm_stats.json: norm_stats\['state'\] lacks 'std'"):
        weights.read_norm_stats(tmp_path)


def test_norm_stats_that_are_not_one_number_per_dimension_are_refused(tmp_path):
    """A `[d, 1]` column broadcast a batch of one row's actions into d rows; a batch of d was silently wrong."""
    asset = tmp_path / "assets" / "robot"
    asset.mkdir(parents=True)
    entry = {"mean": [[0.0], [1.0]], "std": [[1.0], [1.0]], "q01": [-1.0, -1.0], "q99": [1.0, 1.0]}
    (asset / "norm_stats.json").write_text(json.dumps({"norm_stats": {"actions": entry}}))
    with pytest.raises(weights.CheckpointError, match=r"norm_stats.json: norm_stats\['actions'\]\['mean'\] has shape "
                                                      r"\(2, 1\); expected one number per dimension"):
        weights.read_norm_stats(tmp_path)


def _norm_stats(directory, asset_id: str, mean: float) -> None:
    asset = directory / "assets" / asset_id
    asset.mkdir(parents=True)
    entry = {"mean": [mean], "std": [1.0], "q01": [-1.0], "q99": [1.0]}
    (asset / "norm_stats.json").write_text(json.dumps({"norm_stats": {"actions": entry, "state": entry}}))


def test_norm_stats_are_found_under_openpis_nested_asset_ids_and_picked_by_asset_id(tmp_path):
    _norm_stats(tmp_path, "physical-intelligence/libero", 1.0)  # pi05_libero's layout
    assert weights.norm_stats_asset_ids(tmp_path) == ["physical-intelligence/libero"]
    assert weights.read_norm_stats(tmp_path)["actions"]["mean"].tolist() == [1.0]
    _norm_stats(tmp_path, "droid", 2.0)
    with pytest.raises(weights.CheckpointError, match=r"several asset ids \['droid', 'physical-intelligence/libero'\]; pass --asset_id"):
        weights.read_norm_stats(tmp_path)
    assert weights.read_norm_stats(tmp_path, "droid")["state"]["mean"].tolist() == [2.0]
    assert weights.read_norm_stats(tmp_path, "physical-intelligence/libero")["state"]["mean"].tolist() == [1.0]
    with pytest.raises(weights.CheckpointError, match=r"no norm stats for --asset_id='libero' \(the checkpoint has \['droid', "):
        weights.read_norm_stats(tmp_path, "libero")


def test_a_checkpoint_without_norm_stats_reads_none_unless_an_asset_id_is_asked_for(tmp_path):
    assert weights.read_norm_stats(tmp_path) is None
    with pytest.raises(weights.CheckpointError, match=r"no norm stats for --asset_id='droid' \(the checkpoint has none\)"):
        weights.read_norm_stats(tmp_path, "droid")


def test_an_asset_without_action_statistics_is_refused_before_any_weight_loads(tmp_path):
    """openpi's loader takes an asset of the state's statistics alone (Pi0.5's state prompts read them); where a run
    unnormalizes actions with it, preflight names its file and the missing key from the small files."""
    import types

    from multinet_jax.eval import preflight
    from multinet_jax.models import openpi_checkpoint as openpi_format

    weights.save_openpi_checkpoint({"x": np.zeros(2, np.float32)}, tmp_path)
    _norm_stats(tmp_path, "droid", 2.0)
    state_only = tmp_path / "assets" / "state_only" / "norm_stats.json"
    state_only.parent.mkdir(parents=True)
    state_only.write_text(json.dumps({"norm_stats": {"state": {"mean": [0.0], "std": [1.0]}}}))
    assert openpi_format.missing_action_stats(str(tmp_path), "droid") is None
    lacking = openpi_format.missing_action_stats(str(tmp_path), "state_only")
    assert lacking == f"{state_only}: norm_stats has no 'actions' key (it holds ['state'])"
    for model in ("pi0", "pi05", "pi0_fast"):  # every openpi family asks it
        config = types.SimpleNamespace(model=model, domains=("act2answer",), unnormalize="split", asset_id="state_only")
        with pytest.raises(ValueError) as refused:
            preflight.check_checkpoint_inputs(config, tmp_path, {})
        assert str(refused.value) == (f"{lacking}: the actions of act2answer are unnormalized with these statistics; "
                                      "pass --asset_id of one holding them (['droid', 'state_only'])")
        preflight.check_checkpoint_inputs(types.SimpleNamespace(**{**vars(config), "asset_id": "droid"}), tmp_path, {})


@pytest.mark.parametrize("checkpoint", [
    ("openpi_reference", "pi0", "ckpt", "0"),  # orbax, read in restore groups
    ("openvla_reference", "model"),  # safetensors, read parameter by parameter
    ("openpi_reference", "paligemma_npz", "pt_tiny.npz"),  # big_vision npz, array by array
])
def test_a_load_running_past_the_delay_shows_its_progress_in_bytes(checkpoint, monkeypatch, capsys):
    """Past `trees.LOAD_PROGRESS_DELAY_S` every reader draws a bar on stderr that ends at the parameters' bytes in the
    target dtype; a load under the delay (every other one in the tests) draws none."""
    from conftest import shared_path

    path = shared_path(*checkpoint)
    model = load_model(path, dtype="bfloat16")
    assert "loading" not in capsys.readouterr().err
    monkeypatch.setattr(trees, "LOAD_PROGRESS_DELAY_S", 0.0)
    model = load_model(path, dtype="bfloat16")
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(model.params))
    err = capsys.readouterr().err
    bars = re.findall(rf"loading {re.escape(str(path))}: 100%\|[^\r\n]*\| ([0-9.]+)([kMG]?)/([0-9.]+)([kMG]?) \[", err)
    assert bars, f"no finished load bar on stderr: {err[-300:]!r}"
    done, done_unit, shown_total, total_unit = bars[-1]
    assert (done, done_unit) == (shown_total, total_unit)
    scale = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[total_unit]
    assert float(shown_total) * scale == pytest.approx(total, rel=0.01)  # tqdm shows 3 significant digits
