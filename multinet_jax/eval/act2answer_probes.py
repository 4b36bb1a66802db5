"""`eval --domains=act2answer`: the text probe and the action probe of every episode, side by side.

- Text probe (every backbone the same way): the scene image and the knowledge question as the prompt (openpi's
  format: BOS + question + "\\n"), the two options "left" / "right" scored by their log-likelihood
  (`model.score_options`); the prediction is the likelier one, null (invalid) where a score is not finite (a NaN, an
  overflow) or the two tie (`act2answer_scoring.text_choice`).
- Action probe: the episode's instruction through the model's action head, as any Open-X step; the predicted chunk
  is unnormalized with the checkpoint's action norm stats and integrated (summed over the horizon) to the end
  effector's displacement; the predicted tile is the one whose direction from the cube's start position the
  displacement's xy points closer to (cosine; `act2answer.geometry.HARNESS_TABLETOP`). This assumes the first three
  action dimensions are end-effector translation deltas in the robot's base frame (Bridge / WidowX policies, as the
  harness's controller applies them), turned into the tiles' world frame (`geometry.base_to_world_xy`: the WidowX
  faces the tiles, so its left is the world's -y); a displacement of zero, one pointing towards neither tile (both
  cosines <= 0: away from the tiles, not an answer) or a NaN chunk (a FAST sequence that did not decode) is an invalid
  action prediction.
- A model the action probe does not apply to gets the text probe only, its records and metrics saying why in
  `action_probe` (action fields null; `eval/preflight.action_probe_unavailable`): one without an action head
  (PaliGemma, the source VLM; `"action_head": false`), or a checkpoint whose actions are not end-effector deltas or
  do not say (`registry.Family.action_frame`: a LeRobot config.json names none).
Records keep the evaluator's keys (`prediction` is the text probe's choice; `prompt_tokens`, `prompt_token_limit`,
`prompt_tokens_cut` count its question) plus `action_head`, `action_probe`, `action_prediction`, `text_scores`,
`action_displacement`, `action_prompt_tokens` / `action_prompt_token_limit` / `action_prompt_tokens_cut` (the action
probe's prompt; null where it did not run), `category` and `layout`; `score --domain=act2answer_probes` scores them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from multinet_jax import domains
from multinet_jax.act2answer.geometry import HARNESS_TABLETOP, TILE_NAMES, base_to_world_xy
from multinet_jax.data import transforms
from multinet_jax.metrics.act2answer_scoring import NO_ACTION_HEAD, text_choice

TEXT_PROMPT_KEYS = ("text_prompt", "text_prompt_mask")
TEXT_PROMPT_TOKENS = "text_prompt_tokens"  # each question's whole length (PaliGemma's tokens), before the cut


def text_probe_inputs(batch: Mapping[str, Any], tokenizer: Any, max_token_len: int, bundled: bool = False) -> dict[str, Any]:
    """The question prompts and the options' tokens `[b, 2, m]` (no BOS) for `score_options`.

    `tokenizer`: PaliGemma's (the prompts are tokenized here, cut at `max_token_len` and counted in
    `TEXT_PROMPT_TOKENS`), or with `bundled` the model's own (OpenVLA's: the model formats and tokenizes the
    question texts itself, so `text_prompt` holds them and `Model.prompt_lengths` counts them)."""
    questions = [question or "" for question in batch["question"]]
    encode = tokenizer.encode_continuation if bundled else tokenizer.encode
    options = [encode(name) for name in TILE_NAMES]
    length = max(len(ids) for ids in options)
    option_tokens = np.zeros((len(questions), len(options), length), np.int32)
    option_mask = np.zeros(option_tokens.shape, bool)
    for index, ids in enumerate(options):
        option_tokens[:, index, : len(ids)], option_mask[:, index, : len(ids)] = ids, True
    if bundled:
        return {"text_prompt": questions, "option_tokens": option_tokens, "option_mask": option_mask}
    # Pi0's prompt format, tokenized, cut and counted as the pipeline does any prompt
    prompts = [transforms.tokenize(tokenizer, question, domains.PromptFormat.OPENPI.value, max_token_len)
               for question in questions]
    return {
        "text_prompt": np.stack([prompt["tokenized_prompt"] for prompt in prompts]).astype(np.int32),
        "text_prompt_mask": np.stack([prompt["tokenized_prompt_mask"] for prompt in prompts]).astype(bool),
        TEXT_PROMPT_TOKENS: np.array([prompt["prompt_tokens"] for prompt in prompts], np.int32),
        "option_tokens": option_tokens,
        "option_mask": option_mask,
    }


def text_probe_observation(observation: Mapping[str, Any]) -> dict[str, Any]:
    """The model inputs of the text probe: the action probe's observation with the question as its prompt (texts for
    a model with its own tokenizer, else PaliGemma's tokens)."""
    action_inputs = _action_inputs(observation)
    if "text_prompt_mask" not in observation:  # question texts for a model with its own tokenizer
        text_inputs = {**action_inputs, "prompt": observation["text_prompt"]}
    else:
        text_inputs = {**action_inputs, "tokenized_prompt": observation["text_prompt"],
                       "tokenized_prompt_mask": observation["text_prompt_mask"]}
    for key in ("token_ar_mask", "token_loss_mask"):  # the action prompt's (Pi0-FAST); the question is all prefix
        text_inputs.pop(key, None)
    return text_inputs


