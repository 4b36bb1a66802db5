"""`multinet-jax probe` end to end on the tiny Pi0 and a generated item set: activations on disk, probing.json,
the plot, resume without recomputing, a changed item set refused, bad flags refused."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from act2answer_helpers import item_set
from conftest import REPO_ROOT
from models_helpers import openpi_checkpoint
from multinet_jax import data, demo, models, tokenizers
from multinet_jax.demo import datasets
from multinet_jax.eval import manifest
from multinet_jax.probing import activation_store, layer_curves, runner


class CountingModel:
    """The loaded model, counting `activations` calls (a resumed run must make none for saved episodes) and keeping
    the flow steps each asked for."""

    def __init__(self, model):
        self.model, self.calls, self.num_steps = model, 0, set()
        self.config = model.config  # the vocabulary the run checks its tokenizer against

    def activations(self, observation, **kwargs):
        self.calls += 1
        self.num_steps.add(kwargs["num_steps"])
        return self.model.activations(observation, **kwargs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    tokenizer = demo.build_tokenizer(root / "tokenizer.model", datasets.corpus())
    return {"items": item_set(root / "items", items_per_category=2), "tokenizer": str(tokenizer),
            "model": models.load_model(openpi_checkpoint("pi0"))}


def _config(setup, output_dir, **overrides):
    return runner.ProbeConfig(**{"checkpoint": openpi_checkpoint("pi0"), "tokenizer": setup["tokenizer"],
                                 "data_dir": str(setup["items"]), "output_dir": str(output_dir), "batch_size": 4,
                                 "num_flow_steps": 2, "num_folds": 2, "max_token_len": 48, **overrides})


def test_probe_writes_activations_report_and_resumes(setup, tmp_path, monkeypatch):
    model = CountingModel(setup["model"])
    make_source, opens = data.make_source, []

    def counted(domain, *args, **kwargs):
        opens.append(domain)
        return make_source(domain, *args, **kwargs)

    monkeypatch.setattr(data, "make_source", counted)
    result = runner.run_probe(_config(setup, tmp_path), model=model)
    assert model.calls == 3  # 12 episodes in batches of 4
    assert opens == ["act2answer"]  # the episode count and the dataset read one source
    saved = activation_store.read(tmp_path / "activations" / "all")
    pairs = json.loads((setup["items"] / "pairs.json").read_text())
    assert saved["id"].tolist() == [f"{pair['index']}/{layout}" for pair in pairs for layout in ("original", "swapped")]
    answers = [0 if pair["answer"] == "Left" else 1 for pair in pairs]
    assert saved["label"].tolist() == [label for answer in answers for label in (answer, 1 - answer)]
    depth = setup["model"].config.paligemma.depth
    assert saved["prefix_last"].shape == (12, depth, 64) and saved["action_mean"].shape == (12, depth, 32)
    written = json.loads((tmp_path / "probing.json").read_text())
    assert written["streams"] == ["prefix_last", "prefix_mean", "action_mean"] and set(written["tasks"]) == {"color", "shape", "counting"}
    for task in written["tasks"].values():
        for stream in written["streams"]:
            assert len(task[stream]["accuracy"]) == len(task[stream]["control_accuracy"]) == depth
            assert np.array(task[stream]["fold_accuracy"]).shape == (depth, 2)
    assert written["config"]["num_folds"] == 2 and (tmp_path / "probing.png").stat().st_size > 10_000
    assert written["tasks"] == json.loads(json.dumps(result["tasks"]))  # the file holds what run_probe returned

    with pytest.raises(FileExistsError, match="pass --resume"):
        runner.run_probe(_config(setup, tmp_path), model=model)
    again = CountingModel(setup["model"])
    resumed = runner.run_probe(_config(setup, tmp_path, resume=True), model=again)
    assert again.calls == 0 and resumed["tasks"] == written["tasks"]
    with pytest.raises(ValueError, match=r"holds 12 episodes, more than --limit=8; a resume only continues a run"):
        runner.run_probe(_config(setup, tmp_path, resume=True, limit=8), model=again)


def test_resume_refuses_a_changed_item_set(setup, tmp_path):
    items = item_set(tmp_path / "items", items_per_category=2)
    config = runner.ProbeConfig(checkpoint="unused", tokenizer=setup["tokenizer"], data_dir=str(items), output_dir=str(tmp_path / "run"),
                               batch_size=4, num_flow_steps=1, num_folds=2, limit=4)
    runner.capture(config, setup["model"])
    results = tmp_path / "run" / "probing.json"
    results.write_text("{}")  # as a finished run leaves it
    pairs = json.loads((items / "pairs.json").read_text())
    pairs[0]["index"] = 99
    (items / "pairs.json").write_text(json.dumps(pairs))
    with pytest.raises(ValueError, match=r"sample 0 is '0/original' but the item set's is '99/original'"):
        runner.capture(runner.ProbeConfig(**{**vars(config), "resume": True, "limit": None}), setup["model"])
    assert results.exists()  # refused: the results of the saved activations stand


@pytest.mark.parametrize("flag, message", [
    ("--num_folds=1", "error: --num_folds must be at least 2, got 1"),
    ("--C=0", "error: --C must be positive, got 0.0"),
    ("--batch_size=0", "error: --batch_size must be positive, got 0"),
    ("--limit=19", "error: --limit=19 is odd: Act2Answer's episodes are items in both layouts (original, then swapped), "
                   "and a probe's item is read in both or not at all; pass an even --limit"),
    ("--permutations=10", "error: --permutations must be at least 19 (a peak reaches p <= 0.05 only by beating that "
                          "many permuted peaks), got 10"),
])
def test_bad_probe_flags(flag, message):
    command = [sys.executable, "-c", "from multinet_jax.cli import main; main()", "probe", "--checkpoint=c",
               "--tokenizer=t", "--data_dir=d", flag]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2 and completed.stderr == message + "\n"


def test_probe_without_action_expert_says_so(setup, tmp_path):
    """Pi0-FAST: prefix streams from the decoder's prefix pass; probing.json says there is no action expert."""
    fast = models.load_model(openpi_checkpoint("fast"))
    config = runner.ProbeConfig(checkpoint=openpi_checkpoint("fast"), tokenizer=setup["tokenizer"], data_dir=str(setup["items"]),
                               output_dir=str(tmp_path), batch_size=4, num_folds=2)
    result = runner.run_probe(config, model=fast)
    saved = activation_store.read(tmp_path / "activations" / "all")
    depth, width = fast.config.paligemma.depth, fast.config.paligemma.width
    assert saved["prefix_last"].shape == saved["prefix_mean"].shape == (12, depth, width) and "action_mean" not in saved
    written = json.loads((tmp_path / "probing.json").read_text())
    assert written["streams"] == ["prefix_last", "prefix_mean"] and "retention" not in written
    assert _manifest_and_report_steps(tmp_path) == (None, None)  # no flow sampled, none recorded
    assert written["action_streams"] == layer_curves.NO_ACTION_EXPERT == result["action_streams"]


