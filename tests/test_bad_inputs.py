"""The bad-input matrix: every wrong input a user can hand `multinet-jax` fails with one line, and exit code 2.

Each CLI case asserts the whole of stderr: one line `error: <file>[:<line>]: <what is wrong>` (the file being the
flag when a flag is wrong). Cases run in one process per command (`cli_batch.py`), on tiny files built once.
Observations (the models' Python boundary) are the last section: one `ObservationError` naming the key each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest

import eval_helpers
from conftest import REPO_ROOT, shared_path
from data_helpers import writable_copy
from models_helpers import tiny_observation
from multinet_jax.eval import preflight
from multinet_jax.models.interface import InferenceOptions
from multinet_jax.models.observation import ObservationError, validate

# ------------------------------------------------------------------------------------------------ inputs


class _Payload:
    """A pickle that would create a file when unpickled with `pickle.load` (the attack the loader refuses)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclasses.dataclass(frozen=True)
class Inputs:
    root: pathlib.Path
    assets: dict
    held: list  # what must stay open while the cases run (the lock of a busy output folder)

    def __getattr__(self, name: str) -> pathlib.Path:
        """A path under the inputs' root, named like the attribute (`inputs.ckpt_nan`)."""
        return self.root / name


def _halve(path: pathlib.Path) -> None:
    """A file torn halfway, as an interrupted copy leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _nan_checkpoint(directory: pathlib.Path) -> None:
    """The tiny demo Pi0 with one parameter holding NaN (what a flipped exponent bit decodes to)."""
    from multinet_jax import models, weights

    config = models.configs.get_config("pi0_tiny")
    rng = np.random.default_rng(0)
    params = {path: (rng.standard_normal(leaf.shape) * 0.1).astype(leaf.dtype)
              for path, leaf in weights.flatten_params(models.param_shapes(config)).items()}
    params["state_proj/kernel"][3, 5] = np.nan
    weights.save_openpi_checkpoint(weights.unflatten_params(params), directory)


def _larger_tokenizer(source: pathlib.Path, target: pathlib.Path) -> None:
    """The demo tokenizer with five more pieces: a vocabulary the 1024-row checkpoint does not have."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(source.read_bytes())
    for index in range(5):
        piece = proto.pieces.add()
        piece.piece, piece.score = f"<extra{index}>", 0.0
        piece.type = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
    target.write_bytes(proto.SerializeToString())


def _openx_copy(shard: pathlib.Path, target: pathlib.Path, edit: Callable[[dict], None]) -> None:
    """The tf.data snapshot `shard` written again at `target` after `edit` changed its columns (one array per field)."""
    import tensorflow as tf

    steps = list(tf.data.Dataset.load(str(shard)).as_numpy_iterator())
    columns = tf.nest.map_structure(lambda *values: np.stack(values), *steps)
    columns["language_instruction"] = columns["language_instruction"].astype(object)  # any byte length
    edit(columns)
    tf.data.Dataset.from_tensor_slices(columns).save(str(target))


def _edited_rows(source: pathlib.Path, target: pathlib.Path, row: int, **fields: object) -> None:
    """The Overcooked trials pickle `source` with `fields` of one row replaced, at `target`."""
    rows = pickle.loads(source.read_bytes())
    rows[row].update(fields)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pickle.dumps(rows))