def _action_inputs(observation: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in observation.items()
            if key not in (*TEXT_PROMPT_KEYS, TEXT_PROMPT_TOKENS, "option_tokens", "option_mask")}


def run(model: Any, observation: Mapping[str, Any], sample_actions: Callable[[dict], Any],
        unavailable: str | None) -> dict[str, Any]:
    """Both probes for one batch: {"text_scores": [b, 2], "actions": [b, horizon, action_dim]}; where the action probe
    does not apply, {"text_scores", "action_probe": `unavailable`} (why: "not applicable: ...") and no action call."""
    scores = model.score_options(text_probe_observation(observation), observation["option_tokens"], observation["option_mask"])
    probes = {"text_scores": np.asarray(jax.device_get(scores))}
    if unavailable is None:
        probes["actions"] = np.asarray(jax.device_get(sample_actions(_action_inputs(observation))))
    else:
        probes["action_probe"] = unavailable
    return probes


def action_choice(displacement: np.ndarray) -> int | None:
    """The tile the base-frame xy displacement points at (in the world frame, cosine with each tile's direction from
    the cube's start); None where it points at neither (no motion, a tie, or away from both: a move away from the
    tiles is no answer, whichever tile it leans to)."""
    xy = np.asarray(displacement[:2], np.float64)
    if not np.all(np.isfinite(xy)) or not np.any(xy):
        return None
    xy = base_to_world_xy(xy)
    start = np.asarray(HARNESS_TABLETOP.cube.center[:2])
    cosines = []
    for name in TILE_NAMES:
        direction = np.asarray(HARNESS_TABLETOP.tile(name).center[:2]) - start
        cosines.append(float(xy @ direction / (np.linalg.norm(xy) * np.linalg.norm(direction))))
    return int(np.argmax(cosines)) if cosines[0] != cosines[1] and max(cosines) > 0 else None


def records(batch: Mapping[str, Any], rows: Sequence[int], raw: Mapping[str, Any],
            norm: Callable[[np.ndarray], np.ndarray] | None, item: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """One record per valid row (see the module docstring); `norm` unnormalizes actions (`domains.ActionNorm`; None
    where the action probe does not apply)."""
    has_actions = "actions" in raw
    displacement = norm(raw["actions"][:, :, :3]).sum(axis=1) if has_actions else np.full((len(raw["text_scores"]), 3), np.nan)
    output = []
    for row in rows:
        scores = raw["text_scores"][row]
        output.append({
            "id": str(item(batch["id"][row])),
            "sample_index": int(batch["sample_index"][row]),
            "raw_output": [float(score) for score in scores],
            "prediction": text_choice(scores.tolist()),
            "ground_truth": int(item(batch["ground_truth"][row])),
            "action_head": has_actions or raw["action_probe"] != NO_ACTION_HEAD,
            "action_probe": raw.get("action_probe"),  # None: it ran
            "action_prediction": action_choice(displacement[row]),
            "action_displacement": ([float(value) for value in displacement[row]]
                                    if np.all(np.isfinite(displacement[row])) else None),  # NaN: not decoded
            "category": str(item(batch["category"][row])),
            "layout": str(item(batch["layout"][row])),
        })
    return output