def test_probe_settings_are_all_classified():
    fields = {field.name for field in dataclasses.fields(runner.ProbeConfig)}
    assert set(runner.ACTIVATION_SETTINGS) | set(runner.OTHER_SETTINGS) == fields
    assert not set(runner.ACTIVATION_SETTINGS) & set(runner.OTHER_SETTINGS)


def test_resume_refuses_other_settings_or_inputs(setup, tmp_path):
    """The probe manifest: resuming activations with another seed, item set or checkpoint is refused, naming each."""
    items = item_set(tmp_path / "items", items_per_category=2)
    config = _config(setup, tmp_path / "run", limit=4)
    config = dataclasses.replace(config, data_dir=str(items))
    runner.check_manifest(config, runner.describe(config, {"checkpoint": config.checkpoint, "tokenizer": config.tokenizer},
                                                "pi0", setup["model"].mesh))
    runner.capture(config, setup["model"])
    recorded = json.loads((tmp_path / "run" / runner.MANIFEST).read_text())
    assert recorded["settings"] == {"split": None, "max_token_len": 48, "dtype": "float32", "num_flow_steps": 2, "seed": 0,
                                    "batch_size": 4}
    assert set(recorded["inputs"]) == {"checkpoint", "tokenizer", "data"} and recorded["checkpoint_settings"] == {}
    pairs = json.loads((items / "pairs.json").read_text())
    pairs[0]["answer"] = {"Left": "Right", "Right": "Left"}[pairs[0]["answer"]]
    (items / "pairs.json").write_text(json.dumps(pairs))
    resumed = dataclasses.replace(config, resume=True, seed=1)
    with pytest.raises(manifest.RunChangedError, match=r"probe_manifest.json: the activations in this folder come from "
                       r"another run: --seed: recorded 0, now 1; data: content differs .*"):
        runner.run_probe(resumed, model=setup["model"])
    path = tmp_path / "run" / runner.MANIFEST
    changed = json.loads(path.read_text())
    path.write_text(json.dumps({**changed, "runtime": {**changed["runtime"], "jaxlib": "0.4.38"}}))
    with pytest.raises(manifest.RunChangedError, match=r"runtime: jaxlib '0.4.38' -> '.*' \(other kernels round"):
        runner.run_probe(dataclasses.replace(resumed, seed=0, data_dir=config.data_dir), model=setup["model"])
    path.unlink()
    with pytest.raises(manifest.RunChangedError, match="holds activations but no probe_manifest.json"):
        runner.run_probe(resumed, model=setup["model"])


