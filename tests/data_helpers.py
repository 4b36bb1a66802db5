"""Helpers for the data tests: a stand-in tokenizer and writers of small datasets in publishers' formats."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
from PIL import Image


def writable_copy(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """A copy of a file tree of ../shared (read-only) that a test may edit."""
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


class CharTokenizer:
    """`prompt_ids` like the PaliGemma tokenizer's: BOS, then one id per character (any prompt format)."""

    def prompt_ids(self, text: str, prompt_format: str) -> list[int]:
        return [2] + [3 + ord(character) % 1000 for character in text]


def tiny_rlds_episodes() -> list[list[dict]]:
    """3 episodes (2, 3, 4 steps) in the Open-X schema: dict action with a non-float leaf."""
    rng = np.random.default_rng(0)
    episodes = []
    for episode in range(3):
        steps = []
        for step in range(2 + episode):
            steps.append({
                "observation": {
                    "image": rng.integers(0, 255, (24, 32, 3), dtype=np.uint8),
                    "state": rng.normal(size=4).astype(np.float32),
                },
                "action": {
                    "world_vector": rng.normal(size=3).astype(np.float32),
                    "gripper": rng.normal(size=1).astype(np.float32),
                    "terminate": np.int32(step),
                },
                "language_instruction": f"pick up block {episode}",
                "is_first": step == 0,
                "is_last": step == 1 + episode,
            })
        episodes.append(steps)
    return episodes


def write_tiny_rlds(root: pathlib.Path, file_format: str) -> pathlib.Path:
    """Write `tiny_rlds_episodes()` with TFDS itself; returns the builder directory."""
    import tensorflow_datasets as tfds

    class TinyRlds(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "steps": tfds.features.Dataset({
                        "observation": {
                            "image": tfds.features.Image(shape=(24, 32, 3)),
                            "state": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                        },
                        "action": {
                            "world_vector": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                            "gripper": tfds.features.Tensor(shape=(1,), dtype=np.float32),
                            "terminate": tfds.features.Tensor(shape=(), dtype=np.int32),
                        },
                        "language_instruction": tfds.features.Text(),
                        "is_first": np.bool_,
                        "is_last": np.bool_,
                    })
                }),
            )

        def _split_generators(self, dl_manager):
            return {"test": self._generate_examples()}

        def _generate_examples(self):
            for index, steps in enumerate(tiny_rlds_episodes()):
                yield f"episode_{index}", {"steps": steps}

    builder = TinyRlds(data_dir=str(root / file_format), file_format=file_format)
    builder.download_and_prepare()
    return pathlib.Path(builder.data_dir)


def write_sqa3d(directory: pathlib.Path, split: str = "test") -> dict:
    """A small SQA3D split in the published layout; returns what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    questions = [
        {"question_id": 220602000000, "scene_id": "scene0015_00", "situation": "I am facing the window.", "question": "What is on my left?"},
        {"question_id": 220602000001, "scene_id": "scene0015_00", "situation": "I am sitting on the bed.", "question": "How many chairs are there?", "alternative": "I sit on the bed."},
        {"question_id": 220602000002, "scene_id": "scene0099_01", "situation": "I am at the door.", "question": "Is the light on?"},
        {"question_id": 220602000003, "scene_id": "scene0015_00", "situation": "I stand by the desk.", "question": "Which way is the sink?"},
    ]
    annotations = [
        {"question_id": 220602000000, "scene_id": "scene0015_00", "answers": [{"answer": "table", "answer_confidence": "yes", "answer_id": 1}, {"answer": "desk", "answer_id": 2}]},
        {"question_id": 220602000001, "scene_id": "scene0015_00", "answers": [{"answer": "two", "answer_confidence": "yes", "answer_id": 1}]},
        {"question_id": 220602000002, "scene_id": "scene0099_01", "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": 1}]},
    ]  # question ...003 has no annotation
    (directory / f"v1_balanced_questions_{split}_scannetv2.json").write_text(json.dumps({"info": "sqa3d", "questions": questions}))
    (directory / f"v1_balanced_sqa_annotations_{split}_scannetv2.json").write_text(json.dumps({"info": "sqa3d", "annotations": annotations}))
    image = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(image).save(directory / "scene0015_00_vh_clean_top_down.png")  # scene0099_01 has no image
    return {"questions": questions, "annotations": annotations, "image": image}


def write_translated_shards(directory: pathlib.Path, shards: list[list[dict]], state_fields: tuple[str, ...] = (),
                            state_shapes: dict[str, list[int]] | None = None) -> pathlib.Path:
    """MultiNet's translated shards (`translated_shard_N`, written by `tf.data.Dataset.save`) holding steps with the
    given `action` dicts (`{key: {"dtype": ..., "value": ...}}`; a numpy array is written as a plain action tensor
    in its dtype); each step also gets an 8x8 image, the float
    `observation/<name>` fields in `state_fields` (shape [1], the step's number) and in `state_shapes` (each of its
    shape, values telling field, element and step apart), an instruction, a reward and `is_last`."""
    import tensorflow as tf

    def shaped(field: int, shape: list[int], step: int) -> np.ndarray:
        return (np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) / 100 + 10 * field + step).astype(np.float32)

    directory.mkdir(parents=True, exist_ok=True)
    for index, actions in enumerate(shards):
        steps = [{
            "observation": {"image": np.full((8, 8, 3), step, np.uint8),
                            **{name: np.full((1,), step, np.float32) for name in state_fields},
                            **{name: shaped(field, shape, step) for field, (name, shape) in enumerate((state_shapes or {}).items())}},
            "action": action if isinstance(action, np.ndarray) else
                      {key: np.asarray(leaf["value"], leaf["dtype"]) for key, leaf in action.items()},
            "language_instruction": f"shard {index} step {step}".encode(),
            "reward": np.float32(0),
            "is_last": step == len(actions) - 1,
        } for step, action in enumerate(actions)]
        stacked = tf.nest.map_structure(lambda *leaves: np.stack(leaves), *steps)
        tf.data.Dataset.from_tensor_slices(stacked).save(str(directory / f"translated_shard_{index}"))
    return directory
