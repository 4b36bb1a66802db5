"""Open-X Embodiment: RLDS datasets as published and MultiNet's translated shards.

Formats read (TensorFlow is imported lazily, only here, and only to read the TF-written formats):
- MultiNet translated shards: `<dir>/translated_shard_N/` written by `tf.data.Dataset.save`, one
  episode per shard (read with `tf.data.Dataset.load`, shards in numeric order).
- RLDS / TFDS builder directories (`dataset_info.json`, `features.json`, tfrecord or ArrayRecord
  shards of episodes): ArrayRecord through `tfds.data_source` (random access to episodes), tfrecord
  through `builder.as_dataset(shuffle_files=False)`.

Random access: Grain needs O(1) access to a *step*, but both RLDS forms store whole episodes (an
episode must be decoded to reach one of its steps) and snapshots are sequential. So every form is
converted once, deterministically, into step-level ArrayRecord files (`steps.py`): explicitly with
`multinet-jax convert`, or implicitly by `load(...)`, which converts into the cache
(`$MULTINET_JAX_CACHE/converted/<key>`, never into the data folder, which may be shared or read-only) keyed by the
source files' paths, sizes and mtimes, and reuses it afterwards. Action statistics are computed in
the same pass and stored in the manifest.

Field rules (MultiNet's `src/data_utils/openx_dataloader.py`): the image is the first of
`observation/{image,hand_color_image,agentview_rgb,hand_image,wrist_image,rgb}`; the instruction is
the first of `observation/instruction` (language-table bytes as int32), `observation/natural_language_instruction`,
`language_instruction`, `natural_language_instruction`, `action_instruct` (empty when none); a dict
action is flattened with keys sorted, float leaves only, concatenated; the state is
`observation/state` when present, else the per-dataset fields MultiNet's Pi0 script used.

Two domains' ground truth is rebuilt from the action dict instead, as MultiNet's Pi0 script did (`ACTION_REBUILDS`,
picked by `domains.OPENX_ACTION_FROM_DICT`), and their split statistics are computed over the rebuilt actions.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import os
import pathlib
import re
import shutil
from typing import Any, Iterator

import numpy as np
import tqdm

from multinet_jax import assets, domains, fingerprints
from multinet_jax.data import prompts
from multinet_jax.data import stats as stats_lib
from multinet_jax.data import steps as steps_lib
from multinet_jax.data.bad_records import BadRecordError

IMAGE_KEYS = tuple(f"observation/{key}" for key in ("image", "hand_color_image", "agentview_rgb", "hand_image", "wrist_image", "rgb"))
INSTRUCTION_KEYS = (
    "observation/natural_language_instruction",
    "language_instruction",
    "natural_language_instruction",
    "action_instruct",
)
# Datasets without `observation/state`: the fields MultiNet's Pi0 script concatenated as the state, those a step has
# (`_prepare_state` skipped an absent one: RT-1's data has no `yaw`), in this order.
STATE_FIELDS = {
    "openx_bimanual": ("observation/pose_l", "observation/pose_r"),
    "openx_utokyo_xarm_bimanual_converted_externally_to_rlds": ("observation/pose_l", "observation/pose_r"),
    "openx_mobile_manipulation": tuple(
        f"observation/{key}" for key in ("gripper_closed", "base_pose_tool_reached", "height_to_bottom", "yaw", "orientation_box")
    ),
    "openx_fractal20220817_data": tuple(
        f"observation/{key}" for key in ("gripper_closed", "base_pose_tool_reached", "height_to_bottom", "yaw", "orientation_box")
    ),
}
EPISODE_KEY, STEP_KEY = "_episode_id", "_step_index"
# The manifest entry holding MultiNet's own split statistics (`stats.MultinetActionStats`).
MULTINET_STATS_KEY = "action_stats_multinet"
# The manifest entry holding, per rebuild of `ACTION_REBUILDS` the steps' action dicts allow, both kinds of
# statistics over the rebuilt actions.
REBUILT_STATS_KEY = "action_stats_rebuilt"


# ---------------------------------------------------------------------------- field rules


def first_image(step: dict[str, Any], dataset: str, record: str) -> np.ndarray:
    for key in IMAGE_KEYS:
        if key in step:
            return checked_image(step[key], dataset, record, key)
    raise BadRecordError(dataset, record, "observation/image", f"none of {list(IMAGE_KEYS)} present")


def checked_image(image: Any, dataset: str, record: str, field: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) == 0:
        raise BadRecordError(dataset, record, field, f"expected uint8 [h, w, 3], got {image.dtype} {list(image.shape)}")
    return image


def instruction(step: dict[str, Any], dataset: str, record: str) -> str:
    language_table = step.get("observation/instruction")
    if language_table is not None and np.asarray(language_table).dtype == np.int32:
        codes = np.asarray(language_table)
        try:
            return bytes(codes[codes != 0].tolist()).decode("utf-8")
        except (UnicodeDecodeError, ValueError) as error:  # ValueError: a code outside 0..255
            raise BadRecordError(dataset, record, "observation/instruction", f"not UTF-8 text ({error})") from None
    for key in INSTRUCTION_KEYS:
        if key in step:
            return str(step[key])
    return ""


def _rel2abs_gripper(actions: np.ndarray) -> np.ndarray:
    """RT-1's relative gripper command (+1 close, -1 open, |x| <= 0.1 none) as an absolute one (0 closed, 1 open)."""
    return np.where(actions < -0.1, 1, np.where(actions > 0.1, -1, 0)) / 2 + 0.5