def test_probe_says_and_records_what_the_checkpoints_folder_name_sets(setup, tmp_path, capsys):
    """openpi's tiny Pi0 in a folder named for openpi's `pi0_droid` config (10-step chunks): the probe loads it with
    that horizon, prints the line eval prints, and its manifest records the setting (a resume compares it)."""
    checkpoint = tmp_path / "pi0_droid"
    checkpoint.symlink_to(openpi_checkpoint("pi0"))
    runner.run_probe(_config(setup, tmp_path / "run", checkpoint=str(checkpoint), limit=4))
    assert (f"probe: {checkpoint} is named for an openpi training config, which sets action_horizon=10"
            in capsys.readouterr().out)
    assert json.loads((tmp_path / "run" / runner.MANIFEST).read_text())["checkpoint_settings"] == {"action_horizon": 10}
    runner.run_probe(_config(setup, tmp_path / "plain", limit=4), model=setup["model"])
    assert "is named for" not in capsys.readouterr().out


def _manifest_and_report_steps(output_dir) -> tuple:
    return tuple(json.loads((output_dir / name).read_text())[key]["num_flow_steps"]
                 for name, key in ((runner.MANIFEST, "settings"), ("probing.json", "config")))


def test_probe_samples_with_the_checkpoints_own_flow_steps_unless_told(setup, tmp_path):
    """No --num_flow_steps: Pi0 samples with openpi's own steps (the model's `num_flow_steps`), recorded as the steps
    used, so resuming with them given explicitly continues the run and other steps are refused."""
    own = setup["model"].num_flow_steps
    model = CountingModel(setup["model"])
    runner.run_probe(_config(setup, tmp_path, num_flow_steps=None, limit=4), model=model)
    assert model.num_steps == {own} and _manifest_and_report_steps(tmp_path) == (own, own)
    resumed = CountingModel(setup["model"])
    runner.run_probe(_config(setup, tmp_path, num_flow_steps=own, resume=True, limit=8), model=resumed)
    assert resumed.calls == 1 and resumed.num_steps == {own}
    with pytest.raises(manifest.RunChangedError, match=rf"--num_flow_steps: recorded {own}, now {own + 1}"):
        runner.run_probe(_config(setup, tmp_path, num_flow_steps=own + 1, resume=True), model=resumed)


def test_probe_samples_smolvla_with_its_config_num_steps(tmp_path):
    """The demo SmolVLA with config.json num_steps 3: read before the weights load, used and recorded."""
    checkpoint = demo.build_checkpoint("smolvla", tmp_path / "smolvla_demo")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "num_steps": 3}))
    model = CountingModel(models.load_model(checkpoint))
    assert model.model.num_flow_steps == 3
    probe = runner.ProbeConfig(checkpoint=str(checkpoint), tokenizer=None, data_dir=str(item_set(tmp_path / "items", 2)),
                               output_dir=str(tmp_path / "run"), batch_size=6, num_folds=2)
    runner.run_probe(probe, model=model)
    assert model.num_steps == {3} and _manifest_and_report_steps(tmp_path / "run") == (3, 3)