def _build_bad_data(root: pathlib.Path, data_dir: pathlib.Path) -> None:
    """Data that decodes but holds values no run can score right (NaN, huge, duplicate, unparsable, not UTF-8)."""
    from multinet_jax.demo import datasets

    shard = data_dir / "openx_bimanual" / "public" / "translated_shard_0"

    def action_value(value: float) -> Callable[[dict], None]:
        return lambda columns: columns["action"].__setitem__((3, 2), value)

    _openx_copy(shard, root / "openx_nan_action" / "translated_shard_0", action_value(np.nan))
    _openx_copy(shard, root / "openx_huge_action" / "translated_shard_0", action_value(3e38))
    _openx_copy(shard, root / "huge_action_data" / "openx_bimanual" / "public" / "translated_shard_0", action_value(1e30))
    _openx_copy(shard, root / "openx_nan_state" / "translated_shard_0",
                lambda columns: columns["observation"]["pose_l"].__setitem__((2, 0), np.nan))
    _openx_copy(shard, root / "openx_not_utf8" / "translated_shard_0",
                lambda columns: columns["language_instruction"].__setitem__(4, b"\xff\xfe pick up the cup"))
    writable_copy(shard, root / "quadrupedal_14_dims" / "openx_quadrupedal" / "public" / "translated_shard_0")
    spec = writable_copy(shard, root / "openx_bad_spec" / "translated_shard_0") / "dataset_spec.pb"
    spec.write_bytes(b"\x0a\xff\xff\xff garbage")

    trials = data_dir / "overcooked_ai" / "public" / "2020_hh_trials_train.pickle"
    _edited_rows(trials, root / "overcooked_int_action" / "trials.pickle", 3, joint_action=7)
    _edited_rows(trials, root / "overcooked_dance" / "trials.pickle", 3, joint_action="dance")
    _edited_rows(trials, root / "overcooked_nan_time" / "trials.pickle", 3, time_left="nan")
    _edited_rows(trials, root / "overcooked_huge_time" / "trials.pickle", 3, time_elapsed="1e300")
    _edited_rows(trials, root / "int_action_data" / "overcooked_ai" / "public" / "trials.pickle", 3, joint_action=7)

    piqa_lines = (data_dir / "piqa" / "public" / "piqa.jsonl").read_bytes().splitlines()
    for name, lines in (("piqa_duplicate_id", [*piqa_lines[:3], piqa_lines[1]]),
                        ("piqa_not_utf8", [piqa_lines[0], piqa_lines[1].replace(b"How", b"H\xffw")])):
        (root / name).mkdir()
        (root / name / "piqa.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (root / "piqa_torn_arrow").mkdir()
    (root / "piqa_torn_arrow" / "data-00000-of-00001.arrow").write_bytes(b"\xff\xff\xff\xff\x10\x00")
    (root / "piqa_torn_arrow" / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    bfcl = writable_copy(data_dir / "bfcl_v3" / "public", root / "bfcl_not_utf8")
    questions = (bfcl / "questions.jsonl").read_bytes().splitlines()
    (bfcl / "questions.jsonl").write_bytes(b"\n".join([questions[0], questions[1].replace(b"Please", b"Pl\xe9ase")]) + b"\n")
    for name, file, content in (("odinw_torn_categories", "categories.json", None),
                                ("odinw_categories_list", "categories.json", b'["a", "b"]'),
                                ("odinw_torn_pairs", "object_caption_pairs.json", None)):
        subset = sorted(writable_copy(data_dir / "odinw" / "public", root / name).glob("*/categories.json"))[0].parent
        original = (subset / file).read_bytes()
        (subset / file).write_bytes(original[: len(original) // 2] if content is None else content)
    sqa3d = writable_copy(data_dir / "sqa3d" / "public", root / "sqa3d_torn_questions")
    questions_file = sqa3d / "v1_balanced_questions_test_scannetv2.json"
    questions_file.write_bytes(questions_file.read_bytes()[:100])
    real = writable_copy(data_dir / "piqa", root / "real_data" / "piqa")  # data the demo must not add generated domains to
    (real / datasets.DEMO_DATA_MARKER).unlink()  # the demo's copy, as a real download holds it
    bfcl_twice = writable_copy(data_dir / "bfcl_v3" / "public", root / "bfcl_answer_twice")  # a second ground truth
    answers = (bfcl_twice / "answers.jsonl").read_bytes().splitlines()
    (bfcl_twice / "answers.jsonl").write_bytes(b"\n".join([*answers, answers[0]]) + b"\n")
    annotations_file = writable_copy(data_dir / "sqa3d" / "public", root / "sqa3d_annotation_twice") / \
        "v1_balanced_sqa_annotations_test_scannetv2.json"
    annotations = json.loads(annotations_file.read_text())
    annotations["annotations"].append(annotations["annotations"][0])
    annotations_file.write_text(json.dumps(annotations))

    score = root / "score"
    action = {"id": "0", "prediction": [0.1] * 3, "ground_truth": [0.2] * 3}
    (score / "huge_truth.jsonl").write_text(json.dumps(action) + "\n" + json.dumps({**action, "id": "1", "ground_truth": [0.2, 1e300, 0.1]}) + "\n")
    (score / "not_utf8.jsonl").write_bytes(json.dumps(action).encode() + b"\n" + b'{"id": "\xff"}\n')


class _HugeBytes:
    """Pickles as a call of `builtins.bytes(3_000_000_000)`: a few bytes of file asking for 3 GB."""

    def __reduce__(self):
        return (bytes, (3_000_000_000,))


def _build_bad_checkpoints(root: pathlib.Path, assets: dict) -> None:
    """Checkpoints and tokenizers that read, but whose values or layout are wrong (issue 25)."""
    from multinet_jax import assets as asset_store
    from multinet_jax import demo
    from multinet_jax.demo import datasets
    from safetensors.numpy import load_file, save_file

    checkpoint = pathlib.Path(assets["checkpoint"])
    stats = writable_copy(checkpoint, root / "ckpt_nan_norm_stats")
    stats_file = next((stats / "assets").rglob("norm_stats.json"))
    raw = json.loads(stats_file.read_text())
    raw["norm_stats"]["actions"]["std"][1] = float("nan")
    stats_file.write_text(json.dumps(raw))  # Python writes NaN, which JSON readers (and openpi) accept
    negative = next((writable_copy(checkpoint, root / "ckpt_negative_std") / "assets").rglob("norm_stats.json"))
    raw = json.loads(negative.read_text())
    raw["norm_stats"]["actions"]["std"][2] = -0.5  # would mirror every unnormalized action of that dim
    negative.write_text(json.dumps(raw))
    # A checkpoint fetched through the project (a file:// URL mirrors like gs://), then one bit flipped in its cache.
    fetched = asset_store.resolve(checkpoint.as_uri(), offline=False)
    largest = max((p for p in (fetched / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    flipped = bytearray(largest.read_bytes())
    flipped[len(flipped) // 2] ^= 0x10
    largest.write_bytes(bytes(flipped))
    npz = demo.build_checkpoint("paligemma", root / "paligemma_nan_source.npz")
    with np.load(npz, allow_pickle=False) as arrays:
        values = {key: arrays[key] for key in arrays.files}
    values["params/llm/final_norm/scale"] = np.full_like(values["params/llm/final_norm/scale"], np.nan)
    np.savez(root / "paligemma_nan.npz", **values)
    openvla = demo.build_checkpoint("openvla", root / "openvla_source")
    for name in ("openvla_nan_q01", "openvla_transposed", "openvla_bad_config", "openvla_no_action_stats",
                 "openvla_no_q99", "openvla_swapped_quantiles"):
        writable_copy(openvla, root / name)
    config = json.loads((root / "openvla_nan_q01" / "config.json").read_text())
    next(iter(config["norm_stats"].values()))["action"]["q01"][0] = float("nan")
    (root / "openvla_nan_q01" / "config.json").write_text(json.dumps(config))
    config = json.loads((root / "openvla_swapped_quantiles" / "config.json").read_text())
    action = next(iter(config["norm_stats"].values()))["action"]
    action["q01"], action["q99"] = action["q99"], action["q01"]
    (root / "openvla_swapped_quantiles" / "config.json").write_text(json.dumps(config))
    for name, edit in (("openvla_no_action_stats", lambda entry: entry.pop("action")),
                       ("openvla_no_q99", lambda entry: entry["action"].pop("q99"))):
        config = json.loads((root / name / "config.json").read_text())
        edit(next(iter(config["norm_stats"].values())))
        (root / name / "config.json").write_text(json.dumps(config))
        _halve(root / name / "model.safetensors")  # the refusal must come before any weight is read
    tensors = load_file(root / "openvla_transposed" / "model.safetensors")
    name = "language_model.model.layers.1.mlp.down_proj.weight"
    tensors[name] = np.ascontiguousarray(tensors[name].T)
    save_file(tensors, root / "openvla_transposed" / "model.safetensors", metadata={"format": "pt"})
    config_file = root / "openvla_bad_config" / "config.json"
    config_file.write_text(config_file.read_text()[:-40])
    demo.build_checkpoint("smolvla", root / "smolvla_demo")
    from multinet_jax.models import smolvla_checkpoint  # its tiny named config reads a 6-dim state (the demo data: 12)

    smolvla_checkpoint.write_checkpoint(root / "smolvla_6_dim_state", "smolvla_tiny", corpus=datasets.corpus())
    # Torn weights: the preflight refusals below must come before any weight is read.
    magma = writable_copy(demo.build_checkpoint("magma", root / "magma_source"), root / "magma_torn_weights")
    _halve(magma / "model.safetensors")
    datasets.write_missing(pathlib.Path(assets["data_dir"]), ["act2answer"])
    fast = writable_copy(pathlib.Path(assets["fast_tokenizer"]), root / "fast_torn_tokenizer") / "tokenizer.json"
    fast.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    (root / "overcooked_huge_bytes").mkdir()
    (root / "overcooked_huge_bytes" / "trials.pickle").write_bytes(pickle.dumps([_HugeBytes()]))


def _build(root: pathlib.Path) -> Inputs:
    from multinet_jax import demo

    assets = eval_helpers.assets()
    inputs = Inputs(root, assets, [])
    data_dir = pathlib.Path(assets["data_dir"])
    (root / "a_file").write_text("not a folder\n")

    score = root / "score"
    score.mkdir()
    piqa = [{"id": str(i), "prediction": i % 2, "ground_truth": 1} for i in range(3)]
    (score / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in piqa))
    (score / "duplicate.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*piqa, {**piqa[1], "prediction": 0}]))
    (score / "not_json.jsonl").write_text(json.dumps(piqa[0]) + "\n{'id': 1}\n")
    (score / "not_object.jsonl").write_text("[1, 2]\n")
    harness = [{**r, "prediction": {"raw_output": str(r["prediction"]), "extracted_outputs": r["prediction"]}} for r in piqa]
    (score / "harness_outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in harness))  # MultiNet's adapters'
    (score / "missing_truth.jsonl").write_text(json.dumps(piqa[0]) + "\n" + json.dumps({"id": "x", "prediction": 1}) + "\n")
    odinw = [{"id": str(n), "prediction": 0, "ground_truth": 0, "num_options": options} for n, options in enumerate((5, 5, 2))]
    (score / "odinw_subsets_unnamed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in odinw))  # pooled they merge classes
    (score / "stats.json").write_text("{min: 0}")
    (score / "piqa_metrics.json").write_text(json.dumps({"domain": "piqa", "metrics": {"overall_accuracy": 0.5}}))
    (score / "stats_swapped.json").write_text(json.dumps({"min": [0.0, 1.0], "max": [1.0, -1.0], "mean": [0.5, 0.0]}))
    (score / "linked.jsonl").write_text("".join(json.dumps(r) + "\n" for r in piqa))
    os.link(score / "linked.jsonl", score / "linked_output.json")  # one file under two names

    shard = data_dir / "openx_bimanual" / "public" / "translated_shard_0"
    for name, cut in (("openx_garbage", None), ("openx_torn", 0.5)):
        copy = writable_copy(shard, root / name / "translated_shard_0")
        (snapshot,) = copy.rglob("*.snapshot")
        snapshot.write_bytes(b"\x00garbage" * 64 if cut is None else snapshot.read_bytes()[: int(snapshot.stat().st_size * cut)])
    for name in ("translated_shard_1", "translated_shard_01"):  # one shard number twice: which steps, in which order?
        writable_copy(shard, root / "openx_shard_twice" / name)
    (root / "overcooked_hostile").mkdir()
    (root / "overcooked_hostile" / "trials.pickle").write_bytes(pickle.dumps([_Payload(root / "pwned")]))
    (root / "piqa_bad_line").mkdir()
    lines = (data_dir / "piqa" / "public" / "piqa.jsonl").read_text().splitlines()
    (root / "piqa_bad_line" / "piqa.jsonl").write_text("\n".join([lines[0], lines[1], lines[2][:-9], *lines[3:]]) + "\n")
    odinw = writable_copy(data_dir / "odinw" / "public", root / "odinw_no_categories")
    categories_path = sorted(odinw.glob("*/categories.json"))[0]
    categories = json.loads(categories_path.read_text())
    del categories["categories"]  # MultiNet's options: without them there is no prompt to build
    categories_path.write_text(json.dumps(categories))
    _build_bad_data(root, data_dir)

    checkpoint = pathlib.Path(assets["checkpoint"])
    torn = writable_copy(checkpoint, root / "ckpt_torn")
    largest = max((p for p in (torn / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    index = sorted((writable_copy(checkpoint, root / "ckpt_torn_index") / "params" / "d").iterdir())  # OCDBT's B-tree
    assert index, "orbax wrote no B-tree node files under params/d"
    for node in index:
        node.write_bytes(node.read_bytes()[: node.stat().st_size // 2])
    _nan_checkpoint(root / "ckpt_nan")
    # torn weights too: the refusal must come before any weight is read
    shutil.rmtree(writable_copy(torn, root / "ckpt_torn_no_norm_stats") / "assets")
    state_only = next((writable_copy(torn, root / "ckpt_torn_state_stats_only") / "assets").rglob("norm_stats.json"))
    state_only.write_text(json.dumps({"norm_stats": {"state": json.loads(state_only.read_text())["norm_stats"]["state"]}}))
    stats = writable_copy(checkpoint, root / "ckpt_bad_norm_stats")
    (next((stats / "assets").rglob("norm_stats.json"))).write_text('{"norm_stats": {"actions": {"std": [1]}}}')
    two_assets = writable_copy(checkpoint, root / "ckpt_two_assets") / "assets"
    shutil.copytree(two_assets / "demo", two_assets / "physical-intelligence" / "libero")  # openpi's nested asset ids
    minilm = shared_path("models", "all-MiniLM-L6-v2")  # linked, but for a pooling config asking for the CLS token
    (root / "embedder_cls" / "1_Pooling").mkdir(parents=True)
    for source in minilm.iterdir():
        if source.is_file():
            (root / "embedder_cls" / source.name).symlink_to(source)
    pooling = json.loads((minilm / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    (root / "embedder_cls" / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (root / "misnamed").mkdir()
    (root / "misnamed" / "pi0_fast_droid").symlink_to(checkpoint)  # the demo's Pi0, under a Pi0-FAST config's name
    npz = demo.build_checkpoint("paligemma", root / "paligemma.npz")
    with np.load(npz, allow_pickle=False) as arrays:
        np.savez(root / "incomplete.npz", **{key: arrays[key] for key in arrays.files if not key.endswith("LayerNorm_1/bias")})
    (root / "torn.npz").write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    fast = writable_copy(pathlib.Path(assets["fast_checkpoint"]), root / "fast_without_state_quantiles")
    fast_stats = next((fast / "assets").rglob("norm_stats.json"))
    raw = json.loads(fast_stats.read_text())
    raw["norm_stats"]["state"] = {key: raw["norm_stats"]["state"][key] for key in ("mean", "std")}  # no q01/q99
    fast_stats.write_text(json.dumps(raw))
    (root / "garbage.model").write_bytes(b"\x08garbage tokenizer")
    _larger_tokenizer(pathlib.Path(assets["tokenizer"]), root / "larger.model")
    _build_bad_checkpoints(root, assets)

    (root / "piqa_only" / "piqa").mkdir(parents=True)
    shutil.copytree(data_dir / "piqa" / "public", root / "piqa_only" / "piqa" / "public")
    overcooked = writable_copy(data_dir / "overcooked_ai", root / "bad_row" / "overcooked_ai")
    trials = overcooked / "public" / "2020_hh_trials_train.pickle"
    rows = pickle.loads(trials.read_bytes())
    rows[5]["state"] = "not base64 png"
    trials.write_bytes(pickle.dumps(rows))
    eval_helpers.evaluate(root / "finished_run", ("piqa",), limit=2)
    corrupt = shutil.copytree(root / "finished_run", root / "corrupt_predictions")
    (corrupt / "predictions" / "piqa.jsonl").write_text('{"id": "0", "sample_index": 0\n{"id": "1"}\n')
    (shutil.copytree(root / "finished_run", root / "torn_manifest") / "run_manifest.json").write_text('{"format": ')
    (shutil.copytree(root / "finished_run", root / "no_manifest") / "run_manifest.json").unlink()
    recorded_path = shutil.copytree(root / "finished_run", root / "other_ground_truth") / "run_manifest.json"
    recorded = json.loads(recorded_path.read_text())
    recorded["domains"]["piqa"]["protocol"]["ground_truth"] = "last_7_of_14_dims"  # scored against another ground truth
    recorded_path.write_text(json.dumps(recorded))
    inputs.held.append(preflight.lock_output_dir(root / "busy_run"))  # as another eval writing there holds it
    return inputs


# ------------------------------------------------------------------------------------------------ cases


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    command: str
    argv: Callable[[Inputs], list[str]]
    expected: Callable[[Inputs], str]  # regex for the line after "error: "
    mid_run: bool = False  # the run made progress first: its progress bar precedes the error line


def _eval(i: Inputs, domains=("piqa",), output: str = "out", **overrides) -> list[str]:
    """`eval` flags for a tiny Pi0 run on the demo data, into `eval_runs/<output>` unless `output_dir` is given."""
    output_dir = overrides.pop("output_dir", i.root / "eval_runs" / output)
    return eval_helpers.flags(output_dir, domains, **overrides)


E = re.escape
CASES = [
    # score: JSONL and its flags
    Case("score_missing_file", "score", lambda i: ["--domain=piqa", f"--predictions={i.nope}", f"--output={i.m}"],
         lambda i: f"{E(str(i.nope))}: No such file or directory"),
    Case("score_output_is_predictions", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/good.jsonl", f"--output={i.root}/score/../score/good.jsonl"],
         lambda i: f"{E(str(i.root))}/score/../score/good.jsonl: --output is the --predictions file; writing the metrics would destroy it"),
    Case("score_output_is_a_hard_link_to_predictions", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/linked.jsonl", f"--output={i.root}/score/linked_output.json"],
         lambda i: f"{E(str(i.root))}/score/linked_output.json: --output is the --predictions file; writing the metrics would destroy it"),
    Case("score_duplicate_id", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/duplicate.jsonl", f"--output={i.m}"],
         lambda i: f"{E(str(i.root))}/score/duplicate.jsonl:4: field 'id': duplicate id '1', first at line 2"),
    Case("score_not_json", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/not_json.jsonl", f"--output={i.m}"],
         lambda i: f"{E(str(i.root))}/score/not_json.jsonl:2: not valid JSON: .*"),
    Case("score_multinet_harness_outputs", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/harness_outputs.jsonl", f"--output={i.m}"],
         lambda i: f"{E(str(i.root))}/score/harness_outputs.jsonl:1: field 'prediction': a MultiNet harness output "
                   r"\(keys \['extracted_outputs', 'raw_output'\]\); put its 'extracted_outputs' in 'prediction' .*"),
    Case("score_not_an_object", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/not_object.jsonl", f"--output={i.m}"],
         lambda i: f"{E(str(i.root))}/score/not_object.jsonl:1: expected a JSON object, got list"),
    Case("score_missing_field", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/missing_truth.jsonl", f"--output={i.m}"],
         lambda i: f"{E(str(i.root))}/score/missing_truth.jsonl:2: field 'ground_truth': missing"),
    Case("score_odinw_of_several_subsets_unnamed", "score", lambda i: ["--domain=odinw", f"--predictions={i.root}/score/odinw_subsets_unnamed.jsonl", f"--output={i.m}"],
         lambda i: f"{E(str(i.root))}/score/odinw_subsets_unnamed.jsonl:3: field 'subset': missing, and the records have 2 option counts .*"),
    Case("score_huge_ground_truth", "score", lambda i: ["--domain=openx", f"--predictions={i.root}/score/huge_truth.jsonl", f"--output={i.m}"],
         lambda i: f"{E(str(i.root))}/score/huge_truth.jsonl:2: field 'ground_truth': holds 1e\\+300, beyond \\+-1e\\+06 .*"),
    Case("score_not_utf8", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/not_utf8.jsonl", f"--output={i.m}"],
         lambda i: f"{E(str(i.root))}/score/not_utf8.jsonl:2: not UTF-8 text \\(invalid start byte at byte 8\\)"),
    Case("score_action_stats_for_piqa", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/good.jsonl", f"--output={i.m}", f"--action_stats={i.root}/score/stats_swapped.json"],
         lambda i: "--action_stats are Open-X's action statistics; --domain=piqa scores no actions"),
    Case("score_embedder_for_openx", "score", lambda i: ["--domain=openx", f"--predictions={i.root}/score/good.jsonl", f"--output={i.m}", f"--embedder_dir={i.nope}"],
         lambda i: "--embedder_dir is for the text-similarity metrics of sqa3d, robovqa and bfcl; --domain=openx has none"),
    Case("score_action_stats_not_json", "score", lambda i: ["--domain=openx", f"--predictions={i.root}/score/good.jsonl", f"--output={i.m}", f"--action_stats={i.root}/score/stats.json"],
         lambda i: f"{E(str(i.root))}/score/stats.json: not a JSON file .*"),
    Case("score_action_stats_from_a_text_domains_metrics_file", "score", lambda i: ["--domain=openx", f"--predictions={i.root}/score/good.jsonl", f"--output={i.m}", f"--action_stats={i.root}/score/piqa_metrics.json"],
         lambda i: f"{E(str(i.root))}/score/piqa_metrics.json: a metrics file without 'scoring_action_stats' .*"),
    Case("score_action_stats_min_above_max", "score", lambda i: ["--domain=openx", f"--predictions={i.root}/score/good.jsonl", f"--output={i.m}", f"--action_stats={i.root}/score/stats_swapped.json"],
         lambda i: f"{E(str(i.root))}/score/stats_swapped.json: action_stats: 'min' above 'max' in 1 of 2 dims, first dim 1: min 1, max -1"),
    Case("score_output_under_a_file", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/good.jsonl", f"--output={i.a_file}/m.json"],
         lambda i: f"{E(str(i.a_file))}: (File exists|Not a directory)"),
    Case("score_unknown_domain", "score", lambda i: ["--domain=atari", f"--predictions={i.root}/score/good.jsonl", f"--output={i.m}"],
         lambda i: "unknown domain 'atari'; known: .*"),
    Case("score_missing_flag", "score", lambda i: ["--domain=piqa"],
         lambda i: r"flag --predictions=None: Flag --predictions must have a value other than None\. \| .* \(see multinet-jax score --help\)"),
    Case("score_unknown_flag", "score", lambda i: ["--domain=piqa", "--predictons=x.jsonl", "--output=m.json"],
         lambda i: r"Unknown command line flag 'predictons'.*\(see multinet-jax score --help\)"),
    Case("score_positional_argument", "score", lambda i: ["--domain=piqa", f"--predictions={i.root}/score/good.jsonl", f"--output={i.m}", "extra"],
         lambda i: "unexpected arguments: extra"),
    # data: folders, shards, records, hostile files, flags
    Case("data_missing_dir", "data", lambda i: ["--domain=piqa", f"--data_dir={i.nope}"],
         lambda i: f"piqa: data_dir {E(str(i.nope))} is not a directory"),
    Case("data_dir_is_a_file", "data", lambda i: ["--domain=piqa", f"--data_dir={i.a_file}"],
         lambda i: f"piqa: data_dir {E(str(i.a_file))} is not a directory"),
    Case("data_unknown_split", "data", lambda i: ["--domain=openx_bimanual", f"--data_dir={i.assets['data_dir']}/openx_bimanual", "--split=nosuch"],
         lambda i: f"{E(i.assets['data_dir'])}/openx_bimanual/nosuch: no such split folder of openx_bimanual \\(its folders: public\\)"),
    Case("data_limit_zero", "data", lambda i: ["--domain=piqa", f"--data_dir={i.assets['data_dir']}/piqa", "--split=public", "--limit=0"],
         lambda i: "limit must be a positive number of samples, got 0"),
    Case("data_not_openx", "data", lambda i: ["--domain=openx_bimanual", f"--data_dir={i.score}", f"--cache_dir={i.cache}"],
         lambda i: f"{E(str(i.score))}: not an Open-X dataset: expected .*"),
    Case("data_garbage_shard", "data", lambda i: ["--domain=openx_bimanual", f"--data_dir={i.openx_garbage}", f"--cache_dir={i.cache}"],
         lambda i: f"{E(str(i.openx_garbage))}/translated_shard_0: unreadable tf.data snapshot \\(DataLossError: .*\\)"),
    Case("data_shard_number_twice", "data", lambda i: ["--domain=openx_bimanual", f"--data_dir={i.openx_shard_twice}", f"--cache_dir={i.cache}"],
         lambda i: f"{E(str(i.openx_shard_twice))}: translated_shard_01 and translated_shard_1 are both shard 1; remove one"),
    Case("data_torn_shard", "data", lambda i: ["--domain=openx_bimanual", f"--data_dir={i.openx_torn}", f"--cache_dir={i.cache}"],
         lambda i: f"{E(str(i.openx_torn))}/translated_shard_0: (unreadable tf.data snapshot .*|snapshot.metadata records 12 elements but the shard's files hold \\d+ .*)"),
    Case("data_hostile_pickle", "data", lambda i: ["--domain=overcooked_ai", f"--data_dir={i.overcooked_hostile}"],
         lambda i: f"{E(str(i.overcooked_hostile))}/trials.pickle: refusing to unpickle (posix|os).system: .*"),
    Case("data_bad_jsonl_line", "data", lambda i: ["--domain=piqa", f"--data_dir={i.piqa_bad_line}"],
         lambda i: "piqa: record piqa.jsonl:3: field '<line>': invalid JSON: .*"),
    Case("data_odinw_without_categories", "data", lambda i: ["--domain=odinw", f"--data_dir={i.odinw_no_categories}"],
         lambda i: f"{E(str(sorted(i.odinw_no_categories.glob('*/categories.json'))[0]))}: categories: "
                   "expected a list of \\{name, supercategory\\} objects, got None"),
    # data: values that decode but cannot be scored right; the same checks eval applies (issue 25)
    Case("data_openx_nan_action", "data", lambda i: ["--domain=openx_bimanual", f"--data_dir={i.openx_nan_action}", f"--cache_dir={i.cache}"],
         lambda i: f"{E(str(i.openx_nan_action))}: record translated_shard_0/3: field 'action': value nan at dim 2 is not a "
                   "finite number within \\+-1e\\+06 \\(corrupt data\\?\\)"),
    Case("data_openx_huge_action", "data", lambda i: ["--domain=openx_bimanual", f"--data_dir={i.openx_huge_action}", f"--cache_dir={i.cache}"],
         lambda i: f"{E(str(i.openx_huge_action))}: record translated_shard_0/3: field 'action': value 3e\\+38 at dim 2 .*"),
    Case("data_openx_instruction_not_utf8", "data", lambda i: ["--domain=openx_bimanual", f"--data_dir={i.openx_not_utf8}", f"--cache_dir={i.cache}"],
         lambda i: f"{E(str(i.openx_not_utf8))}: step translated_shard_0/4: field 'language_instruction' is not UTF-8 text "
                   "\\(invalid start byte at byte 0\\)"),
    Case("data_openx_corrupt_dataset_spec", "data", lambda i: ["--domain=openx_bimanual", f"--data_dir={i.openx_bad_spec}", f"--cache_dir={i.cache}"],
         lambda i: f"{E(str(i.openx_bad_spec))}/translated_shard_0: unreadable tf.data snapshot \\(DecodeError: .*\\)"),
    Case("data_overcooked_joint_action_int", "data", lambda i: ["--domain=overcooked_ai", f"--data_dir={i.overcooked_int_action}"],
         lambda i: "overcooked_ai: record trials.pickle:3: field 'joint_action': '7' is not two moves of .* \\(MultiNet would have scored it as 28\\)"),
    Case("data_overcooked_joint_action_dance", "data", lambda i: ["--domain=overcooked_ai", f"--data_dir={i.overcooked_dance}"],
         lambda i: "overcooked_ai: record trials.pickle:3: field 'joint_action': not a joint action literal 'dance' \\(ValueError\\)"),
    Case("data_overcooked_nan_time_left", "data", lambda i: ["--domain=overcooked_ai", f"--data_dir={i.overcooked_nan_time}"],
         lambda i: "overcooked_ai: record trials.pickle:3: field 'time_left': 'nan' is not a number of seconds in \\[0, 86400\\]"),
    Case("data_overcooked_huge_time_elapsed", "data", lambda i: ["--domain=overcooked_ai", f"--data_dir={i.overcooked_huge_time}"],
         lambda i: "overcooked_ai: record trials.pickle:3: field 'time_elapsed': '1e300' is not a number of seconds in \\[0, 86400\\]"),
    Case("data_piqa_duplicate_id", "data", lambda i: ["--domain=piqa", f"--data_dir={i.piqa_duplicate_id}"],
         lambda i: "piqa: record piqa.jsonl:4: field 'id': duplicate id 'demo-piqa-1', first at piqa.jsonl:2"),
    Case("data_piqa_not_utf8", "data", lambda i: ["--domain=piqa", f"--data_dir={i.piqa_not_utf8}"],
         lambda i: "piqa: record piqa.jsonl:2: field '<line>': not UTF-8 text \\(invalid start byte at byte \\d+\\)"),
    Case("data_piqa_torn_arrow", "data", lambda i: ["--domain=piqa", f"--data_dir={i.piqa_torn_arrow}"],
         lambda i: f"{E(str(i.piqa_torn_arrow))}/data-00000-of-00001.arrow: not a readable Arrow IPC stream \\(.*\\)"),
    Case("data_bfcl_not_utf8", "data", lambda i: ["--domain=bfcl", f"--data_dir={i.bfcl_not_utf8}"],
         lambda i: "bfcl: record questions.jsonl:2: field '<line>': not UTF-8 text \\(invalid continuation byte at byte \\d+\\)"),
    Case("data_odinw_torn_categories", "data", lambda i: ["--domain=odinw", f"--data_dir={i.odinw_torn_categories}"],
         lambda i: f"{E(str(sorted(i.odinw_torn_categories.glob('*/categories.json'))[0]))}: not valid JSON \\(.*\\)"),
    Case("data_odinw_categories_list", "data", lambda i: ["--domain=odinw", f"--data_dir={i.odinw_categories_list}"],
         lambda i: f"{E(str(sorted(i.odinw_categories_list.glob('*/categories.json'))[0]))}: expected a JSON object with "
                   "categories, got a list"),
    Case("data_odinw_torn_pairs", "data", lambda i: ["--domain=odinw", f"--data_dir={i.odinw_torn_pairs}"],
         lambda i: f"{E(str(sorted(i.odinw_torn_pairs.glob('*/object_caption_pairs.json'))[0]))}: not valid JSON \\(.*\\)"),
    Case("data_bfcl_answer_twice", "data", lambda i: ["--domain=bfcl", f"--data_dir={i.bfcl_answer_twice}"],
         lambda i: f"bfcl: record answers.jsonl:{len((i.bfcl_answer_twice / 'answers.jsonl').read_bytes().splitlines())}: "
                   f"field 'id': duplicate id '{json.loads((i.bfcl_answer_twice / 'answers.jsonl').read_bytes().splitlines()[0])['id']}', "
                   "first at answers.jsonl:1"),
    Case("data_sqa3d_annotation_twice", "data", lambda i: ["--domain=sqa3d", f"--data_dir={i.sqa3d_annotation_twice}"],
         lambda i: "sqa3d: record v1_balanced_sqa_annotations_test_scannetv2.json\\[\\d+\\]: field 'id': duplicate id '\\d+', "
                   "first at v1_balanced_sqa_annotations_test_scannetv2.json\\[0\\]"),
    Case("data_sqa3d_torn_questions", "data", lambda i: ["--domain=sqa3d", f"--data_dir={i.sqa3d_torn_questions}"],
         lambda i: f"{E(str(i.sqa3d_torn_questions))}/v1_balanced_questions_test_scannetv2.json: not valid JSON \\(.*\\)"),
    Case("data_unknown_domain", "data", lambda i: ["--domain=atari", f"--data_dir={i.score}"],
         lambda i: "unknown domain 'atari'; known: .*"),
    Case("data_pickle_asking_for_gigabytes", "data", lambda i: ["--domain=overcooked_ai", f"--data_dir={i.overcooked_huge_bytes}"],
         lambda i: f"{E(str(i.overcooked_huge_bytes))}/trials.pickle: refusing to unpickle bytes\\(3000000000\\): larger than the file itself"),
    # fetch
    Case("fetch_offline_no_such_asset", "fetch", lambda i: ["--offline", "no_such_asset_xyz"],
         lambda i: "no_such_asset_xyz: no such file or directory, and no asset of that name; other openpi checkpoints: "
                   "gs://openpi-assets/checkpoints/<name>, hub repos: hf://owner/repo"),
    Case("fetch_offline_missing_path", "fetch", lambda i: ["--offline", str(i.nope)],
         lambda i: f"{E(str(i.nope))}: no such file or directory, and no asset of that name; .*"),
    Case("fetch_a_mistyped_name", "fetch", lambda i: ["pi0_bse"],
         lambda i: "pi0_bse: no such file or directory, and no asset of that name \\(did you mean pi0_base.*\\?\\); .*"),
    # report
    Case("report_torn_manifest", "report", lambda i: [str(i.finished_run), str(i.torn_manifest)],
         lambda i: f"{E(str(i.torn_manifest))}/run_manifest.json: unreadable run manifest \\(.*\\); use a new --output_dir"),
    Case("report_run_without_manifest", "report", lambda i: [str(i.finished_run), str(i.no_manifest)],
         lambda i: "no_manifest: no run_manifest.json \\(written by `multinet-jax eval`\\), so its data cannot be checked "
                   "against the other runs'; report it alone or re-run it"),
    # convert
    Case("convert_split_of_translated_shards", "convert",
         lambda i: [f"--input={i.assets['data_dir']}/openx_bimanual/public", f"--output={i.converted}", "--split=train"],
         lambda i: f"{E(i.assets['data_dir'])}/openx_bimanual/public: split 'train' names a TFDS split of an RLDS builder "
                   "folder; this folder holds translated shards, read whole"),
    Case("convert_stray_argument", "convert",
         lambda i: [f"--input={i.assets['data_dir']}/openx_bimanual/public", f"--output={i.converted}", "steps_per_file=2"],
         lambda i: "unexpected arguments: steps_per_file=2"),
    Case("data_stray_argument", "data", lambda i: ["--domain=piqa", f"--data_dir={i.assets['data_dir']}/piqa", "--json", "false"],
         lambda i: "unexpected arguments: false"),
    Case("convert_not_openx", "convert", lambda i: [f"--input={i.score}", f"--output={i.converted}"],
         lambda i: f"{E(str(i.score))}: not an Open-X dataset: expected .*"),
    Case("convert_output_under_a_file", "convert", lambda i: [f"--input={i.assets['data_dir']}/openx_bimanual/public", f"--output={i.a_file}/out"],
         lambda i: f"{E(str(i.a_file))}: (File exists|Not a directory)"),
    Case("convert_garbage_shard", "convert", lambda i: [f"--input={i.openx_garbage}", f"--output={i.converted}"],
         lambda i: f"{E(str(i.openx_garbage))}/translated_shard_0: unreadable tf.data snapshot \\(DataLossError: .*\\)"),
    # eval: checkpoints
    Case("eval_missing_checkpoint", "eval", lambda i: _eval(i, checkpoint=str(i.nope)),
         lambda i: f"{E(str(i.nope))}: no such checkpoint directory"),
    Case("eval_checkpoint_is_a_file", "eval", lambda i: _eval(i, checkpoint=str(i.a_file)),
         lambda i: f"{E(str(i.a_file))}: not a checkpoint format this project reads \\(known: openpi: .*huggingface_openvla: .*\\)"),
    # A failed read leaves none of orbax's other reads running: the eval cases after these would print what they print.
    Case("eval_truncated_checkpoint", "eval", lambda i: _eval(i, checkpoint=str(i.ckpt_torn)),
         lambda i: f"{E(str(i.ckpt_torn))}/params: could not read the parameter arrays \\(truncated or corrupt\\?\\): "
                   "ValueError: OUT_OF_RANGE: .* is not valid for value of size \\d+"),
    Case("eval_truncated_checkpoint_index", "eval", lambda i: _eval(i, checkpoint=str(i.ckpt_torn_index)),
         lambda i: f"{E(str(i.ckpt_torn_index))}/params: unreadable orbax checkpoint metadata \\(ValueError: OUT_OF_RANGE: "
                   ".* is not valid for value of size \\d+.*\\)"),
    Case("eval_nan_parameter", "eval", lambda i: _eval(i, checkpoint=str(i.ckpt_nan)),
         lambda i: f"{E(str(i.ckpt_nan))}/params: parameters \\['state_proj/kernel'\\] hold NaN or infinite values \\(corrupt checkpoint bytes\\?\\)"),
    Case("eval_bad_norm_stats", "eval", lambda i: _eval(i, checkpoint=str(i.ckpt_bad_norm_stats)),
         lambda i: f"{E(str(i.ckpt_bad_norm_stats))}/assets/demo/norm_stats.json: norm_stats\\['actions'\\] lacks 'mean'"),
    Case("eval_several_asset_ids", "eval", lambda i: _eval(i, checkpoint=str(i.ckpt_two_assets)),
         lambda i: f"{E(str(i.ckpt_two_assets))}/assets: norm stats for several asset ids \\['demo', 'physical-intelligence/libero'\\]; "
                   "pass --asset_id .*"),
    Case("eval_unknown_asset_id", "eval", lambda i: _eval(i, asset_id="droid"),
         lambda i: f"{E(i.assets['checkpoint'])}/assets: no norm stats for --asset_id='droid' \\(the checkpoint has \\['demo'\\]\\)"),
    Case("eval_folder_named_for_another_familys_openpi_config", "eval",
         lambda i: _eval(i, checkpoint=str(i.misnamed / "pi0_fast_droid")),
         lambda i: f"{E(str(i.misnamed))}/pi0_fast_droid: its path names openpi's pi0_fast_droid config \\(a pi0_fast\\), "
                   "but its parameters are a pi0's: rename its folder, so that pi0_fast_droid's settings are not taken for it"),
    Case("eval_embedder_with_another_pooling", "eval",
         lambda i: _eval(i, domains=("sqa3d",), embedder_dir=str(i.embedder_cls)),
         lambda i: f"{E(str(i.embedder_cls))}/1_Pooling/config.json: pooling \\['pooling_mode_cls_token'\\]: only mean "
                   "pooling \\(all-MiniLM-L6-v2's\\) is implemented"),
    Case("eval_model_family_mismatch", "eval", lambda i: _eval(i, model="pi0_fast", fast_tokenizer=i.assets["fast_tokenizer"]),
         lambda i: f"{E(i.assets['checkpoint'])}: holds a pi0 model \\(from its parameters\\), but --model=pi0_fast; pass --model=pi0 or leave --model out"),
    Case("eval_npz_missing_keys", "eval", lambda i: _eval(i, model="paligemma", checkpoint=str(i.incomplete) + ".npz"),
         lambda i: f"{E(str(i.incomplete))}.npz: parameter paths differ from the model's: missing "
                   "\\['params/img/Transformer/encoderblock/LayerNorm_1/bias'\\], unexpected \\[\\]"),
    Case("eval_npz_truncated", "eval", lambda i: _eval(i, checkpoint=str(i.torn) + ".npz"),
         lambda i: f"{E(str(i.torn))}.npz: not a readable npz \\(BadZipFile: .*\\)"),
    Case("eval_paligemma_action_domain", "eval", lambda i: _eval(i, model="paligemma", checkpoint=str(i.paligemma) + ".npz", domains=("openx_bimanual",)),
         lambda i: "--model=paligemma has no action head: --domains \\['openx_bimanual'\\] need actions \\(it evaluates text domains and act2answer's text probe\\)"),
    Case("eval_no_state_quantiles", "eval",
         lambda i: _eval(i, domains=("openx_bimanual",), model="pi0_fast", checkpoint=str(i.fast_without_state_quantiles),
                         fast_tokenizer=i.assets["fast_tokenizer"]),
         lambda i: f"{E(str(i.fast_without_state_quantiles))}: the Pi0\\.5 / Pi0-FAST prompt holds the state quantile-normalized "
                   ".*; --nonormalize_state discretizes the state as the data gives it"),
    Case("eval_nan_norm_stats", "eval", lambda i: _eval(i, checkpoint=str(i.ckpt_nan_norm_stats)),
         lambda i: f"{E(str(i.ckpt_nan_norm_stats))}/assets/demo/norm_stats.json: norm_stats\\['actions'\\]\\['std'\\] holds NaN "
                   "or infinite values"),
    Case("eval_flipped_bit_in_a_fetched_checkpoint", "eval", lambda i: _eval(i, checkpoint=pathlib.Path(i.assets["checkpoint"]).as_uri()),
         lambda i: f".*/params/.*: its sha256 [0-9a-f]{{16}}\\.\\.\\. differs from the [0-9a-f]{{16}}\\.\\.\\. that "
                   f".*{E(pathlib.Path(i.assets['checkpoint']).name)}\\.complete\\.json records: the file is corrupt or was edited"),
    Case("eval_npz_nan_parameter", "eval", lambda i: _eval(i, model="paligemma", checkpoint=str(i.paligemma_nan) + ".npz"),
         lambda i: f"{E(str(i.paligemma_nan))}.npz: parameters \\['params/llm/final_norm/scale'\\] hold NaN or infinite values "
                   "\\(corrupt checkpoint bytes\\?\\)"),
    Case("eval_negative_std_in_norm_stats", "eval", lambda i: _eval(i, checkpoint=str(i.ckpt_negative_std)),
         lambda i: f"{E(str(i.ckpt_negative_std))}/assets/demo/norm_stats.json: norm_stats\\['actions'\\]: 'std' is negative "
                   "in 1 of 32 dims, first dim 2: -0.5"),
    Case("eval_openvla_q01_above_q99", "eval", lambda i: _eval(i, model="openvla", checkpoint=str(i.openvla_swapped_quantiles), tokenizer=None),
         lambda i: f"{E(str(i.openvla_swapped_quantiles))}/config.json: norm_stats\\['[^']+'\\]\\['action'\\]: 'q01' above 'q99' "
                   "in \\d+ of \\d+ dims, first dim \\d+: q01 .*, q99 .*"),
    Case("eval_openvla_nan_q01", "eval", lambda i: _eval(i, model="openvla", checkpoint=str(i.openvla_nan_q01), tokenizer=None),
         lambda i: f"{E(str(i.openvla_nan_q01))}/config.json: norm_stats\\['[^']+'\\]\\['action'\\]\\['q01'\\] holds NaN or "
                   "infinite values"),
    Case("eval_openvla_transposed_tensor", "eval", lambda i: _eval(i, model="openvla", checkpoint=str(i.openvla_transposed), tokenizer=None),
         lambda i: f"{E(str(i.openvla_transposed))}: .*\\[1\\] \\(from \\['language_model.model.layers.1.mlp.down_proj.weight'\\]\\): "
                   "expected shape \\(\\d+, \\d+\\), the checkpoint gives \\(\\d+, \\d+\\)"),
    Case("eval_openvla_malformed_config", "eval", lambda i: _eval(i, model="openvla", checkpoint=str(i.openvla_bad_config), tokenizer=None),
         lambda i: f"{E(str(i.openvla_bad_config))}/config.json: unreadable JSON \\(JSONDecodeError: .*\\)"),
    # checked from the checkpoint's small files before its weights load (`preflight.check_checkpoint_inputs`)
    Case("eval_magma_act2answer_without_unnorm_key", "eval",
         lambda i: _eval(i, domains=("act2answer",), model="magma", checkpoint=str(i.magma_torn_weights), tokenizer=None,
                         max_decoding_steps=8),
         lambda i: f"{E(str(i.magma_torn_weights))}: the actions of act2answer are unnormalized with the checkpoint's "
                   "statistics, which hold \\['bridge_orig', 'google_robot'\\]: pass --unnorm_key \\(one of them\\)"),
    # the family's own protocol on each domain, from flags alone (`preflight.check_protocols`)
    # MultiNet's VLM quadrupedal instruction describes saytap's 12 joints: a split of other dims is refused at preflight
    Case("eval_magma_quadrupedal_of_other_dims", "eval",
         lambda i: _eval(i, domains=("openx_quadrupedal",), model="magma", checkpoint=str(i.magma_torn_weights),
                         tokenizer=None, data_dir=str(i.quadrupedal_14_dims)),
         lambda i: f"{E(str(i.quadrupedal_14_dims))}/openx_quadrupedal/public: openx_quadrupedal: the split's actions have 14 dims, "
                   "MultiNet's utokyo_saytap_converted_externally_to_rlds definitions describe 12"),
    Case("eval_magma_budget_below_its_action_ids", "eval",
         lambda i: _eval(i, domains=("openx_bimanual",), model="magma", checkpoint=str(i.magma_torn_weights), tokenizer=None,
                         max_decoding_steps=7),
         lambda i: "--max_decoding_steps=7: --model=magma on openx_bimanual reads 7 action ids and the token after them "
                   "\\(protocol multinet_v1_magma\\): pass at least 8"),
    Case("eval_openvla_unknown_unnorm_key", "eval",
         lambda i: _eval(i, domains=("act2answer",), model="openvla", checkpoint=str(i.openvla_source), tokenizer=None,
                         unnorm_key="bridge_orig"),
         lambda i: f"{E(str(i.openvla_source))}: --unnorm_key='bridge_orig' is not one of its action statistics \\['demo'\\]"),
    Case("eval_openvla_act2answer_without_action_stats", "eval",
         lambda i: _eval(i, domains=("act2answer",), model="openvla", checkpoint=str(i.openvla_no_action_stats), tokenizer=None),
         lambda i: f"{E(str(i.openvla_no_action_stats))}/config.json: norm_stats\\['demo'\\]: no 'action' statistics "
                   "\\(it holds \\[.*\\]\\): the actions of act2answer are unnormalized with these statistics"),
    Case("eval_openvla_load_with_an_entry_without_action_stats", "eval",  # its action dimension is read from every entry
         lambda i: _eval(i, domains=("openx_bimanual",), model="openvla", checkpoint=str(i.openvla_no_action_stats), tokenizer=None),
         lambda i: f"{E(str(i.openvla_no_action_stats))}/config.json: norm_stats\\['demo'\\]: no 'action' statistics "
                   "\\(it holds \\[.*\\]\\)$"),
    Case("eval_openvla_unnormalize_checkpoint_without_q99", "eval",
         lambda i: _eval(i, domains=("openx_bimanual",), model="openvla", checkpoint=str(i.openvla_no_q99), tokenizer=None,
                         unnormalize="checkpoint"),
         lambda i: f"{E(str(i.openvla_no_q99))}/config.json: norm_stats\\['demo'\\]: action has no 'q99' \\(it holds "
                   "\\[.*\\]\\): the actions of openx_bimanual are unnormalized with these statistics"),
    Case("eval_pi0_act2answer_without_norm_stats", "eval",
         lambda i: _eval(i, domains=("act2answer",), checkpoint=str(i.ckpt_torn_no_norm_stats)),
         lambda i: f"{E(str(i.ckpt_torn_no_norm_stats))}: the actions of act2answer are unnormalized with the checkpoint's "
                   "statistics, but it holds none \\(nothing for --asset_id to pick\\)"),
    Case("eval_pi0_act2answer_without_action_stats", "eval",
         lambda i: _eval(i, domains=("act2answer",), checkpoint=str(i.ckpt_torn_state_stats_only)),
         lambda i: f"{E(str(i.ckpt_torn_state_stats_only))}/assets/demo/norm_stats.json: norm_stats has no 'actions' key "
                   "\\(it holds \\['state'\\]\\): the actions of act2answer are unnormalized with these statistics"),
    Case("eval_pi0_unnormalize_checkpoint_without_action_stats", "eval",
         lambda i: _eval(i, domains=("openx_bimanual",), unnormalize="checkpoint", checkpoint=str(i.ckpt_torn_state_stats_only)),
         lambda i: f"{E(str(i.ckpt_torn_state_stats_only))}/assets/demo/norm_stats.json: norm_stats has no 'actions' key "
                   "\\(it holds \\['state'\\]\\): the actions of openx_bimanual are unnormalized with these statistics"),
    Case("eval_pi0_act2answer_several_asset_ids", "eval",
         lambda i: _eval(i, domains=("act2answer",), checkpoint=str(i.ckpt_two_assets)),
         lambda i: f"{E(str(i.ckpt_two_assets))}: the actions of act2answer are unnormalized with the checkpoint's "
                   "statistics, which hold \\['demo', 'physical-intelligence/libero'\\]: pass --asset_id \\(one of them\\)"),
    Case("eval_smolvla_domain_without_state", "eval",
         lambda i: _eval(i, domains=("overcooked_ai",), model="smolvla", checkpoint=str(i.smolvla_demo), tokenizer=None),
         lambda i: f"{E(i.assets['data_dir'])}/overcooked_ai: overcooked_ai sample '[^']+': field 'state': none, but "
                   f"{E(str(i.smolvla_demo))}/config.json input_features observation.state reads 12 dims: the model would "
                   "act on a made-up zero state; evaluate a domain whose data holds it"),
    Case("eval_smolvla_state_of_another_size", "eval",
         lambda i: _eval(i, domains=("openx_bimanual",), model="smolvla", checkpoint=str(i.smolvla_6_dim_state), tokenizer=None),
         lambda i: f"{E(i.assets['data_dir'])}/openx_bimanual: openx_bimanual sample '[^']+': field 'state': 12 dims, but "
                   f"{E(str(i.smolvla_6_dim_state))}/config.json input_features observation.state reads 6: evaluate a "
                   "checkpoint trained on this robot's state"),
    Case("eval_tokenizer_for_openvla", "eval", lambda i: _eval(i, model="openvla", checkpoint=str(i.openvla_source)),
         lambda i: "--tokenizer is for --model=pi0\\|pi05\\|pi0_fast\\|paligemma, not --model=openvla \\(its checkpoint bundles its own\\)"),
    Case("probe_tokenizer_for_openvla", "probe",
         lambda i: [f"--checkpoint={i.openvla_source}", "--tokenizer=t.model", f"--data_dir={i.nope}",
                    f"--output_dir={i.root / 'probe_runs' / 'openvla_tokenizer'}"],
         lambda i: "--tokenizer is for --model=pi0\\|pi05\\|pi0_fast\\|paligemma, not --model=openvla \\(its checkpoint bundles its own\\)"),
    Case("probe_max_token_len_for_openvla", "probe",
         lambda i: [f"--checkpoint={i.openvla_source}", "--max_token_len=32", f"--data_dir={i.nope}",
                    f"--output_dir={i.root / 'probe_runs' / 'openvla_max_token_len'}"],
         lambda i: "--max_token_len is for --model=pi0\\|pi05\\|pi0_fast\\|paligemma, not --model=openvla \\(its checkpoint "
                   "bundles its tokenizer, which cuts its prompts at its own length\\)"),
    Case("probe_flow_steps_for_token_actions", "probe",
         lambda i: [f"--checkpoint={i.openvla_source}", "--num_flow_steps=3", f"--data_dir={i.nope}",
                    f"--output_dir={i.root / 'probe_runs' / 'openvla_flow_steps'}"],
         lambda i: "--num_flow_steps is for --model=pi0\\|pi05\\|smolvla, not --model=openvla \\(it samples no flow\\)"),
    Case("eval_corrupt_fast_tokenizer", "eval",
         lambda i: _eval(i, model="pi0_fast", checkpoint=i.assets["fast_checkpoint"], fast_tokenizer=str(i.fast_torn_tokenizer)),
         lambda i: f"{E(str(i.fast_torn_tokenizer))}/tokenizer.json: not a Hugging Face tokenizers file \\(.*\\)"),
    # eval: tokenizers
    Case("eval_garbage_tokenizer", "eval", lambda i: _eval(i, tokenizer=f"{i.root}/garbage.model"),
         lambda i: f"{E(str(i.root))}/garbage.model: not a SentencePiece model \\(.*\\)"),
    Case("eval_tokenizer_is_a_folder", "eval", lambda i: _eval(i, tokenizer=str(i.root)),
         lambda i: f"{E(str(i.root))}: no such PaliGemma tokenizer file \\(it is a directory\\); .*"),
    Case("eval_tokenizer_vocabulary_mismatch", "eval", lambda i: _eval(i, tokenizer=f"{i.root}/larger.model"),
         lambda i: f"{E(str(i.root))}/larger.model: a 1029-piece tokenizer, but {E(i.assets['checkpoint'])} embeds 1024 tokens; .*"),
    # eval: flags
    Case("eval_zero_flow_steps", "eval", lambda i: _eval(i, num_flow_steps=0), lambda i: "--num_flow_steps must be positive, got 0"),
    Case("eval_max_token_len_for_openvla", "eval",
         lambda i: _eval(i, model="openvla", checkpoint=str(i.openvla_source), tokenizer=None, max_token_len=16),
         lambda i: "--max_token_len is for --model=pi0\\|pi05\\|pi0_fast\\|paligemma, not --model=openvla \\(its checkpoint "
                   "bundles its tokenizer, which cuts its prompts at its own length\\)"),
    Case("eval_flow_steps_for_token_actions", "eval",
         lambda i: _eval(i, model="openvla", checkpoint=str(i.openvla_source), tokenizer=None, num_flow_steps=3),
         lambda i: "--num_flow_steps is for --model=pi0\\|pi05\\|smolvla, not --model=openvla \\(it samples no flow\\)"),
    Case("eval_zero_decoding_steps", "eval", lambda i: _eval(i, max_decoding_steps=0), lambda i: "--max_decoding_steps must be positive, got 0"),
    Case("eval_zero_max_token_len", "eval", lambda i: _eval(i, max_token_len=0), lambda i: "--max_token_len must be positive, got 0"),
    Case("eval_zero_limit", "eval", lambda i: _eval(i, limit=0), lambda i: "--limit must be positive, got 0"),
    Case("eval_odd_limit_for_act2answer", "eval", lambda i: _eval(i, domains=("piqa", "act2answer"), limit=5),
         lambda i: r"--limit=5 is odd: Act2Answer's samples are items in both layouts \(original, then swapped\), and an "
                   "item is scored in both or not at all; pass an even --limit"),
    Case("eval_temperature_without_text_domains", "eval", lambda i: _eval(i, domains=("openx_bimanual", "act2answer"), temperature=0.9),
         lambda i: r"--temperature=0.9 samples text answers; --domains \['openx_bimanual', 'act2answer'\] decode none under "
                   r"--model=pi0 \(their actions and probes are greedy or sampled at their protocol's temperature\)"),
    Case("eval_decoding_budget_for_flow_actions", "eval", lambda i: _eval(i, domains=("openx_bimanual", "act2answer"), max_decoding_steps=8),
         lambda i: r"--max_decoding_steps bounds decoded tokens; --domains \['openx_bimanual', 'act2answer'\] decode none under "
                   r"--model=pi0 \(its actions come by flow matching; Act2Answer's text probe scores options\)"),
    Case("eval_decoding_budget_for_openvla_actions", "eval",
         lambda i: _eval(i, domains=("openx_bimanual",), model="openvla", checkpoint=str(i.openvla_source), tokenizer=None,
                         max_decoding_steps=8),
         lambda i: r"--max_decoding_steps bounds decoded tokens; --domains \['openx_bimanual'\] decode none under "
                   r"--model=openvla \(its actions come one token per action dim; .*\)"),
    Case("eval_max_token_len_for_state_prompts", "eval",
         lambda i: _eval(i, domains=("openx_bimanual",), model="pi0_fast", checkpoint=i.assets["fast_checkpoint"],
                         fast_tokenizer=i.assets["fast_tokenizer"], max_token_len=32),
         lambda i: r"--max_token_len cuts text prompts and Act2Answer's questions; --domains \['openx_bimanual'\] have none "
                   rf"under --model=pi0_fast, whose action prompts hold the state and are cut at {E(i.assets['fast_checkpoint'])}'s "
                   r"max_token_len \(\d+\)"),
    Case("eval_flow_steps_without_action_domains", "eval", lambda i: _eval(i, domains=("piqa",), num_flow_steps=3),
         lambda i: r"--num_flow_steps sets how actions are predicted; --domains \['piqa'\] predict none under --model=pi0"),
    Case("eval_unnormalize_without_scored_actions", "eval", lambda i: _eval(i, domains=("piqa", "act2answer"), unnormalize="checkpoint"),
         lambda i: r"--unnormalize=checkpoint picks the statistics an action domain's predictions are unnormalized with; "
                   r"--domains \['piqa', 'act2answer'\] have none under --model=pi0 \(Act2Answer's action probe always reads "
                   r"the checkpoint's\)"),
    Case("eval_negative_temperature", "eval", lambda i: _eval(i, temperature=-1.0), lambda i: r"--temperature must be >= 0 \(0 is greedy\), got -1.0"),
    Case("eval_seed_beyond_32_bits", "eval", lambda i: _eval(i, seed=2**32),
         lambda i: r"--seed must be in \[0, 2\^32\) \(jax's PRNG keys hold 32 bits: other seeds alias these\), got 4294967296"),
    Case("eval_negative_seed", "eval", lambda i: _eval(i, seed=-1), lambda i: r"--seed must be in \[0, 2\^32\) .*, got -1"),
    Case("eval_huge_max_token_len", "eval", lambda i: _eval(i, max_token_len=10**8), lambda i: "--max_token_len must be at most 8192, got 100000000"),
    Case("eval_huge_decoding_steps", "eval", lambda i: _eval(i, max_decoding_steps=10**8), lambda i: "--max_decoding_steps must be at most 8192, got 100000000"),
    Case("eval_huge_action_horizon", "eval", lambda i: _eval(i, action_horizon=10**8), lambda i: "--action_horizon must be at most 1024, got 100000000"),
    Case("eval_demo_under_a_published_name", "eval", lambda i: _eval(i, demo=True, checkpoint="pi0_base", output="demo_named"),
         lambda i: "--demo builds a random tiny model at --checkpoint, but 'pi0_base' names openpi checkpoint pi0_base: "
                   "drop --demo to evaluate it, or give --checkpoint a path of its own"),
    Case("eval_demo_into_real_data", "eval", lambda i: _eval(i, ("piqa", "sqa3d"), demo=True, data_dir=str(i.real_data), output="demo_mixed"),
         lambda i: f"--demo would write generated sqa3d data into {E(str(i.real_data))}, which holds data the demo did not "
                   "write \\(piqa; demo data of a version before this check is unmarked: remove it to have it rebuilt\\): "
                   "drop --demo to evaluate that data \\(domains without any are refused\\), or give --data_dir a folder of "
                   "its own"),
    Case("eval_demo_on_real_data", "eval", lambda i: _eval(i, ("piqa",), demo=True, data_dir=str(i.real_data), output="demo_real"),
         lambda i: f"--demo evaluates the data it generates, but {E(str(i.real_data))} holds piqa data it did not write "
                   "\\(demo data of a version before this check is unmarked: remove it to have it rebuilt\\): drop --demo "
                   "to evaluate that data, or give --data_dir a folder of its own"),
    Case("eval_duplicate_domain", "eval", lambda i: _eval(i, domains=("piqa", "odinw", "piqa")), lambda i: "--domains names piqa more than once"),
    Case("eval_unknown_split", "eval", lambda i: _eval(i, split="nosuch"),
         lambda i: f"{E(i.assets['data_dir'])}/piqa/nosuch: no such split folder of piqa \\(its folders: public\\)"),
    Case("eval_unknown_domain", "eval", lambda i: _eval(i, domains=("procgen",)), lambda i: "unknown domain 'procgen'.*"),
    # A typo of a domain scored with its own metrics would run as a generic Open-X dataset and lose them at the end.
    Case("eval_near_miss_openx_domain", "eval", lambda i: _eval(i, domains=("openx_bimanaul",)),
         lambda i: "unknown domain 'openx_bimanaul': did you mean 'openx_bimanual'\\?.*"),
    Case("eval_bad_dtype", "eval", lambda i: _eval(i, dtype="float16"),
         lambda i: r"flag --dtype=float16: value should be one of <float32\|bfloat16> \(see multinet-jax eval --help\)"),
    Case("eval_bad_mesh", "eval", lambda i: _eval(i, mesh="data:x"), lambda i: ".*data:x.*"),
    Case("eval_missing_flags", "eval", lambda i: ["--domains=piqa"], lambda i: "missing flags: --checkpoint, --data_dir"),
    # eval: data and outputs
    Case("eval_a_domain_missing", "eval", lambda i: _eval(i, domains=("piqa", "sqa3d"), data_dir=str(i.piqa_only), skip_similarity=True),
         lambda i: f"sqa3d: data_dir {E(str(i.piqa_only))}/sqa3d is not a directory"),
    Case("eval_huge_action_in_the_data", "eval", lambda i: _eval(i, domains=("openx_bimanual",), data_dir=str(i.huge_action_data), cache_dir=str(i.cache)),
         lambda i: f"{E(str(i.huge_action_data))}/openx_bimanual/public: record translated_shard_0/3: field 'action': value 1e\\+30 at dim 2 .*"),
    Case("eval_joint_action_needing_a_fallback", "eval", lambda i: _eval(i, domains=("overcooked_ai",), data_dir=str(i.int_action_data)),
         lambda i: "overcooked_ai: record trials.pickle:3: field 'joint_action': '7' is not two moves of .* \\(MultiNet would have scored it as 28\\)"),
    Case("eval_output_dir_is_a_file", "eval", lambda i: _eval(i, output_dir=str(i.a_file)),
         lambda i: f"{E(str(i.a_file))}: --output_dir is a file, not a folder"),
    Case("eval_results_exist", "eval", lambda i: _eval(i, output_dir=str(i.finished_run), limit=2),
         lambda i: f"{E(str(i.finished_run))}/predictions/piqa.jsonl exists; pass --resume to continue it or choose another --output_dir"),
    Case("eval_output_dir_busy", "eval", lambda i: _eval(i, output_dir=str(i.busy_run)),
         lambda i: f"{E(str(i.busy_run))}: another multinet-jax eval or probe is writing into this --output_dir \\(it holds "
                   "\\.multinet_jax\\.lock\\); wait for it to finish or choose another --output_dir"),
    Case("eval_resume_with_a_smaller_limit", "eval", lambda i: _eval(i, output_dir=str(i.finished_run), limit=1, resume=True),
         lambda i: f"{E(str(i.finished_run))}/predictions/piqa.jsonl: holds 2 predictions, more than --limit=1; a resume only "
                   "continues a run: pass --limit=2 or more \\(or none\\), or choose another --output_dir"),
    Case("eval_resume_changed_settings", "eval", lambda i: _eval(i, output_dir=str(i.finished_run), limit=2, resume=True, seed=7),
         lambda i: f"{E(str(i.finished_run))}/run_manifest.json: the results in this folder come from another run: --seed: recorded 0, now 7\\. .*"),
    Case("eval_resume_with_another_batch_size", "eval", lambda i: _eval(i, output_dir=str(i.finished_run), limit=2, resume=True, batch_size=2),
         lambda i: f"{E(str(i.finished_run))}/run_manifest.json: the results in this folder come from another run: "
                   "--batch_size: recorded 4, now 2\\. .*"),
    Case("eval_resume_across_a_ground_truth_transform", "eval",
         lambda i: _eval(i, output_dir=str(i.other_ground_truth), limit=2, resume=True),
         lambda i: f"{E(str(i.other_ground_truth))}/run_manifest.json: the results in this folder come from another run: "
                   "protocol of piqa: ground_truth \\(domains\\.piqa\\.protocol\\.ground_truth\\) recorded "
                   "'last_7_of_14_dims', now 'identity'\\. .*"),
    Case("eval_corrupt_predictions", "eval", lambda i: _eval(i, output_dir=str(i.corrupt_predictions), limit=2, resume=True),
         lambda i: f"{E(str(i.corrupt_predictions))}/predictions/piqa.jsonl: line 1 is not JSON .*"),
    Case("eval_domain_fails_mid_run", "eval", lambda i: _eval(i, domains=("overcooked_ai",), data_dir=str(i.bad_row), output="mid_run", limit=8),
         lambda i: f"{E(str(i.root))}/eval_runs/mid_run: 1 domain\\(s\\) failed, the summary marks them: overcooked_ai: BadRecordError: "
                   "overcooked_ai: record 2020_hh_trials_train.pickle:5: field 'state': not a base64 image: .*", mid_run=True),
]


@pytest.fixture(scope="session")
def cli_results(tmp_path_factory) -> tuple[Inputs, dict]:
    inputs = _build(tmp_path_factory.mktemp("bad_inputs"))
    results = {}
    batches: dict[str, list[Case]] = {}
    for case in CASES:
        batches.setdefault(case.command, []).append(case)
    for batch, cases in sorted(batches.items()):
        cases_path, results_path = inputs.root / f"{batch}_cases.json", inputs.root / f"{batch}_results.json"
        cases_path.write_text(json.dumps({case.name: [case.command, *case.argv(inputs)] for case in cases}))
        environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        environment.pop("XLA_FLAGS", None)
        subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "cli_batch.py"), str(cases_path), str(results_path)],
                       check=True, cwd=inputs.root, env=environment, timeout=900)
        results.update(json.loads(results_path.read_text()))
    return inputs, results


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_cli_bad_input_is_one_line_and_exit_code_2(case, cli_results):
    inputs, results = cli_results
    result = results[case.name]
    assert result["rc"] == 2, result
    stderr = result["stderr"]
    if case.mid_run:
        assert "Traceback" not in stderr and stderr.endswith("\n"), stderr
        stderr = stderr.rstrip("\n").rsplit("\n", 1)[-1].rsplit("\r", 1)[-1] + "\n"
    assert re.fullmatch(f"error: {case.expected(inputs)}\n", stderr), result["stderr"]


def test_a_wrong_attention_mode_in_the_environment_is_one_line(cli_results):
    inputs, _ = cli_results
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "MULTINET_JAX_ATTENTION": "flash"}
    environment.pop("XLA_FLAGS", None)
    result = subprocess.run([sys.executable, "-c", "from multinet_jax.cli import main; main()", "eval", *_eval(inputs, output="attention")],
                            capture_output=True, text=True, env=environment, cwd=inputs.root, timeout=600)
    assert (result.returncode, result.stderr) == (
        2, "error: $MULTINET_JAX_ATTENTION: 'flash' is not an attention mode (one of auto, reference, xla)\n")


def test_two_evals_started_together_into_one_folder_one_is_refused(tmp_path):
    """The same command twice, one second apart: one run writes the folder, the other is refused naming it, and the
    predictions hold each sample once."""
    arguments = eval_helpers.flags(tmp_path / "run", ("openx_bimanual",), limit=12, batch_size=1, num_flow_steps=20)
    first = eval_helpers.start_eval(arguments)
    time.sleep(1)
    second = eval_helpers.run_eval(arguments, timeout=600)
    first_output, _ = first.communicate(timeout=600)
    outcomes = sorted([(first.returncode, first_output), (second.returncode, second.stdout)], key=lambda item: item[0])
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert f"error: {tmp_path / 'run'}: another multinet-jax eval or probe is writing into this --output_dir" in outcomes[1][1]
    records = eval_helpers.read_jsonl(tmp_path / "run" / "predictions" / "openx_bimanual.jsonl")
    assert [record["sample_index"] for record in records] == list(range(12))
    # the lock dies with its holder: the folder is free again once the run ended
    preflight.lock_output_dir(tmp_path / "run").release()


def test_data_lists_a_nan_state_as_a_bad_record(cli_results):
    """A step whose state holds NaN is a bad record `data` names (and `eval` stops at), not a NaN fed to the model."""
    from multinet_jax import data

    inputs, _ = cli_results
    report = data.inspect("openx_bimanual", inputs.openx_nan_state, cache_dir=inputs.cache)
    assert report["bad_records"] == ["openx_bimanual: record translated_shard_0/2: field 'observation/pose_l': holds NaN "
                                     "or infinite values"]


def test_score_counts_json_booleans_as_invalid_predictions():
    """JSON `true` is no answer index and no action value: invalid, as a string would be (it used to count as 1)."""
    import multinet_jax

    piqa = multinet_jax.score("piqa", [{"id": "0", "prediction": True, "ground_truth": 1},
                                       {"id": "1", "prediction": 1, "ground_truth": 1}])
    assert (piqa["total_invalid_preds"], piqa["overall_accuracy"]) == (1, 0.5)
    openx = multinet_jax.score("openx", [{"id": "0", "prediction": [True, 0.5], "ground_truth": [1.0, 0.5]},
                                         {"id": "1", "prediction": [1.0, 0.5], "ground_truth": [1.0, 0.5]}])
    assert openx["total_invalid_preds"] == 1
    overcooked = multinet_jax.score("overcooked", [{"id": "0", "prediction": False, "ground_truth": 0}])
    assert overcooked["total_invalid_preds"] == 1


def test_score_counts_integers_past_float64_as_invalid_and_refuses_them_in_ground_truth():
    """A JSON integer past float64's range (10**400) is an invalid prediction, as 1e400 is (it crashed as 'internal
    error: OverflowError'); in the ground truth it is refused naming the record and field."""
    import multinet_jax
    from multinet_jax.metrics import RecordError

    huge = 10**400
    openx = multinet_jax.score("openx", [{"id": "0", "prediction": [huge, 0.5], "ground_truth": [1.0, 0.5]},
                                         {"id": "1", "prediction": [1.0, 0.5], "ground_truth": [1.0, 0.5]}])
    assert openx["total_invalid_preds"] == 1
    probabilities = [huge] + [0.0] * 35
    overcooked = multinet_jax.score("overcooked", [{"id": "0", "prediction": probabilities, "ground_truth": 0},
                                                   {"id": "1", "prediction": 0, "ground_truth": 0}])
    assert overcooked["total_invalid_preds"] == 1
    with pytest.raises(RecordError, match="record 1.*ground_truth.*float64"):
        multinet_jax.score("openx", [{"id": "0", "prediction": [1.0, 0.5], "ground_truth": [1.0, 0.5]},
                                     {"id": "1", "prediction": [1.0, 0.5], "ground_truth": [huge, 0.5]}])


def test_hostile_pickle_ran_no_code(cli_results):
    inputs, results = cli_results
    assert results["data_hostile_pickle"]["rc"] == 2
    assert not (inputs.root / "pwned").exists()
    with pytest.raises(Exception):  # the payload is real: plain pickle would have run it (checked without running)
        pickle.loads(pickle.dumps(_Payload(inputs.root / "pwned")).replace(b"system", b"nosuch"))


def test_failed_domain_is_marked_in_the_summary(cli_results):
    inputs, _ = cli_results
    summary = json.loads((inputs.root / "eval_runs" / "mid_run" / "summary.json").read_text())
    assert summary["overcooked_ai"]["status"] == "failed" and "field 'state'" in summary["overcooked_ai"]["error"]


def test_help_lists_the_commands_own_flags_and_bogus_commands_are_named():
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = lambda *argv: subprocess.run([sys.executable, "-c", "from multinet_jax.cli import main; main()", *argv],
                                       capture_output=True, text=True, env=environment, timeout=300)
    helped = run("score", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: multinet-jax score [--flags]\n")
    assert "--predictions:" in helped.stdout and "--data_dir" not in helped.stdout and "--logtostderr" not in helped.stdout
    bogus = run("bogus")
    assert bogus.returncode == 2 and bogus.stderr.startswith("error: unknown command 'bogus'\nusage: multinet-jax <command>")
    assert "  eval " in bogus.stderr


# ------------------------------------------------------------------------------------------------ observations


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("image/base_0_rgb", np.full((2, 14, 14, 3), 255.0, np.float32), r"float pixels span \[255, 255\], outside \[-1, 1\]: .*"),
        ("image/base_0_rgb", np.zeros((2, 14, 14, 3), np.int32), "int32 images are not accepted: .*"),
        ("image/base_0_rgb", np.zeros((2, 14, 14, 3), np.uint16), "uint16 images are not accepted: .*"),
        ("image/base_0_rgb", np.full((2, 14, 14, 3), np.nan, np.float32), "holds NaN or infinite pixels"),
        # any height and width is accepted (the model resizes as openpi does), not another channel count or batch
        ("image/base_0_rgb", np.zeros((2, 16, 16, 4), np.uint8), r"shape \(2, 16, 16, 4\), expected \(2, height, width, 3\)"),
        ("image/base_0_rgb", np.zeros((3, 16, 16, 3), np.uint8), r"shape \(3, 16, 16, 3\), expected \(2, height, width, 3\)"),
        ("image/base_0_rgb", np.zeros((2, 0, 16, 3), np.uint8), r"shape \(2, 0, 16, 3\), expected \(2, height, width, 3\)"),
        ("image/base_0_rgb", [np.zeros((16, 16, 3), np.uint8)], "1 per-row images for a batch of 2"),
        ("image_mask/base_0_rgb", np.array([0.5, 1.0]), "a mask must be bool .*"),
        ("image_mask/wrist", np.ones(2, bool), "a mask for a camera without an `image/` entry"),
        ("tokenized_prompt", np.full((2, 5), -1, np.int32), r"token id -1 is outside the model's vocabulary \[0, 8\) .*"),
        ("tokenized_prompt", np.full((2, 5), 8, np.int32), r"token id 8 is outside the model's vocabulary \[0, 8\) .*"),
        ("tokenized_prompt", np.ones((2, 5), np.float32), "token ids must be integers, got float32"),
        ("tokenized_prompt", np.ones((2, 5, 1), np.int32), r"shape \(2, 5, 1\), expected \[batch, length\]"),
        ("tokenized_prompt_mask", np.ones((2, 4), bool), r"shape \(2, 4\), expected \(2, 5\)"),
        ("token_ar_mask", np.full((2, 5), 2), "a mask must be bool .*"),
        ("state", np.zeros((2, 3), np.float32), r"shape \(2, 3\), expected \(2, 4\)"),
        ("state", np.array([[0, 0, np.inf, 0]] * 2, np.float32), "holds NaN or infinite values"),
        ("state", np.array([["a"] * 4] * 2), "must be numbers, got <U1"),
        ("sample_index", np.array([0.0, 1.0]), "must be integers, got float64"),
    ],
)
def test_bad_observation_is_refused_naming_the_key(key, value, problem):
    observation = tiny_observation()
    observation[key] = value
    with pytest.raises(ObservationError) as raised:
        validate(observation, image_size=14, vocab_size=8, state_dim=4)
    assert re.fullmatch(rf"observation\['{re.escape(key)}'\]: {problem}", str(raised.value))


@pytest.mark.parametrize("missing", ["tokenized_prompt", "tokenized_prompt_mask", "state", "image/base_0_rgb"])
def test_missing_observation_key_is_named(missing):
    observation = tiny_observation()
    del observation[missing]
    if missing == "image/base_0_rgb":
        del observation["image_mask/base_0_rgb"]
    with pytest.raises(ObservationError, match=r"observation\['(tokenized_prompt|tokenized_prompt_mask|state|image/<camera>)'\]"):
        validate(observation, image_size=14, vocab_size=8, state_dim=4)


def test_an_empty_batch_is_named():
    observation = {key: value[:0] for key, value in tiny_observation().items()}
    with pytest.raises(ObservationError, match=r"^observation\['tokenized_prompt'\]: an empty batch \(0 rows\): nothing to run$"):
        validate(observation, image_size=14, vocab_size=8, state_dim=4)


def test_bad_row_of_a_batch_mixing_image_sizes_is_named():
    observation = tiny_observation()
    observation["image/base_0_rgb"] = [np.zeros((16, 16, 3), np.uint8), np.zeros((14, 14, 4), np.uint8)]
    with pytest.raises(ObservationError, match=r"^observation\['image/base_0_rgb\[1\]'\]: shape \(1, 14, 14, 4\), expected \(1, height, width, 3\)$"):
        validate(observation, image_size=14, vocab_size=8, state_dim=4)


def _smolvla_observation(**changes) -> dict:
    """A batch of 2 as the evaluator hands SmolVLA one: the Open-X cameras, the padded state and its dims, texts."""
    observation = {"image/base_0_rgb": np.zeros((2, 32, 32, 3), np.uint8), "image_mask/base_0_rgb": np.ones(2, bool),
                   "image/left_wrist_0_rgb": np.zeros((2, 32, 32, 3), np.uint8),
                   "image_mask/left_wrist_0_rgb": np.zeros(2, bool), "state": np.zeros((2, 32), np.float32),
                   "state_dim": np.array([12, 12], np.int32), "sample_index": np.arange(2, dtype=np.int32),
                   "prompt": ["pick up the cup", "open the drawer"]}
    return {**observation, **changes}


@pytest.fixture(scope="module")
def smolvla_demo(tmp_path_factory):
    from multinet_jax import demo
    from multinet_jax.models import load_model

    return load_model(demo.build_checkpoint("smolvla", tmp_path_factory.mktemp("smolvla") / "smolvla_demo"))


@pytest.mark.parametrize("changes, problem", [
    # the demo checkpoint has one camera: a second live one would be dropped unseen
    ({"image_mask/left_wrist_0_rgb": np.array([False, True])}, r"image/left_wrist_0_rgb: a live camera, but {dir}'s "
     r"config.json input_features has only 1 VISUAL features \['observation.images.camera1'\]"),
    ({"state_dim": np.array([12, 6], np.int32)}, r"{dir}/config.json: input_features observation.state has 12 dims, "
     r"the data's states have \[6, 12\]"),
    ({"state": np.where(np.arange(64).reshape(2, 32) == 35, np.nan, 0).astype(np.float32),
      "sample_index": np.array([6, 7], np.int32)},
     r"state: row 1 \(sample_index 7\) holds nan at dim 3: NaN or infinite values, not a robot state"),
])
def test_bad_smolvla_input_is_refused_in_one_line(smolvla_demo, changes, problem):
    with pytest.raises(ValueError) as raised:
        smolvla_demo.predict_actions(_smolvla_observation(**changes), rng=None, options=InferenceOptions(num_flow_steps=1))
    assert re.fullmatch(problem.format(dir=re.escape(smolvla_demo.source)), str(raised.value))


def test_smolvla_without_prompt_texts_names_what_it_reads(smolvla_demo):
    observation = _smolvla_observation()
    del observation["prompt"]
    with pytest.raises(KeyError, match=r"SmolVLA reads `image/<camera>`, `prompt` \(task texts\) and `state`"):
        smolvla_demo.predict_actions(observation, rng=None, options=InferenceOptions(num_flow_steps=1))


def test_smolvla_on_a_domain_with_more_action_dims_fails_the_domain_never_scoring_padding(tmp_path, monkeypatch):
    """A SmolVLA with 7 action dims on the demo's 14-dim openx_bimanual: its max_action_dim padding (dims 7-31, which
    no loss trained) is never scored as actions, and rows of the checkpoint's 7 dims, which would all count as invalid,
    fail the domain naming both widths rather than scoring 100% invalid with exit 0."""
    from multinet_jax.demo import datasets
    from multinet_jax.eval import EvaluationFailed
    from multinet_jax.models import load_model, smolvla_checkpoint

    policy, backbone = smolvla_checkpoint.NAMED_CONFIGS["smolvla_demo"]
    monkeypatch.setitem(smolvla_checkpoint.NAMED_CONFIGS, "smolvla_demo_7",
                        ({**policy, "output_features": {"action": {"type": "ACTION", "shape": [7]}}}, backbone))
    checkpoint = smolvla_checkpoint.write_checkpoint(tmp_path / "smolvla_7", "smolvla_demo_7", corpus=datasets.corpus())
    assert load_model(checkpoint).config.action_dim == 7
    with pytest.raises(EvaluationFailed, match=r"openx_bimanual: ValueError: openx_bimanual: sample 'translated_shard_0/0': "
                                               r"the model's action has 7 dims, its ground truth \(as scored\) 14"):
        eval_helpers.evaluate(tmp_path / "run", ("openx_bimanual",), model="smolvla", checkpoint=str(checkpoint),
                              tokenizer=None, limit=2, batch_size=2, num_flow_steps=1)
    assert not (tmp_path / "run" / "openx_bimanual_metrics.json").exists()


@pytest.mark.parametrize("change", ["one_conversation_for_two_rows", "no_chat_tokenizer_bos"])
def test_a_magma_chat_that_does_not_fit_the_batch_is_one_line(change):
    from magma_helpers import magma_model

    observation = {"image/base_0_rgb": np.zeros((2, 32, 32, 3), np.uint8), "prompt": ["a", "b"],
                   "chat": [[{"role": "user", "content": "<image>\nWhat is this?"}]] * 2, "chat_tokenizer_bos": True}
    if change == "one_conversation_for_two_rows":
        observation["chat"] = observation["chat"][:1]
    else:
        del observation["chat_tokenizer_bos"]
    with pytest.raises(ValueError, match=r"^chat: Magma reads one conversation per row and `chat_tokenizer_bos`, got \d for 2 rows$"):
        magma_model().sample_tokens(observation, max_decoding_steps=2)


# ------------------------------------------------------------------------------------------------ probing


PAPER_PREFIX, PAPER_ACTION = [63.83, 65.67, 71.26, 59.18], [55.79, 55.72, 56.99, 53.08]  # the paper's Pi0 maxima, percent


@pytest.mark.parametrize(
    "prefix, action, chance, problem",
    [
        # percent curves with the default chance=0.5 gave 0.874 (0.420 is right; the paper's maxima gave 0.854, not 0.362)
        ({"t": [50, 63.8]}, {"t": [50, 55.8]}, 0.5, r"task 't': the prefix curve holds 50, outside \[0, 1\]: with chance=0.5 "
         r"accuracies are fractions \(pass chance=50 for percent\)"),
        ({"t": [0.5, 1.7]}, {"t": [0.5, 0.6]}, 0.5, r"task 't': the prefix curve holds 1.7, outside \[0, 1\]"),
        ({"t": [0.5, 0.7]}, {"t": [-0.1, 0.6]}, 0.5, r"task 't': the action curve holds -0.1, outside \[0, 1\]"),
        ({"t": [55.0, 101.0]}, {"t": [50.0, 60.0]}, 50, r"task 't': the prefix curve holds 101, outside \[0, 100\]: with "
         r"chance=50 accuracies are percent \(pass chance=0.5 for fractions\)"),
        ({"t": []}, {"t": [0.5]}, 0.5, r"task 't': the prefix curve must be a non-empty list of per-layer accuracies"),
        ({"t": [0.6, np.nan]}, {"t": [0.5, 0.55]}, 0.5, r"task 't': the prefix curve holds nan, outside \[0, 1\]"),
        ({"t": [0.6]}, {"t": [0.55]}, 0.0, r"chance must be a probability in \(0, 1\) or a percentage in \(1, 100\)"),
    ],
    ids=["percent_with_chance_one_half", "above_one", "below_zero", "above_100_percent", "empty_curve", "nan_curve",
         "zero_chance"],
)
def test_retention_refuses_curves_outside_their_unit(prefix, action, chance, problem):
    from multinet_jax.probing import retention

    with pytest.raises(ValueError, match=f"^{problem}"):
        retention(prefix, action, chance=chance)


def test_retention_in_either_unit_gives_the_papers_value():
    from multinet_jax.probing import retention

    percent = retention({str(i): [p] for i, p in enumerate(PAPER_PREFIX)}, {str(i): [a] for i, a in enumerate(PAPER_ACTION)}, chance=50)
    fractions = retention({str(i): [p / 100] for i, p in enumerate(PAPER_PREFIX)},
                          {str(i): [a / 100] for i, a in enumerate(PAPER_ACTION)})
    assert round(percent, 3) == round(fractions, 3) == 0.362


@pytest.mark.parametrize("options", [{"C": 0.0}, {"C": -1.0}, {"C": float("inf")}, {"max_iter": 0}, {"tol": 0.0}])
def test_fit_probes_refuses_what_the_cli_refuses(options):
    from multinet_jax.probing import fit_probes

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="C must be a positive finite number, max_iter >= 1 and tol > 0"):
        fit_probes(rng.standard_normal((20, 2, 4)), np.arange(20) % 2, **options)


def test_fit_probes_refuses_zero_samples():
    from multinet_jax.probing import fit_probes

    with pytest.raises(ValueError, match=r"^no samples to probe \(features hold 0 rows\)$"):
        fit_probes(np.zeros((0, 2, 4), np.float32), np.zeros(0, np.int64))


def test_a_truncated_activations_batch_is_named(tmp_path):
    from multinet_jax.probing import activation_store

    text = {field: [f"{field}{index}" for index in range(4)] for field in activation_store.TEXT_FIELDS}
    activation_store.write_batch(tmp_path, {"sample_index": np.arange(4), "label": np.arange(4) % 2, **text,
                                       "prefix_last": np.zeros((4, 2, 3), np.float32)})
    (batch,) = tmp_path.glob("*.npz")
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(activation_store.ActivationError, match=rf"^{re.escape(str(batch))}: not a readable activations batch "
                       r"\(BadZipFile: .*\); remove it and resume$"):
        activation_store.read(tmp_path)


# ------------------------------------------------------------------------------------------------ real-openpi baseline


def _broken_openpi(root: pathlib.Path) -> pathlib.Path:
    """A folder laid out like openpi's `src` whose model code does not import."""
    models = root / "openpi" / "models"
    models.mkdir(parents=True)
    for package in (root / "openpi", models):
        (package / "__init__.py").write_text("")
    (models / "pi0.py").write_text("def broken(:\n")
    (models / "gemma.py").write_text("raise ImportError('no module named flax')\n")
    return root


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["-m", "benchmarks.pi0_throughput", "--openpi_src={missing}"],
         r"error: {missing}: --openpi_src is not openpi's src folder \(no openpi/models/pi0\.py under it\)"),
        (["-m", "benchmarks.pi0_throughput", "--openpi_src={broken}", "--openpi_python={missing}"],
         r"error: {missing}: --openpi_python is not a file"),
        (["benchmarks/openpi_worker.py", "serve", "--openpi_src={missing}", "--case=x.npz"],
         r"error: {missing}: --openpi_src is not openpi's src folder \(no openpi/models/pi0\.py under it\)"),
        (["benchmarks/openpi_worker.py", "serve", "--openpi_src={broken}", "--case=x.npz"],
         r"error: {broken}: importing openpi failed: ImportError: no module named flax"),
        (["benchmarks/openpi_worker.py", "serve", "--openpi_src={broken}"], r"error: serve needs --case"),
    ],
    ids=["throughput_missing_src", "throughput_missing_python", "worker_missing_src", "worker_broken_src", "worker_no_case"],
)
def test_bad_openpi_checkout_is_one_line(argv, problem, tmp_path):
    paths = {"missing": str(tmp_path / "no_openpi"), "broken": str(_broken_openpi(tmp_path / "src"))}
    run = subprocess.run([sys.executable, *(arg.format(**paths) for arg in argv)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2
    assert re.fullmatch(problem.format(**{key: re.escape(value) for key, value in paths.items()}) + "\n", run.stderr)


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["--torch_python={missing}", "--magma_src={missing}"], r"error: {missing}: --torch_python is not a file"),
        (["--torch_python={python}", "--magma_src={missing}"],
         r"error: {missing}: --magma_src is not a Magma checkout \(no magma/modeling_magma\.py under it\)"),
    ],
    ids=["magma_throughput_missing_python", "magma_throughput_missing_src"],
)
def test_bad_magma_reference_is_one_line(argv, problem, tmp_path):
    paths = {"missing": str(tmp_path / "no_magma"), "python": sys.executable}
    run = subprocess.run([sys.executable, "-m", "benchmarks.magma_throughput", *(arg.format(**paths) for arg in argv)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert re.fullmatch(problem.format(**{key: re.escape(value) for key, value in paths.items()}) + "\n", run.stderr)