# MultiNet's `openx_inference.py` (d6fe80e) `_create_action_tensor_from_dict`, lines 142-235: per rebuild, the
# action dict's leaves in this order, each flattened, the last transformed (Bridge's `open_gripper` cast to float32;
# RT-1's `gripper_closedness_action` through `_rel2abs_gripper_actions`, lines 84-98). The concatenation keeps
# numpy's promoted dtype (float32 for Bridge, float64 for RT-1), as MultiNet's did.
ACTION_REBUILDS = {
    "bridge": (("world_vector", "rotation_delta", "open_gripper"), lambda gripper: gripper.astype(np.float32)),
    "rt1": (("world_vector", "rotation_delta", "gripper_closedness_action"), _rel2abs_gripper),
}


def rebuilt_action(leaves: dict[str, np.ndarray], rebuild: str) -> np.ndarray | None:
    """The action MultiNet rebuilt from an action dict's leaves; None when the dict lacks one of its keys."""
    keys, gripper = ACTION_REBUILDS[rebuild]
    if not all(key in leaves for key in keys):
        return None
    *arm, last = (np.asarray(leaves[key]).reshape(-1) for key in keys)
    return np.concatenate([*arm, gripper(last)])


def action_leaves(step: dict[str, Any]) -> dict[str, np.ndarray]:
    """A dict action's leaves by key (empty for an array action)."""
    return {key[len("action/") :]: np.asarray(value) for key, value in step.items() if key.startswith("action/")}


def ground_truth_action(step: dict[str, Any], dataset: str, record: str) -> tuple[np.ndarray, dict[str, list] | None]:
    """(the action scored, the action dict or None): the flat action in its own float dtype, or the rebuilt one
    (float32) for a domain whose
    actions MultiNet rebuilt (`domains.OPENX_ACTION_FROM_DICT`) when the step's action is a dict (MultiNet used
    the flat action otherwise)."""
    action, action_dict = action_vector(step, dataset, record)
    rebuild = domains.lookup(dataset).protocol.action_from_dict
    if rebuild is None or action_dict is None:
        return action, action_dict
    rebuilt = rebuilt_action(action_leaves(step), rebuild)
    if rebuilt is None:
        raise BadRecordError(dataset, record, "action", f"MultiNet rebuilt {dataset}'s actions from "
                             f"{list(ACTION_REBUILDS[rebuild][0])}; this action dict has {sorted(action_dict)}")
    return rebuilt.astype(np.float32), action_dict


