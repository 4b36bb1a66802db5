"""Small demo datasets in each domain's real publisher format, generated deterministically.

The layout is MultiNet's (`<data_dir>/<domain>/public/...`, as in its `multinet_sample`), so the same
flags work on the demo, on `../shared/data/multinet_sample` and on a full MultiNet download:
  openx_bimanual/         tf.data snapshot (`tf.data.Dataset.save`) of RLDS-style steps, 14-dim actions
  openx_multi_embodiment/ tf.data snapshot of RoboVQA steps (16 frames, raw question/answer text)
  overcooked_ai/          pickle of row dicts of strings (`state` = base64 PNG), as overcooked_ai's trials
  piqa/                   piqa.jsonl (goal, sol1, sol2, label)
  odinw/                  <Subset>/categories.json, object_caption_pairs.json, bbox_images/*.jpg
  sqa3d/                  SQA3D's balanced questions/annotations JSON + one top-down PNG per scene
  bfcl_v3/                MultiNet's questions.jsonl / answers.jsonl
  act2answer/             an Act2Answer item set (pairs.json + images/), `multinet_jax.act2answer.generated`
The content is synthetic (random images, templated text) but every field the readers use is real-typed.
"""

from __future__ import annotations

import base64
import io
import json
import pathlib
import pickle
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

SPLIT = "public"
# The file that marks a domain's data folder as the demo's: `--demo` evaluates only such folders, and generated
# datasets go only beside them.
DEMO_DATA_MARKER = ".multinet_jax_demo_data"
SAMPLES_PER_DOMAIN = 12
_OBJECTS = ("red cup", "blue towel", "green block", "yellow sponge", "black marker", "white plate")
_VERBS = ("pick up", "push", "reach", "place", "wipe", "open")
_PLACES = ("the table", "the drawer", "the shelf", "the sink")
_ODINW_SUBSETS = {"AerialMaritimeDrone": ("boat", "car", "dock", "jetski", "lift"), "NorthAmericaMushrooms": ("CoW", "chanterelle")}
_OVERCOOKED_MOVES = ("[0, -1]", "[0, 1]", "[1, 0]", "[-1, 0]", "[0, 0]", '"interact"')
_FILE_CALLS = ("ls(a=True)", "cd(folder='documents')", "cat(file_name='notes.txt')", "touch(file_name='todo.txt')", "pwd()")


def _rng(domain: str) -> np.random.Generator:
    return np.random.default_rng(sum(map(ord, domain)))  # a fixed seed per domain