def test_probe_refuses_flow_steps_for_a_family_without_flow(setup, tmp_path):
    config = runner.ProbeConfig(checkpoint=openpi_checkpoint("fast"), tokenizer=setup["tokenizer"], data_dir=str(setup["items"]),
                                output_dir=str(tmp_path), batch_size=4, num_folds=2, num_flow_steps=2)
    with pytest.raises(ValueError, match=r"^--num_flow_steps is for --model=pi0\|pi05\|smolvla, not --model=pi0_fast "
                                         r"\(it samples no flow\)$"):
        runner.run_probe(config)
    assert not (tmp_path / runner.MANIFEST).exists()


def test_prompts_the_cut_shortens_are_counted_and_said(setup, tmp_path, capsys):
    """A cut instruction may lose its question, every item's prompt reading alike: the probe says how many were cut."""
    tokenizer = tokenizers.PaliGemmaTokenizer(setup["tokenizer"])
    source = data.make_source("act2answer", setup["items"])
    uncut = runner.prompt_truncation(_config(setup, tmp_path, limit=4), tokenizer, source)
    assert uncut == {**uncut, "max_prompt_tokens": 48, "truncated": 0, "counted": 4} and not capsys.readouterr().err
    cut = runner.prompt_truncation(_config(setup, tmp_path, max_token_len=2), tokenizer, source)
    assert cut["truncated"] == cut["counted"] == len(source) and cut["longest_prompt_tokens"] > 2
    assert f"warning: act2answer: {len(source)} of {len(source)} prompts truncated to 2 tokens" in capsys.readouterr().err


def test_a_batch_the_meshs_data_axis_does_not_divide_is_refused_before_the_model_loads(setup, tmp_path):
    """As `eval` refuses it: on 8 devices a batch of 6 cannot be split, and the decoders' inputs failed with JAX's
    sharding message after the model had loaded."""
    import os

    command = [sys.executable, "-c", "from multinet_jax.cli import main; main()", "probe",
               f"--checkpoint={openpi_checkpoint('pi0')}", f"--tokenizer={setup['tokenizer']}",
               f"--data_dir={setup['items']}", f"--output_dir={tmp_path}", "--batch_size=6", "--max_token_len=48"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert completed.stderr.endswith("error: --batch_size=6 must be a multiple of the mesh's data axis (size 8 of this "
                                     "host's 8 devices)\n"), completed.stderr[-2000:]


def test_a_resume_that_dies_leaves_no_results_of_fewer_activations(setup, tmp_path, monkeypatch):
    """`probing.json` and the plot of an earlier run were fitted on fewer episodes than a resume saves: removed before
    the first new batch, as eval removes a domain's metrics before appending predictions."""
    runner.run_probe(_config(setup, tmp_path, limit=4), model=setup["model"])
    assert (tmp_path / "probing.json").exists() and (tmp_path / "probing.png").exists()

    def dies(*args, **kwargs):
        raise RuntimeError("killed while fitting")

    monkeypatch.setattr(runner.layer_curves, "probe_tasks", dies)
    with pytest.raises(RuntimeError, match="killed while fitting"):
        runner.run_probe(_config(setup, tmp_path, resume=True, limit=8), model=setup["model"])
    assert not (tmp_path / "probing.json").exists() and not (tmp_path / "probing.png").exists()


def test_too_few_items_for_the_folds_are_refused_before_any_activation(setup, tmp_path, monkeypatch):
    """4 episodes hold 2 items of one category: 5 folds cannot be filled, which was found only after every
    activation had been computed."""
    def computes(*args, **kwargs):
        raise AssertionError("activations computed before the refusal")

    monkeypatch.setattr(runner, "capture", computes)
    with pytest.raises(ValueError, match=r"^task '\w+' has 2 distinct items, fewer than --num_folds=5: probe more "
                                         r"\(--limit\) or fewer folds$"):
        runner.run_probe(_config(setup, tmp_path, limit=4, num_folds=5), model=setup["model"])
