"""SQA3D (situated question answering in ScanNet scenes), in its published format.

`data_dir` holds `v1_balanced_questions_<split>_scannetv2.json` (`questions`: question_id,
scene_id, situation, question, ...) and `v1_balanced_sqa_annotations_<split>_scannetv2.json`
(`annotations`: question_id, answers[{answer, ...}], ...), plus one top-down image per scene
(`<scene_id>*.png` anywhere below `data_dir`, e.g. `scene0015_00_vh_clean_top_down.png` or
`scene0015_00/scene0015_00.png`, MultiNet's naming; a second image of a scene is refused, `scene_images`). The ground
truth is the first answer, which must be a non-empty text. As
MultiNet did, questions without an annotation (`sqa3d_dataloader.py` `_create_qa_pairs`, d6fe80e) and
questions whose scene has no image (`sqa3d_hf_inference.py`) are skipped, each counted
(`skipped_without_annotation`, `skipped_without_image`) and logged; an annotation without answers, a first answer
that is not a non-empty text (MultiNet's loader scored a missing one as ''), or an image that does not decode, is a bad
record.
"""

from __future__ import annotations

import logging
import pathlib
import re
from typing import Any

from multinet_jax import fingerprints
from multinet_jax.data import prompts
from multinet_jax.data.bad_records import BadRecordError, check_unique_ids
from multinet_jax.data.jsonl import read_json
from multinet_jax.data.transforms import decode_image

SCENE_ID = re.compile(r"^(scene\d+_\d+)")


def question_files(directory: pathlib.Path, split: str) -> tuple[pathlib.Path, pathlib.Path]:
    questions = directory / f"v1_balanced_questions_{split}_scannetv2.json"
    annotations = directory / f"v1_balanced_sqa_annotations_{split}_scannetv2.json"
    for path in (questions, annotations):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (SQA3D split {split!r})")
    return questions, annotations


def scene_images(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """Each scene's one image. Two images of a scene (`scene0000_00_bev_depth.png` beside its top-down view) are
    refused: MultiNet's `_create_scene_image_mapping` kept whichever `rglob` yielded last, an order the filesystem
    picks, so no rule of its tells which one it scored."""
    images: dict[str, pathlib.Path] = {}
    for path in fingerprints.glob(directory, "**/*.png"):
        match = SCENE_ID.match(path.stem)
        if match:
            scene = match.group(1)
            if scene in images:
                raise ValueError(f"{path}: a second image of {scene}, beside {images[scene]}; keep one")
            images[scene] = path
    return images


def _entries(path: pathlib.Path, key: str) -> list[dict]:
    """`path`'s `key` list of objects (SQA3D's questions or annotations file)."""
    content = read_json(path)
    entries = content.get(key) if isinstance(content, dict) else None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ValueError(f"{path}: expected a JSON object whose {key!r} is a list of objects")
    return entries


class Sqa3dSource:
    def __init__(self, directory: pathlib.Path, split: str | None = None, dataset: str = "sqa3d"):
        directory = pathlib.Path(directory)
        self.dataset = dataset
        questions_path, annotations_path = question_files(directory, split or "test")
        questions = _entries(questions_path, "questions")
        annotations = _entries(annotations_path, "annotations")
        # two annotations of one question: the last would win silently, scoring a ground truth at random
        check_unique_ids(dataset, ((f"{annotations_path.name}[{i}]", item["question_id"]) for i, item in enumerate(annotations)
                                   if item.get("question_id") is not None))
        answers = {item.get("question_id"): item for item in annotations}
        self._images = scene_images(directory)
        indexed = [(f"{questions_path.name}[{i}]", question, answers.get(question.get("question_id"))) for i, question in enumerate(questions)]
        annotated = [entry for entry in indexed if entry[2] is not None]
        self._questions = [entry for entry in annotated if entry[1].get("scene_id") in self._images]
        self.skipped_without_annotation = len(indexed) - len(annotated)
        self.skipped_without_image = len(annotated) - len(self._questions)
        check_unique_ids(dataset, ((record, question.get("question_id")) for record, question, _ in self._questions))
        for count, reason in ((self.skipped_without_annotation, f"without an annotation in {annotations_path.name}"),
                              (self.skipped_without_image, "whose scene has no image")):
            if count:
                logging.warning("%s: skipping %d of %d questions %s (as MultiNet did)", questions_path, count, len(indexed), reason)

    def __len__(self) -> int:
        return len(self._questions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, question, annotation = self._questions[index]
        for name in ("question_id", "scene_id", "question"):
            if name not in question:
                raise BadRecordError(self.dataset, record, name, "missing")
        if not annotation.get("answers"):
            raise BadRecordError(self.dataset, record, "answers", f"no answers for question_id {question['question_id']}")
        answer = annotation["answers"][0]
        if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str) or not answer["answer"]:
            raise BadRecordError(self.dataset, record, "answers[0].answer", f"expected a non-empty text answer, got {answer!r}"[:300])
        scene_id = question["scene_id"]
        try:
            image = decode_image(self._images[scene_id].read_bytes())
        except (OSError, ValueError) as error:
            raise BadRecordError(self.dataset, record, "image", f"{self._images[scene_id]}: {error}") from None
        situation = question.get("situation", "")
        return {
            "id": str(question["question_id"]),
            "image": image,
            "state": None,
            "prompt": prompts.sqa3d_prompt(situation, question["question"]),
            "ground_truth": answer["answer"],
            "scene_id": scene_id,
            "question": question["question"],
            "situation": situation,
        }
