"""RoboVQA (MultiNet's `openx_multi_embodiment`): visual question answering on robot scenes.

Stored like Open-X (translated shards or RLDS, converted to step-level ArrayRecord by `openx.py`);
each step holds 16 frames in `observation/images`, `observation/raw_text_question` and
`observation/raw_text_answer`. MultiNet's rules (openx_dataloader.py): the *last* frame is the
image, the question is reformatted around its first "Q:" (`prompts.robovqa_question`), and the
answer text is the ground truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from multinet_jax.data import prompts
from multinet_jax.data.bad_records import BadRecordError
from multinet_jax.data.openx import EPISODE_KEY, STEP_KEY, checked_image, step_record_name

QUESTION_KEY, ANSWER_KEY, IMAGES_KEY = "observation/raw_text_question", "observation/raw_text_answer", "observation/images"


def robovqa_sample(step: dict[str, Any], dataset: str) -> dict[str, Any]:
    record = step_record_name(step)
    for key in (QUESTION_KEY, ANSWER_KEY, IMAGES_KEY):
        if key not in step:
            raise BadRecordError(dataset, record, key, "missing")
    for key in (QUESTION_KEY, ANSWER_KEY):
        if not isinstance(step[key], str):  # str() of a list would be its repr, read as the question or answer
            raise BadRecordError(dataset, record, key, f"expected one text, got {type(step[key]).__name__}")
    frames = np.asarray(step[IMAGES_KEY])
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise BadRecordError(dataset, record, IMAGES_KEY, f"expected [frames, h, w, 3], got {list(frames.shape)}")
    return {
        "id": record,
        "image": checked_image(frames[-1], dataset, record, IMAGES_KEY),
        "state": None,
        "prompt": prompts.robovqa_prompt(str(step[QUESTION_KEY])),
        "ground_truth": str(step[ANSWER_KEY]),
        "episode_id": str(step[EPISODE_KEY]),
        "step_id": np.int64(step[STEP_KEY]),
    }