def _image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random picture (gradients + blocks) that compresses and resizes like a photo."""
    base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((width, height), Image.BILINEAR))


def _encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def _instruction(rng: np.random.Generator) -> str:
    return f"{rng.choice(_VERBS)} the {rng.choice(_OBJECTS)} on {rng.choice(_PLACES)}".capitalize() + "."


def openx_actions(count: int = SAMPLES_PER_DOMAIN, dims: int = 14) -> np.ndarray:
    """The demo bimanual actions: smooth per-episode trajectories (so chunks look like robot motion)."""
    rng = _rng("openx_bimanual")
    time = np.arange(count)[:, None]
    return (np.sin(time / 3.0 + rng.uniform(0, 6, size=dims)) * rng.uniform(0.1, 1.0, size=dims)).astype(np.float32)


def _write_tf_snapshot(directory: pathlib.Path, steps: list[dict]) -> None:
    import tensorflow as tf

    columns = {key: [step[key] for step in steps] for key in steps[0] if key != "observation"}
    columns["observation"] = {key: [step["observation"][key] for step in steps] for key in steps[0]["observation"]}
    tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(np.asarray, columns, check_types=False)).save(str(directory))


def _episode_flags(index: int, count: int, episode_length: int) -> dict:
    first, last = index % episode_length == 0, index % episode_length == episode_length - 1 or index == count - 1
    return {"is_first": first, "is_last": last, "is_terminal": last}


def write_openx_bimanual(root: pathlib.Path, count: int = SAMPLES_PER_DOMAIN) -> None:
    rng = _rng("openx_bimanual")
    actions = openx_actions(count)
    steps, instruction = [], ""
    for index, action in enumerate(actions):
        flags = _episode_flags(index, len(actions), episode_length=6)
        instruction = _instruction(rng) if flags["is_first"] else instruction
        steps.append({
            **flags, "reward": np.float32(0.0), "discount": np.float32(1.0), "language_instruction": instruction,
            "action": action, "observation": {"image": _image(rng, 128, 128), "action_l": action[:7], "action_r": action[7:],
                            "pose_l": action[:6] * 0.5, "pose_r": action[7:13] * 0.5},
        })
    _write_tf_snapshot(root / "openx_bimanual" / SPLIT / "translated_shard_0", steps)


def write_openx_multi_embodiment(root: pathlib.Path) -> None:
    rng = _rng("openx_multi_embodiment")
    steps = []
    for index in range(SAMPLES_PER_DOMAIN):
        goal, task = _instruction(rng), _instruction(rng)
        steps.append({
            **_episode_flags(index, SAMPLES_PER_DOMAIN, episode_length=4),
            "observation": {
                "images": np.stack([_image(rng, 64, 64) for _ in range(16)]),
                "raw_text_question": f"current goal is: {goal} last 20 steps: 1- {task} Q: is it possible to {task.lower()}",
                "raw_text_answer": str(rng.choice(["yes", "no"])),
            },
        })
    _write_tf_snapshot(root / "openx_multi_embodiment" / SPLIT / "translated_shard_0", steps)


def write_overcooked(root: pathlib.Path) -> None:
    rng = _rng("overcooked_ai")
    rows = []
    for index in range(SAMPLES_PER_DOMAIN):
        trial = index // 6
        moves = rng.choice(_OVERCOOKED_MOVES, size=2)
        rows.append({
            "state": base64.b64encode(_encoded(_image(rng, 96, 160), "PNG")).decode("ascii"),
            "joint_action": f"[{moves[0]}, {moves[1]}]",
            "reward": "0", "score": "0",
            "time_left": str(60.0 - (index % 6) * 0.2), "time_elapsed": str((index % 6) * 0.2),
            "cur_gameloop": str(index % 6 + 1),
            "layout_name": ("cramped_room", "asymmetric_advantages")[trial % 2],
            "trial_id": f"demo-trial-{trial}",
        })
    directory = root / "overcooked_ai" / SPLIT
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "2020_hh_trials_train.pickle").write_bytes(pickle.dumps(rows))


def write_piqa(root: pathlib.Path) -> None:
    rng = _rng("piqa")
    directory = root / "piqa" / SPLIT
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(SAMPLES_PER_DOMAIN):
        thing, place = rng.choice(_OBJECTS), rng.choice(_PLACES)
        good, bad = f"Carry the {thing} with both hands to {place}.", f"Throw the {thing} across the room to {place}."
        label = int(rng.integers(0, 2))
        sol1, sol2 = (good, bad) if label == 0 else (bad, good)
        lines.append(json.dumps({"id": f"demo-piqa-{index}", "goal": f"How do I move the {thing} to {place}?",
                                 "sol1": sol1, "sol2": sol2, "label": label}))
    (directory / "piqa.jsonl").write_text("\n".join(lines) + "\n")


def write_odinw(root: pathlib.Path) -> None:
    rng = _rng("odinw")
    per_subset = SAMPLES_PER_DOMAIN // len(_ODINW_SUBSETS)
    for subset, names in _ODINW_SUBSETS.items():
        directory = root / "odinw" / SPLIT / subset
        (directory / "bbox_images").mkdir(parents=True, exist_ok=True)
        categories = [{"id": 0, "name": "objects", "supercategory": "none"}]
        categories += [{"id": i + 1, "name": name, "supercategory": "objects"} for i, name in enumerate(names)]
        category_names = [category["name"] for category in categories]  # ODinW's files list the root first
        (directory / "categories.json").write_text(json.dumps(
            {"categories": categories, "num_categories": len(categories), "category_names": category_names, "dataset": subset}, indent=2))
        pairs = []
        for index in range(per_subset):
            category = int(rng.integers(1, len(names) + 1))
            file_name = f"bbox_{index}_{subset.lower()}_{index}.jpg"
            (directory / "bbox_images" / file_name).write_bytes(_encoded(_image(rng, 48, 64), "JPEG"))
            pairs.append({"bbox_image": file_name, "original_image": f"{subset.lower()}_{index}.jpg",
                          "category_id": category, "category_name": names[category - 1], "bbox": [0, 0, 64, 48],
                          "bbox_id": index, "annotation_id": index, "area": 3072, "dataset": subset})
        (directory / "object_caption_pairs.json").write_text(json.dumps(pairs, indent=2))


def write_sqa3d(root: pathlib.Path) -> None:
    rng = _rng("sqa3d")
    directory = root / "sqa3d" / SPLIT
    directory.mkdir(parents=True, exist_ok=True)
    questions, annotations = [], []
    scenes = [f"scene{index:04d}_00" for index in range(3)]
    for scene in scenes:
        (directory / f"{scene}_vh_clean_top_down.png").write_bytes(_encoded(_image(rng, 96, 96), "PNG"))
    for index in range(SAMPLES_PER_DOMAIN):
        thing = str(rng.choice(_OBJECTS))
        questions.append({"question_id": 1000 + index, "scene_id": scenes[index % len(scenes)],
                          "situation": f"I am standing next to the {thing}.", "alternative_situation": [],
                          "question": f"What color is the {thing}?"})
        annotations.append({"question_id": 1000 + index, "scene_id": scenes[index % len(scenes)],
                            "answers": [{"answer": thing.split()[0], "answer_confidence": "yes", "answer_id": 1}]})
    # SQA3D names its files by its own split ("test"), whatever folder MultiNet keeps them in.
    (directory / "v1_balanced_questions_test_scannetv2.json").write_text(json.dumps({"questions": questions}))
    (directory / "v1_balanced_sqa_annotations_test_scannetv2.json").write_text(json.dumps({"annotations": annotations}))


def write_bfcl(root: pathlib.Path) -> None:
    rng = _rng("bfcl")
    directory = root / "bfcl_v3" / SPLIT
    directory.mkdir(parents=True, exist_ok=True)
    questions, answers = [], []
    for index in range(SAMPLES_PER_DOMAIN // 2):
        num_turns = int(rng.integers(2, 4))
        calls = [[str(rng.choice(_FILE_CALLS))] for _ in range(num_turns)]
        turns = [[{"role": "user", "content": f"Please run {call[0].split('(')[0]} for me."}] for call in calls]
        questions.append({"id": f"multi_turn_base_{index}", "question": turns,
                          "initial_config": {"GorillaFileSystem": {"root": {"demo": {"type": "directory", "contents": {}}}}},
                          "path": [], "involved_classes": ["GorillaFileSystem"]})
        answers.append({"id": f"multi_turn_base_{index}", "ground_truth": calls, "line_id": index})
    (directory / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (directory / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))


def write_act2answer(root: pathlib.Path) -> None:
    """The generated Act2Answer item set (5 items per category: enough groups for 5-fold probes)."""
    from multinet_jax.act2answer import write_item_set

    write_item_set(root / "act2answer" / SPLIT, items_per_category=5)


# domain name (as `data.load` takes it) -> (folder under data_dir, writer)
WRITERS: dict[str, tuple[str, Callable[[pathlib.Path], None]]] = {
    "openx_bimanual": ("openx_bimanual", write_openx_bimanual),
    "openx_multi_embodiment": ("openx_multi_embodiment", write_openx_multi_embodiment),
    "overcooked_ai": ("overcooked_ai", write_overcooked),
    "piqa": ("piqa", write_piqa),
    "odinw": ("odinw", write_odinw),
    "sqa3d": ("sqa3d", write_sqa3d),
    "bfcl": ("bfcl_v3", write_bfcl),
    "act2answer": ("act2answer", write_act2answer),
}


def missing(root: pathlib.Path, domains: Sequence[str]) -> list[str]:
    """The listed domains whose demo dataset folder under `root` does not exist."""
    unknown = [name for name in domains if name not in WRITERS]
    if unknown:
        raise ValueError(f"no demo dataset for {unknown}; demo domains: {sorted(WRITERS)}")
    return [name for name in domains if not (root / WRITERS[name][0]).exists()]


def write_missing(root: pathlib.Path, domains: Sequence[str]) -> list[str]:
    """Writes the demo dataset of every listed domain whose folder does not exist, each marked as the demo's;
    returns those written."""
    written = missing(root, domains)
    for name in written:
        WRITERS[name][1](root)
        (root / WRITERS[name][0] / DEMO_DATA_MARKER).touch()
    return written


def corpus() -> Iterator[str]:
    """Text the demo tokenizer is trained on: the vocabulary of every demo prompt and answer."""
    from multinet_jax.data import prompts

    words = [*_OBJECTS, *_VERBS, *_PLACES, *_FILE_CALLS, *(n for names in _ODINW_SUBSETS.values() for n in names)]
    yield from words
    yield prompts.piqa_prompt("How do I move the cup?", "Carry it.", "Throw it.")
    yield prompts.odinw_prompt("AerialMaritimeDrone", _ODINW_SUBSETS["AerialMaritimeDrone"])
    yield prompts.overcooked_prompt("cramped_room", 59.8, 0.2)
    yield prompts.sqa3d_prompt("I am standing next to the red cup.", "What color is the cup?")
    yield prompts.robovqa_prompt("current goal is: push the block Q: is it possible to push the block")
    environment = prompts.bfcl_environment({"GorillaFileSystem": {"root": {}}}, ["GorillaFileSystem"], ["GorillaFileSystem.ls"])
    yield prompts.bfcl_prompt(prompts.bfcl_assistant_turn(prompts.bfcl_user_turn(environment, [{"content": "Please run ls."}]), "ls()"))
    yield "Task: pick up the red cup, State: 128 127 130;\nAction: | yes no 0 1 2 3 4 5 6 7 8 9"
    yield from (f"Turn {turn}: {call}" for turn in range(1, 4) for call in _FILE_CALLS)


def action_chunks(horizon: int = 10) -> list[np.ndarray]:
    """z-scored chunks of the demo Open-X actions, what the demo FAST tokenizer is fitted on."""
    actions = openx_actions()
    actions = (actions - actions.mean(axis=0)) / (actions.std(axis=0) + 1e-6)
    padded = np.concatenate([actions, np.repeat(actions[-1:], horizon, axis=0)])
    return [padded[start : start + horizon] for start in range(len(actions))]
