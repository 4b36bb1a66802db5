"""MultiNet v1.0's Magma protocol: how MultiNet's own Magma scripts (ManifoldRG/MultiNet d6fe80e,
`src/v1/modules/Magma/scripts/`) prompted Magma-8B, how long they let it answer and how they read its answers.
The Magma family's registry entry names `domain_protocol`, so `eval --model=magma` runs it without the evaluator
naming the family. `tests/test_protocol_magma.py` and `tests/test_protocol_magma_games.py` check all of it against what
those scripts built, parsed and scored when run (`tests/fixtures/multinet_magma_generated.json`,
`multinet_magma_games.json`).

- Open-X (`magma_openx_inference.py`): [system "You are agent that can see, talk and act.", user "<image>\\nWhat
  action should the robot take to {instruction}?"] through Magma's chat template; sampled at temperature 0.7 with
  `max_new_tokens=1000`, through HF `generate`'s top-k 50 (its default; generation_config.json names none) (here from `--seed`, folded with each sample's index: reproducible, not MultiNet's torch
  draws); the 7 ids before the last generated token (`generate_ids[0, -8:-1]`) decoded by Magma's `ActionTokenizer`,
  zero-padded (normalized zeros) or truncated to the split statistics' dims, unnormalized with the split's q01 / q99
  on every dim (`unnormalize_action`: no mask). A row whose decode ends before 7 ids exist is an invalid prediction
  here; MultiNet's slice then read prompt ids as actions.
- PIQA (`piqa_inference.py`): the question alone as the user turn (no system prompt, no image), tokenized by
  `apply_chat_template` (one BOS, cut at 1024 tokens); greedy, 5 new tokens; the answer is the first run of digits.
- ODinW, SQA3D, RoboVQA (`odinw_single_inference.py`, `sqa3d_single_inference.py`, `robovqa_single_inference.py`):
  [system: the domain's system prompt, user "<image>\\n{question}"] with the sample's image at its own size (Magma's
  processor crops it); greedy, 75 new tokens; ODinW's answer is the first run of digits when it names a class (an
  answer starting "Coordinate" is invalid), SQA3D's / RoboVQA's the normalized text (`domains.parse_text_magma`).
- BFCL (`bfcl_inference.py`): [system: BFCL's prompt, user: the environment, then each turn's user messages and
  Magma's non-empty answers as assistant turns], tokenized by `apply_chat_template` (cut at 1024 tokens, right side,
  as MultiNet's tokenizer did); greedy, 150 new tokens a turn.
- Overcooked-AI (`overcooked_single_inference.py`): [system "You are an agent that can see, talk and act.", user
  "<image>\\n{instruction}"], the instruction MultiNet's VLM prompt for the timestep (`data/prompts.py`
  `overcooked_instruction_prompt`: layout, seconds left and elapsed, action meanings, the 36 joint options, the
  answer format), with the game screen at its own size; greedy, 256 new tokens. Magma answers in text
  (`Protocol.answers_in_text`): the answer is read as a Python literal, else JSON, and is valid when it is a list of
  36 values `float()` takes summing to 1 within 1e-5 (`domains.parse_joint_probabilities`); scored with the
  project's Overcooked kernel under that rule (records' `answer_rule`): Brier MAE / MSE against the one-hot truth
  (2 when invalid), argmax as the action (-1 when invalid), per-player marginals, exact match, micro / macro
  precision, recall, F1, exactly the numbers of the script's `_calculate_final_metrics` (the project's names:
  `exact_match` for its `exact_match_rate`, `total_invalid_preds` for `total_invalids`, `predicted_actions` /
  `ground_truth_actions` for `preds` / `gt_actions`). One deviation: a non-finite probability is invalid here
  (MultiNet's sum check let a "nan" through and its Brier errors became NaN). The script batched by layout
  (`group_by_layout`), but answered row by row: the order of the samples does not change a number.
- openx_quadrupedal (`magma_openx_quadrupedal_inference.py`): the same conversation around MultiNet's VLM Open-X
  instruction (`data/prompts.py` `openx_instruction_prompt`: the gait's description, each of the 12 joints' verbal
  description with the split's min, max and mean as MultiNet computed them, the list answer format); greedy, 256
  new tokens; the answer read as a literal, else JSON, a non-list standing for a one-value list, valid when it holds
  the ground truth's number of values, none a string or set, each taken by `float()`
  (`domains.parse_action_values`); scored with the project's Open-X kernel against the split's MultiNet statistics
  (an invalid row scores the max - min errors), the numbers of the script's `_calculate_final_metrics`.
  What "as MultiNet ran it" means here: the script's first batch raised inside its prompt builder (MultiNet's saytap
  action descriptions are bare strings: its first call turns them into 1-tuples, which `format_instruction_prompt`
  has no case for, `sent` unbound; its second call adds the statistics) and `except Exception: continue` dropped it,
  so MultiNet's published run scored 2264 of 2268 steps. Here every step is scored, each with the prompt every
  step MultiNet scored got: dropping the first four steps would reproduce a crash, not a protocol. Its validity
  check reads `np.string_`, gone in NumPy 2 (where every answer of the right length would raise): the rule is the
  one it applied under the NumPy 1.x it ran with. Where its `float()` raised on a value of a list of the right
  length (None, a nested list) and dropped the whole batch, the row is invalid here; a non-finite value is invalid.

MultiNet's Open-X ground-truth transforms are reproduced (`scored_ground_truth`, named in each metrics file and in
the run manifest's protocol, `ground_truth`, so a resume across another transform is refused):
openx_bimanual is scored on its last 7 of 14 dims and openx_wheeled_robot on its action padded with zeros to 7
dims, each with the split's statistics mapped the same way (what MultiNet's recomputation gives). On Act2Answer,
which MultiNet never ran with Magma, Magma keeps the default output rules and reads SimplerEnv's step (7 greedy
action ids and the EOS after them), recorded as protocol `magma_simplerenv_step`, not MultiNet's. Every action rule needs a budget of 8 tokens at least (`ACTION_TOKENS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from multinet_jax import domains
from multinet_jax.models.interface import InferenceOptions
from multinet_jax.models.magma_inputs import SYSTEM_PROMPT, action_prompt

PROTOCOL_NAME = "multinet_v1_magma"
# Domains run without a MultiNet Magma script: SimplerEnv's step (7 greedy action ids and the EOS after them).
SIMPLERENV_STEP_NAME = "magma_simplerenv_step"
ACTION_DIM = 7
# Magma's action rules read 7 action ids and the token after them (the EOS that SimplerEnv's step stops at, the
# last generated token for `generate_ids[0, -8:-1]`).
ACTION_TOKENS = (ACTION_DIM + 1, f"{ACTION_DIM} action ids and the token after them")
OPENX_MAX_NEW_TOKENS = 1000
OPENX_TEMPERATURE = 0.7
_IMAGE_QUESTION = "<image>\n{question}"
MAX_SEQ_LEN = 1024  # the scripts' --max_seq_len: PIQA's and BFCL's chats cut there (right side) when tokenized
# The Overcooked and quadrupedal scripts' system prompt (the Open-X script's lacks the "an").
GAME_SYSTEM_PROMPT = "You are an agent that can see, talk and act."
GAME_MAX_NEW_TOKENS = 256

OPENX_CHAT = domains.Chat(SYSTEM_PROMPT, action_prompt("{question}"), "", tokenizer_bos=True)


def text_chats() -> dict[str, tuple[domains.Chat, int]]:
    """Per domain Magma answers in text: the conversation of its script (the question after what the domain's prompt puts before it,
    `data/prompts.py`) and its budget (max_new_tokens). A function, so that loading Magma (the suite, on an image
    without grain) does not import the data package."""
    from multinet_jax.data import prompts  # noqa: PLC0415  (the data package imports grain)

    # Overcooked's and quadrupedal's question: MultiNet's VLM instruction for the sample (`prompts.INSTRUCTION_PROMPT`)
    game = domains.Chat(GAME_SYSTEM_PROMPT, _IMAGE_QUESTION, "", tokenizer_bos=True, question_field=prompts.INSTRUCTION_PROMPT)

    return {
        "piqa": (domains.Chat(None, "{question}", prompts.with_system_prompt(prompts.PIQA_SYSTEM_PROMPT, ""), tokenizer_bos=False,
                              max_tokens=MAX_SEQ_LEN), 5),
        "odinw": (domains.Chat(prompts.ODINW_SYSTEM_PROMPT, _IMAGE_QUESTION,
                               prompts.with_system_prompt(prompts.ODINW_SYSTEM_PROMPT, ""), tokenizer_bos=True), 75),
        "sqa3d": (domains.Chat(prompts.SQA3D_SYSTEM_PROMPT, _IMAGE_QUESTION,
                               prompts.with_system_prompt(prompts.SQA3D_SYSTEM_PROMPT, ""), tokenizer_bos=True), 75),
        "openx_multi_embodiment": (domains.Chat(prompts.ROBOVQA_PROMPT, _IMAGE_QUESTION, prompts.robovqa_prompt(""),
                                                tokenizer_bos=True), 75),
        "overcooked_ai": (game, GAME_MAX_NEW_TOKENS),
        "openx_quadrupedal": (game, GAME_MAX_NEW_TOKENS),
        # The conversation starts from the environment (`bfcl_environment`); the runner appends the turns.
        "bfcl": (domains.Chat(prompts.BFCL_SYSTEM_PROMPT, "{question}", "", tokenizer_bos=False, max_tokens=MAX_SEQ_LEN), 150),
    }


def domain_protocol(name: str) -> domains.Protocol:
    """Magma's protocol on domain `name` (the registry's `Family.protocol`): MultiNet's Magma script's where it ran
    one, else the domain's default rules with SimplerEnv's step (module docstring)."""
    domain = domains.lookup(name)
    default = domain.protocol
    chats = text_chats()
    if domain.name in chats:
        chat, budget = chats[domain.name]
        return dataclasses.replace(default, max_prompt_tokens=None, max_new_tokens=budget, name=PROTOCOL_NAME, chat=chat,
                                   image_resize=domains.ImageResize.OPENPI, blank_image=None, logits_vocab_size=None,
                                   answer="magma_scripts", answers_in_text=domain.uses_actions)
    if domain.output is domains.Output.CONTINUOUS_ACTIONS:
        ground_truth = GROUND_TRUTH_TRANSFORMS[domain.name][0] if domain.name in GROUND_TRUTH_TRANSFORMS else default.ground_truth
        return dataclasses.replace(default, max_prompt_tokens=None, max_new_tokens=OPENX_MAX_NEW_TOKENS, name=PROTOCOL_NAME,
                                   temperature=OPENX_TEMPERATURE, chat=OPENX_CHAT, min_new_tokens=ACTION_TOKENS,
                                   ground_truth=ground_truth)
    return dataclasses.replace(default, max_prompt_tokens=None, max_new_tokens=ACTION_DIM + 1, name=SIMPLERENV_STEP_NAME,
                               min_new_tokens=ACTION_TOKENS)


def fit_dims(actions: np.ndarray, dims: int) -> np.ndarray:
    """Normalized actions `[b, n]` zero-padded or truncated to `dims` (`magma_openx_inference.py`, after decoding)."""
    actions = np.asarray(actions, np.float64)
    if actions.shape[1] >= dims:
        return actions[:, :dims]
    return np.concatenate([actions, np.zeros((len(actions), dims - actions.shape[1]))], axis=1)


def _wheeled_robot(values: np.ndarray) -> np.ndarray:
    zeros = np.zeros_like(values)
    return np.concatenate([values, zeros, zeros, zeros[..., :1]], axis=-1)


# MultiNet's Magma script's ground-truth transforms (`_transform_action_tensor`), by domain: (the name the protocol
# records, `Protocol.ground_truth`; the transform over the last axis). openx_bimanual's last 7 dims;
# openx_wheeled_robot's action, two zero copies of it and one zero (gnm_dataset's 2 dims -> 7).
GROUND_TRUTH_TRANSFORMS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "openx_bimanual": ("last_7_of_14_dims", lambda values: values[..., -ACTION_DIM:]),
    "openx_wheeled_robot": ("zero_padded_to_7_dims", _wheeled_robot),
}


def scored_ground_truth(domain: str, values: np.ndarray) -> np.ndarray:
    """The ground truth `[..., D]` MultiNet's Magma script scored: `GROUND_TRUTH_TRANSFORMS`' where it has one, else
    as is."""
    values = np.asarray(values)
    return GROUND_TRUTH_TRANSFORMS[domain][1](values) if domain in GROUND_TRUTH_TRANSFORMS else values


def ground_truth_note(domain: str) -> str:
    """How this project's ground truth for `domain` relates to what MultiNet's Magma script scored."""
    if domain == "openx_bimanual":
        return ("the split's last 7 of 14 dims, and the split's statistics of those dims (MultiNet's bimanual transform "
                "and recomputed statistics)")
    if domain == "openx_wheeled_robot":
        return ("the split's action, two zero copies of it and one zero, and the statistics of those dims (MultiNet's "
                "wheeled-robot transform and recomputed statistics)")
    return "the split's own dims, the 7 predicted ones zero-padded or truncated to them (as MultiNet's script)"


class MultiNetActions:
    """`interface.MultiNetActions` for Magma: the Open-X rules of `magma_openx_inference.py` (module docstring)."""

    def split_statistics(self, domain: str, stats: dict[str, Any]) -> dict[str, Any]:
        """The q01 / q99 on every dim (`unnormalize_action` has no mask) of the ground truth as scored: MultiNet's
        script recomputed them over its transformed ground truth."""
        scored = domains.transformed_stats(stats, lambda values: self.ground_truth(domain, values))
        return {key: value for key, value in scored.items() if key != "mask"}

    def ground_truth(self, domain: str, values: np.ndarray) -> np.ndarray:
        return scored_ground_truth(domain, values)

    def options(self, domain: str, continuous: bool, stats: dict[str, Any], options: InferenceOptions) -> InferenceOptions:
        """Magma reads 7 action ids whatever the statistics' dims; budget and temperature are the protocol's (a budget
        without room for the ids is refused at preflight: `Protocol.min_new_tokens`)."""
        return dataclasses.replace(options, action_dim=ACTION_DIM)

    def predictions(self, actions: np.ndarray, norm: domains.ActionNorm, domain: str) -> list[list[float] | None]:
        """`[b, 1, 7]` normalized actions (NaN rows: the decode ended before 7 ids) -> per row the action fitted to the
        statistics' dims and unnormalized; None when invalid."""
        values = norm(fit_dims(np.asarray(actions)[:, 0], len(norm.stats["q01"])))
        return [row.tolist() if np.all(np.isfinite(row)) else None for row in values]

    def note(self, domain: str, options: InferenceOptions) -> dict[str, Any]:
        return {"magma_actions": {
            "action_ids": "the 7 ids before each row's last generated token (generate_ids[0, -8:-1]); a row ending "
                          "before 7 exist is invalid",
            "max_decoding_steps": options.max_decoding_steps, "temperature": options.temperature,
            "ground_truth": ground_truth_note(domain),
            "source": "ManifoldRG/MultiNet d6fe80e src/v1/modules/Magma/scripts/magma_openx_inference.py"}}