def action_vector(step: dict[str, Any], dataset: str, record: str) -> tuple[np.ndarray, dict[str, list] | None]:
    """(flat action in its own float dtype, the action dict or None when the action is a plain array): MultiNet
    scored float64 actions (openx_wheeled_robot's) as float64."""
    action, action_dict = native_action(step, dataset, record)
    check_action_values(action, dataset, record)
    return action, action_dict


def check_action_values(action: np.ndarray, dataset: str, record: str) -> None:
    """A ground-truth action holds finite values within `domains.ACTION_VALUE_LIMIT`: one NaN, inf or 1e30 would
    make the split's statistics (and so every unnormalized prediction and metric) NaN or inf."""
    bad = np.flatnonzero(~(np.abs(action) <= domains.ACTION_VALUE_LIMIT))
    if bad.size:
        raise BadRecordError(dataset, record, "action", f"value {float(action[bad[0]]):g} at dim {int(bad[0])} is not a "
                             f"finite number within +-{domains.ACTION_VALUE_LIMIT:g} (corrupt data?)")


def native_action(step: dict[str, Any], dataset: str, record: str) -> tuple[np.ndarray, dict[str, list] | None]:
    """The flat action in the dataset's own float dtype (what MultiNet's statistics were computed on)."""
    if "action" in step:
        action = np.asarray(step["action"])
        if action.dtype.kind != "f":
            raise BadRecordError(dataset, record, "action", f"expected floats, got {action.dtype}")
        return action.reshape(-1), None
    leaves = action_leaves(step)
    if not leaves:
        raise BadRecordError(dataset, record, "action", "missing")
    floats = [leaves[key].reshape(-1) for key in sorted(leaves) if leaves[key].dtype.kind == "f"]
    if not floats:
        raise BadRecordError(dataset, record, "action", f"no float leaves among {sorted(leaves)}")
    return np.concatenate(floats), {key: leaves[key].tolist() for key in sorted(leaves)}


def state_vector(step: dict[str, Any], dataset: str, record: str) -> np.ndarray | None:
    """`observation/state`, else the dataset's `STATE_FIELDS` the step has, flattened and concatenated; None (a zero
    state, as MultiNet's script gave) when it has none."""
    keys = ("observation/state",) if "observation/state" in step else [key for key in STATE_FIELDS.get(dataset, ()) if key in step]
    parts = []
    for key in keys:
        value = np.asarray(step[key])
        if value.dtype.kind != "f":
            raise BadRecordError(dataset, record, key, f"expected floats, got {value.dtype}")
        if not np.isfinite(value).all():
            raise BadRecordError(dataset, record, key, "holds NaN or infinite values")
        parts.append(value.astype(np.float32).reshape(-1))
    return np.concatenate(parts) if parts else None


def step_record_name(step: dict[str, Any]) -> str:
    return f"{step[EPISODE_KEY]}/{int(step[STEP_KEY])}"


def openx_sample(step: dict[str, Any], dataset: str) -> dict[str, Any]:
    """A converted step -> the domain-independent raw sample the pipeline turns into model inputs."""
    record = step_record_name(step)
    action, action_dict = ground_truth_action(step, dataset, record)
    sample = {
        "id": record,
        "image": first_image(step, dataset, record),
        "state": state_vector(step, dataset, record),
        "prompt": instruction(step, dataset, record),
        "ground_truth": action.tolist(),
        "action": action,
        "episode_id": str(step[EPISODE_KEY]),
        "step_id": np.int64(step[STEP_KEY]),
        "is_last": np.asarray(step.get("is_last", False), bool),
    }
    if action_dict is not None:
        sample["action_dict"] = action_dict
    return sample


# ---------------------------------------------------------------------------- raw formats

def _tf():
    """TensorFlow, imported on first use (the optional `tf` extra), kept off any GPU."""
    try:
        import tensorflow as tf
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("reading RLDS / tf.data snapshots needs TensorFlow: pip install 'multinet_jax[tf]'") from error
    tf.config.set_visible_devices([], "GPU")
    return tf


def _numpy_leaf(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    array = np.asarray(value)
    if array.dtype.kind in "SO":
        return array.item().decode("utf-8") if array.ndim == 0 else array.astype(str).tolist()
    return array


def _to_flat_numpy(step: dict[str, Any], where: str) -> dict[str, Any]:
    """A decoded step as flat numpy leaves and text; `where` names the step in the error for a field that is not UTF-8."""
    flat = {}
    for key, value in steps_lib.flatten(step).items():
        try:
            flat[key] = _numpy_leaf(value)
        except UnicodeDecodeError as error:
            raise ValueError(f"{where}: field {key!r} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    return flat


_SHARD_NAME = re.compile(r"translated_shard_(\d+)")


def translated_shards(directory: pathlib.Path) -> list[pathlib.Path]:
    """`translated_shard_<N>` subdirectories holding a snapshot, in numeric order (or the directory itself if a
    snapshot). A snapshot folder of another name (`translated_shard_3 copy`, `translated_shard_1b`), two folders of
    one number (`_1`, `_01`) or a `translated_shard_*` folder without `snapshot.metadata` (a partly copied shard, or a
    save that never finished) are refused: which steps the dataset holds, and in which order, would be a guess."""
    if (directory / "snapshot.metadata").exists():
        return [directory]
    shards: dict[int, pathlib.Path] = {}
    for path in fingerprints.glob(directory, "translated_shard_*"):
        if not (path / "snapshot.metadata").exists():
            raise ValueError(f"{path}: no snapshot.metadata, so not a complete tf.data snapshot shard; re-copy or remove it")
        match = _SHARD_NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path}: a snapshot shard not named translated_shard_<number>; rename or remove it")
        number = int(match.group(1))
        if number in shards:
            raise ValueError(f"{directory}: {shards[number].name} and {path.name} are both shard {number}; remove one")
        shards[number] = path
    return [shards[number] for number in sorted(shards)]


def is_rlds_builder(directory: pathlib.Path) -> bool:
    return (directory / "dataset_info.json").exists() and (directory / "features.json").exists()


def detect_format(directory: pathlib.Path) -> str:
    """"steps" (converted), "translated_shards" or "rlds"; raises naming what was expected. A folder holding both
    converted steps and raw data is refused: the steps would be read, and raw data added since silently left out."""
    if (directory / steps_lib.MANIFEST).exists():
        if translated_shards(directory) or is_rlds_builder(directory):
            raise ValueError(f"{directory}: holds both converted steps ({steps_lib.MANIFEST}) and raw Open-X data "
                             "(translated_shard_N/ or a TFDS builder); keep the conversion in a folder of its own")
        return "steps"
    if translated_shards(directory):
        return "translated_shards"
    if is_rlds_builder(directory):
        return "rlds"
    raise FileNotFoundError(
        f"{directory}: not an Open-X dataset: expected {steps_lib.MANIFEST} (converted), translated_shard_N/ "
        "(MultiNet tf.data snapshots) or a TFDS builder dir (dataset_info.json + features.json)"
    )


def _error_line(error: Exception) -> str:
    """An error of TensorFlow or TFDS, in one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


def snapshot_element_count(shard: pathlib.Path) -> int | None:
    """The element count `tf.data.Dataset.save` recorded in `snapshot.metadata` (None when it recorded none).

    A snapshot whose save did not finish (`finalized` false) is refused: its files hold an unknown prefix.
    """
    from tensorflow.core.protobuf import snapshot_pb2

    path = shard / "snapshot.metadata"
    metadata = snapshot_pb2.SnapshotMetadataRecord()
    try:
        metadata.ParseFromString(path.read_bytes())
    except Exception as error:  # protobuf's DecodeError, OSError: both mean the file is not usable
        raise ValueError(f"{path}: not a tf.data snapshot metadata file ({_error_line(error)})") from None
    if not metadata.finalized:
        raise ValueError(f"{path}: the snapshot was never finalized (its save was interrupted); re-create the shard")
    return metadata.num_elements or None


def _iter_translated(directory: pathlib.Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Steps of every translated shard, each shard's count checked against what its metadata recorded."""
    tf = _tf()
    from google.protobuf.message import DecodeError

    for shard in translated_shards(directory):
        expected, read = snapshot_element_count(shard), 0
        try:
            for step in tf.data.Dataset.load(str(shard)).as_numpy_iterator():
                read += 1
                yield shard.name, step
        except (tf.errors.OpError, DecodeError) as error:  # DecodeError: a corrupt dataset_spec.pb
            raise ValueError(f"{shard}: unreadable tf.data snapshot ({_error_line(error)})") from None
        if expected is not None and read != expected:
            raise ValueError(
                f"{shard}: snapshot.metadata records {expected} elements but the shard's files hold {read} "
                "(a truncated or partly copied shard)"
            )


def _rlds_split(builder, split: str | None) -> str:
    splits = sorted(builder.info.splits.keys())
    if split is not None:
        return split
    if len(splits) == 1:
        return splits[0]
    if "test" in splits:
        return "test"
    raise ValueError(f"{builder.data_dir}: several splits {splits}; pass split=")


def _episode_steps(steps: Any) -> Iterator[dict[str, Any]]:
    """Steps of one decoded episode: a tf.data.Dataset (tfrecord path), a random-access sequence
    (`tfds.data_source` path) or a dict of arrays stacked over steps."""
    if isinstance(steps, dict):
        flat = steps_lib.flatten(steps)
        length = len(next(iter(flat.values())))
        for index in range(length):
            yield {key: value[index] for key, value in flat.items()}
    elif hasattr(steps, "as_numpy_iterator"):
        yield from steps.as_numpy_iterator()
    else:
        yield from (steps[index] for index in range(len(steps)))


def _rlds_builder(directory: pathlib.Path, split: str | None) -> tuple[Any, str]:
    """(the TFDS builder of an RLDS directory, the split read: `split`, else its only one, else "test")."""
    _tf()
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder_from_directory(str(directory))
    except Exception as error:  # TFDS raises many types for a broken dataset_info.json / features.json
        raise ValueError(f"{directory}: unreadable TFDS builder directory ({_error_line(error)})") from None
    split = _rlds_split(builder, split)
    if split not in builder.info.splits:
        raise ValueError(f"{directory}: no split {split!r}; it has {sorted(builder.info.splits.keys())}")
    return builder, split


def _iter_rlds(directory: pathlib.Path, split: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    import tensorflow_datasets as tfds

    builder, split = _rlds_builder(directory, split)
    expected, read = builder.info.splits[split].num_examples, 0
    try:
        if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
            episodes = builder.as_data_source(split=split)
            for read in range(1, len(episodes) + 1):
                for step in _episode_steps(episodes[read - 1]["steps"]):
                    yield f"{split}/{read - 1}", step
        else:
            for read, episode in enumerate(builder.as_dataset(split=split, shuffle_files=False), start=1):
                for step in _episode_steps(episode["steps"]):
                    yield f"{split}/{read - 1}", step
    except (_tf().errors.OpError, OSError) as error:
        raise ValueError(f"{directory}: unreadable {split!r} episodes ({_error_line(error)})") from None
    if read != expected:
        raise ValueError(
            f"{directory}: dataset_info.json records {expected} {split!r} episodes but its files hold {read} "
            "(a truncated or partly copied shard)"
        )


def iter_source_steps(directory: pathlib.Path, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Every step of a raw Open-X dataset as a flat numpy dict with episode id and step index."""
    directory = pathlib.Path(directory)
    form = detect_format(directory)
    if form == "steps":
        raise ValueError(f"{directory} is already converted")
    raw = _iter_translated(directory) if form == "translated_shards" else _iter_rlds(directory, split)
    previous, step_index = None, 0
    for episode_id, step in raw:
        step_index = step_index + 1 if episode_id == previous else 0
        previous = episode_id
        flat = _to_flat_numpy(step, f"{directory}: step {episode_id}/{step_index}")
        flat[EPISODE_KEY], flat[STEP_KEY] = episode_id, np.int64(step_index)
        yield flat


# ---------------------------------------------------------------------------- conversion


def convert(
    source_dir: pathlib.Path, out_dir: pathlib.Path, *, split: str | None = None, steps_per_file: int = 4096, source_key: str | None = None
) -> dict:
    """Raw Open-X dataset -> step-level ArrayRecord + manifest (with action statistics); returns the manifest.

    The files are written into a hidden sibling folder and moved into `out_dir` only once the whole dataset was
    read and checked, so a failed conversion leaves nothing behind (and an earlier conversion stays intact). An
    `out_dir` inside (or equal to) `source_dir` is refused: shards added later would sit beside the steps, unread.
    """
    source_dir, out_dir = pathlib.Path(source_dir), pathlib.Path(out_dir)
    if out_dir.resolve().is_relative_to(source_dir.resolve()):  # the steps would become part of the data they convert
        raise ValueError(f"{out_dir}: the output is inside the input {source_dir}; convert into a folder outside it")
    source_format = detect_format(source_dir)  # not an Open-X dataset: fail before creating anything
    if split is not None and source_format != "rlds":  # it would be read whole, whatever the split said
        raise ValueError(f"{source_dir}: split {split!r} names a TFDS split of an RLDS builder folder; this folder holds "
                         f"{source_format.replace('_', ' ')}, read whole")
    new_parents = [parent for parent in out_dir.parents if not parent.exists()]  # nearest first
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.converting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        manifest = _convert_into(source_dir, staging, split=split, steps_per_file=steps_per_file, source_key=source_key)
        out_dir.mkdir(exist_ok=True)
        for stale in [*out_dir.glob("steps-*.array_record"), out_dir / steps_lib.MANIFEST]:
            stale.unlink(missing_ok=True)
        for name in [*manifest["files"], steps_lib.MANIFEST]:  # the manifest last: it marks the conversion done
            (staging / name).replace(out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in new_parents:  # made for this conversion: a failed one leaves them empty (a done one, not)
            with contextlib.suppress(OSError):
                parent.rmdir()
    return manifest


# A conversion shows its progress bar once it has run this long past its first step: a short one shows none, and a
# source refused at its first steps prints only its one-line error.
CONVERSION_PROGRESS_DELAY_S = 10.0


def _recorded_counts(source_dir: pathlib.Path, split: str | None) -> tuple[int | None, int | None]:
    """(steps, episodes) a source's own metadata records, None where it records none, for the conversion's progress
    bar: translated shards' snapshots count steps, an RLDS split's dataset_info.json episodes."""
    if detect_format(source_dir) == "rlds":
        builder, split = _rlds_builder(source_dir, split)
        return None, builder.info.splits[split].num_examples
    counts = [snapshot_element_count(shard) for shard in translated_shards(source_dir)]
    return (None if None in counts else sum(counts)), None


def _convert_into(
    source_dir: pathlib.Path, out_dir: pathlib.Path, *, split: str | None, steps_per_file: int, source_key: str | None
) -> dict:
    action_stats, multinet_stats = stats_lib.RunningActionStats(), stats_lib.MultinetActionStats()
    rebuilt: dict[str, list[np.ndarray]] = {name: [] for name in ACTION_REBUILDS}
    summary: dict[str, Any] = {"num_steps": 0, "num_episodes": 0, "episode": None, "features": None, "without_action": 0, "examples": []}
    pending: list[np.ndarray] = []
    # The source is opened and its first step read (TensorFlow / TFDS imported, which takes seconds) before the
    # bar's delay starts: a source refused as it opens prints only its error.
    steps = iter_source_steps(source_dir, split)
    first = next(steps, None)
    # A large dataset converts for many minutes (eval converts on first use): show it, on stderr, as eval's bars.
    recorded_steps, recorded_episodes = _recorded_counts(source_dir, split)
    progress = tqdm.tqdm(desc=f"converting {'/'.join(source_dir.resolve().parts[-2:])}", unit="step",
                         total=recorded_steps, dynamic_ncols=True, mininterval=1.0, delay=CONVERSION_PROGRESS_DELAY_S)
    of_recorded = "" if recorded_episodes is None else f"/{recorded_episodes}"

    def records() -> Iterator[bytes]:
        for step in itertools.chain([] if first is None else [first], steps):
            summary["num_steps"] += 1
            progress.update()
            if summary["episode"] != step[EPISODE_KEY]:
                summary["episode"] = step[EPISODE_KEY]
                summary["num_episodes"] += 1
                progress.set_postfix_str(f"{summary['num_episodes']}{of_recorded} episodes", refresh=False)
            summary["features"] = summary["features"] or steps_lib.field_specs(step)
            try:
                action, action_dict = native_action(step, source_dir.name, step_record_name(step))
            except BadRecordError as error:  # RoboVQA has no actions; any other dataset shows it here
                summary["without_action"] += 1
                if len(summary["examples"]) < 5:
                    summary["examples"].append(str(error.bad_record))
            else:
                check_action_values(action, str(source_dir), step_record_name(step))  # before any statistic sees it
                pending.append(action.astype(np.float32))
                multinet_stats.update(action, from_dict=action_dict is not None)
                leaves = action_leaves(step)
                for name, actions in rebuilt.items():
                    vector = rebuilt_action(leaves, name) if leaves else None
                    if vector is not None:
                        actions.append(vector)
            if len(pending) == 1024:
                action_stats.update(np.stack(pending))
                pending.clear()
            try:
                record = steps_lib.encode_step(step)
            except TypeError as error:  # a field no step record holds (an array of text): the data's, not ours
                raise ValueError(f"{source_dir}: step {step_record_name(step)}: {error}") from None
            yield record

    with progress:
        files = steps_lib.write_steps(records(), out_dir, steps_per_file)
    if pending:
        action_stats.update(np.stack(pending))
    manifest = {
        "format": steps_lib.FORMAT,
        "source": str(source_dir.resolve()),
        "source_format": detect_format(source_dir),
        "source_key": source_key,
        "split": split,
        "num_steps": summary["num_steps"],
        "num_episodes": summary["num_episodes"],
        "files": files,
        "features": summary["features"] or {},
        "action_stats": action_stats.result() if action_stats.count else None,
        MULTINET_STATS_KEY: multinet_stats.result() if multinet_stats.count else None,
        REBUILT_STATS_KEY: {name: {"multinet": stats_lib.multinet_rebuilt_stats(actions), "exact": stats_lib.compute_action_stats(actions)}
                            for name, actions in rebuilt.items() if actions},
        "steps_without_action": summary["without_action"],
        "steps_without_action_examples": summary["examples"],
    }
    (out_dir / steps_lib.MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


# Bumped when a conversion's content changes for the same source (new fields, statistics or step encoding): a
# conversion made by another version is then made anew instead of read.
CONVERSION_VERSION = 3


def conversion_dir(directory: pathlib.Path, *, split: str | None = None, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Where `directory`'s converted steps live: `<cache>/converted/<key>`, keyed by the source's content
    (`fingerprints.fingerprint`: every file's relative name, size and sha256, hidden entries such as earlier versions'
    conversions beside the data left out), the split and `CONVERSION_VERSION`. An edited source is converted anew even
    when its sizes and modification times were restored; a copy elsewhere reuses the conversion. Never inside the
    data folder. A folder holding no file is refused: it would key every empty folder to one conversion."""
    content = fingerprints.fingerprint(directory)
    if not content["files"]:
        raise FileNotFoundError(f"{directory}: holds no file to convert")
    key = hashlib.sha256(f"{content['sha256']}\0{split}\0{CONVERSION_VERSION}".encode()).hexdigest()[:20]
    return pathlib.Path(cache_dir or assets.cache_dir()) / "converted" / (key + (f"-{split}" if split else ""))


def _is_current(manifest: dict | None) -> bool:
    """A finished conversion (the manifest is written last) holding every statistic this version reads."""
    return manifest is not None and MULTINET_STATS_KEY in manifest and REBUILT_STATS_KEY in manifest


def ensure_converted(directory: pathlib.Path, *, split: str | None = None, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """The converted steps of `directory`: itself when converted, else a conversion in the cache made once and reused.

    Processes and hosts sharing the cache convert once: one holds the conversion's lock and writes, the others
    wait for it and read the result. The manifest is written last, so an interrupted conversion is redone.
    """
    directory = pathlib.Path(directory)
    if detect_format(directory) == "steps":
        return directory
    out_dir = conversion_dir(directory, split=split, cache_dir=cache_dir)
    if not _is_current(steps_lib.read_manifest(out_dir)):
        with assets.exclusive(out_dir, f"converting {directory}"):
            if not _is_current(steps_lib.read_manifest(out_dir)):
                logging.info("converting %s to step-level ArrayRecord in %s", directory, out_dir)
                convert(directory, out_dir, split=split, source_key=out_dir.name)
    return out_dir


class OpenxSource:
    """Random access to an Open-X / RoboVQA domain's samples through its converted steps."""

    def __init__(self, directory: pathlib.Path, dataset: str, sample_fn, *, split: str | None = None,
                 cache_dir: pathlib.Path | None = None, instruction_prompt: bool = False):
        if instruction_prompt and dataset not in prompts.OPENX_INSTRUCTION_DEFINITIONS:
            raise ValueError(f"{directory}: MultiNet defines no VLM instruction prompt for {dataset} (it has "
                             f"definitions for {', '.join(sorted(prompts.OPENX_INSTRUCTION_DEFINITIONS))})")
        self.dataset = dataset
        self.directory = directory
        self.steps = steps_lib.StepSource(ensure_converted(directory, split=split, cache_dir=cache_dir))
        self._sample_fn = sample_fn
        self._instruction_prompt = instruction_prompt

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self._sample_fn(self.steps[index], self.dataset)
        if self._instruction_prompt:  # MultiNet's VLM instruction, for text answers
            try:
                sample[prompts.INSTRUCTION_PROMPT] = prompts.openx_instruction_prompt(
                    self.dataset, sample["prompt"].strip(), self._instruction_stats)
            except ValueError as error:  # the split does not fit MultiNet's definitions
                raise ValueError(f"{self.directory}: {error}") from None
        return sample

    @functools.cached_property
    def _instruction_stats(self) -> dict[str, Any]:
        """The statistics MultiNet's VLM instruction prints: MultiNet's own of the split (`action_stats("multinet")`)."""
        return self.action_stats("multinet")

    def action_stats(self, kind: str = "exact") -> dict | None:
        """The split's action statistics: "exact" (float64, streaming) or "multinet" (MultiNet's own, see stats.py),
        over the rebuilt actions for a domain MultiNet rebuilt them for (`ground_truth_action`)."""
        rebuild = domains.lookup(self.dataset).protocol.action_from_dict
        rebuilt = self.steps.manifest.get(REBUILT_STATS_KEY, {}).get(rebuild) if rebuild else None
        if rebuilt is not None:
            return self._finite(rebuilt[kind], kind)
        if kind == "exact":
            return self._finite(self.steps.manifest["action_stats"], kind)
        if MULTINET_STATS_KEY not in self.steps.manifest:
            raise ValueError(f"{self.steps.directory}: converted by an older multinet_jax without MultiNet's split "
                             "statistics; run `multinet-jax convert` on the source again")
        return self._finite(self.steps.manifest[MULTINET_STATS_KEY], kind)

    def _finite(self, stats: dict | None, kind: str) -> dict | None:
        """Statistics that are not finite are refused, not used: an earlier version's over a non-finite or huge action.
        MultiNet's own may lack a std (its float32 `E[x^2] - E[x]^2` cancels below zero for a dim of small spread about
        a large mean): kept, as the metrics read only min, max and mean; unnormalizing with them is refused
        (`eval.loop.check_split_std`)."""
        names = ("min", "max", "mean") if kind == "multinet" else ("min", "max", "mean", "std")
        if stats is not None and not all(np.isfinite(stats[name]).all() for name in names):
            raise ValueError(f"{self.steps.directory}: its action statistics hold NaN or inf (a step's action is not "
                             "finite or too large); fix the data, then remove this conversion to convert it again")
        return stats
