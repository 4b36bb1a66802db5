"""The prompts MultiNet v1.0 fed Pi0, character for character (`../shared/multinet_reference/pi0_text_protocol.md`;
`tests/test_protocol_prompts.py` compares them with what MultiNet's own code built, `multinet_built_prompts.json`).

Each builder returns the whole text the model's tokenizer receives. Sources (ManifoldRG/MultiNet `d6fe80e` and its
openpi submodule ManifoldRG/openpi `f3c69f2`, whose `scripts/*_hf_inference.py` ran the text domains; BFCL's
turn-wise script at `d88fd33`):
- Open-X: the step's instruction as is (`openx_dataloader.py`, tokenized by openpi's Pi0 tokenizer).
- Overcooked-AI: `overcooked_inference.py` `_build_prompt` (layout, time, the 36 joint actions in six groups).
- PIQA: `f"{PIQA_SYSTEM_PROMPT}\\n\\n{question}"`, system prompt from `piqa_hf_inference.py`, question from
  `piqa_dataloader.py`.
- ODinW: `definitions/odinw.py` `SYSTEM_PROMPT` + the question of `odinw_dataloader.py`, whose options are the
  subset's categories under its root (`data/odinw.py`).
- SQA3D: `definitions/sqa3d_prompt.py` + the question of `sqa3d_dataloader.py` (its "Situation:" line only when
  the situation is not empty).
- RoboVQA: `definitions/robovqa_prompt.py` `ROBOVQA_PROMPT` + `"\\n\\nQuestion: "` + the question that
  `openx_dataloader.py` builds from `raw_text_question`.
- BFCL: `bfcl_hf_inference.py`'s `BFCL_SYSTEM_PROMPT` + the conversation history, which starts from
  `bfcl_dataloader.py`'s environment description and grows turn by turn (`bfcl_turn_history`).

The system prompts keep the indentation and trailing spaces of their triple-quoted sources.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_I4, _I8, _I12, _I16 = " " * 4, " " * 8, " " * 12, " " * 16

PIQA_SYSTEM_PROMPT = "\n    ".join([
    "You are evaluating physical commonsense reasoning questions. You will be presented with a goal and possible solutions.",
    "Your task is to determine which solution is more appropriate for achieving the given goal.",
    "Output only the index of the correct solution, and nothing else.",
    "Do not provide any explanation, reasoning, or additional text.",
])

ODINW_SYSTEM_PROMPT = "\n" + "".join(_I8 + line + "\n" for line in [
    "You are a specialized Visual-Language Model Assistant that identifies the object in a given image and selects the best option possible from the options provided.",
    "Read the task carefully. Look at the image and the provided multiple-choice options.",
    "Identify the correct object and output ONLY the number corresponding to the correct option.",
    "The answer must be a single integer within the provided range of options (e.g., 0, 1, 2, \u2026).",
    "Do not output words, category names, or explanations.",
    "Do not output reasoning steps.",
]) + _I4

SQA3D_SYSTEM_PROMPT = "".join([
    "You are a vision-language model specializing in 3D scene understanding and question answering. ",
    "You will be presented with a scene image and a question about the scene. ",
    "Your task is to answer the question based on the visual information provided.\n",
    "Instructions:\n",
    "   - Visually analyze the scene image\n",
    "   - Understand the question and any provided context and/or situation\n",
    "   - Follow any additional instructions provided in the question.\n",
    "   - If the question asks for a specific object or location, be precise in your response.\n",
    "   - Respond with only your answer. Do not provide explanations or reasoning.",
])

ROBOVQA_PROMPT = "\n" + "\n".join([
    _I8 + "You are a Visual-Language Model Assistant that specializes in answering questions about robotics tasks based on given images representing the robot's environment.",
    "",
    _I8 + "Core directive:",
    _I8 + "Analyze the provided image and answer the question. ",
    _I8 + "Your answer must be grounded in the provided verbal context and/or task descriptions and informed by general commonsense. ",
    _I8 + "Adhere strictly to the output formatting rules.",
    "",
    _I8 + "Inputs:",
    _I12 + "1. Image: A visual representation of the robot's current environment.",
    _I12 + "2. Question: A specific query about the environment or the next possible action, along with additional context and/or task description.",
    "",
    _I8 + "Output formatting rules:",
    _I8 + "Your response must be one of the following, and nothing else. Do not add conversational filler, explanations, or apologies.",
    _I12 + '1. Action Execution Query (e.g., "What should I do?", "What is the next step?"):',
    _I16 + "- Respond with a concise action phrase.",
    _I12 + '2. Feasibility/Possibility/Completion Query (e.g., "Is it possible to grasp the handle?", "Is the drawer open?"):',
    _I16 + "- Respond with a single word: yes or no.",
    _I8 + "If the current goal is to perform an action with no followup question, then assume it's an action execution query.",
    _I8 + "Do not respond with any additional explanation or information.",
    _I4,
])

# bfcl_hf_inference.py pads every line of this prompt with spaces to column 242 (the first line after the
# 24 characters of `BFCL_SYSTEM_PROMPT = """`); the padding is part of what the model read.
_BFCL_SOURCE_COLUMNS = 242
BFCL_SYSTEM_PROMPT = "\n".join([
    "You are an AI assistant that can call functions to complete tasks. You will be presented with conversation "
    "histories where each turn may require function calls.".ljust(_BFCL_SOURCE_COLUMNS - len('BFCL_SYSTEM_PROMPT = """')),
    "".ljust(_BFCL_SOURCE_COLUMNS),
    "For each turn, analyze the conversation history, which may include previous assistant responses in addition to "
    "user prompts, and respond with the correct function to call.".ljust(_BFCL_SOURCE_COLUMNS),
    "Format each function call as: function_name(param1=value1, param2=value2, ...)".ljust(_BFCL_SOURCE_COLUMNS),
    "Use only the exact function names available in the provided set of functions and append appropriate "
    "parameters.".ljust(_BFCL_SOURCE_COLUMNS),
    "Output only the function calls, no explanations or additional text.",
])

# Overcooked-AI's joint action index is 6 * player-0 move + player-1 move, moves in this order.
OVERCOOKED_MOVES = ("North", "South", "East", "West", "Stay", "Interact")


def with_system_prompt(system_prompt: str, question: str) -> str:
    """MultiNet's `f"{system}\\n\\n{question}"`."""
    return f"{system_prompt}\n\n{question}"


def overcooked_prompt(layout_name: str, time_left: float, time_elapsed: float) -> str:
    groups = ", ".join(
        f"{6 * index}-{6 * index + 5}:Player 0: {move}, Player 1: [{','.join(OVERCOOKED_MOVES)}]"
        for index, move in enumerate(OVERCOOKED_MOVES)
    )
    return (
        f"Layout {layout_name}. Time: {time_elapsed:.0f}s elapsed, {time_left:.0f}s remaining. Actions: {groups}. "
        "Task sequence: Pick ingredients, place in pot, wait for cooking, deliver to serving station. "
        "Goal: Coordinate the two players to maximize soup delivery. Output joint action index as single value between 0-35."
    )


def piqa_prompt(goal: str, sol1: str, sol2: str) -> str:
    question = f"Goal: {goal}\nSolution 0: {sol1}\nSolution 1: {sol2}\nWhich solution is better for the given goal? Output 0 or 1 only."
    return with_system_prompt(PIQA_SYSTEM_PROMPT, question)


def odinw_prompt(subset: str, options: Sequence[str]) -> str:
    question = f"What object is shown in this image from the {subset} dataset?\n"
    question += "".join(f"Option {index}: {option}\n" for index, option in enumerate(options))
    question += f"Output the number (0-{len(options) - 1}) of the correct option only."
    return with_system_prompt(ODINW_SYSTEM_PROMPT, question)


def sqa3d_prompt(situation: str, question: str) -> str:
    """`sqa3d_dataloader.py` `_process_sample` (d6fe80e, lines 206-224): its lines joined by newlines, the situation's
    only when it is not empty."""
    lines = [f"Situation: {situation}"] if situation else []
    lines += [f"Question: {question}",
              "Please answer the question based on the provided scene image and context situation in one word only and nothing more."]
    return with_system_prompt(SQA3D_SYSTEM_PROMPT, "\n".join(lines))


def robovqa_question(raw_question: str) -> str:
    """`raw_text_question` split once at "Q:" as MultiNet's dataloader does (any text is accepted)."""
    parts = raw_question.split("Q:", 1)
    if len(parts) == 1:
        return raw_question
    if raw_question.startswith("Q:"):
        return f"Question: {parts[1].strip()}"
    return f"Task and Context: {parts[0].strip()}\n Question: {parts[1].strip()}"


def robovqa_prompt(raw_question: str) -> str:
    return f"{ROBOVQA_PROMPT}\n\nQuestion: {robovqa_question(raw_question)}"


def bfcl_environment(initial_config: dict[str, Any], involved_classes: Sequence[str], path: Sequence[str]) -> str:
    """The conversation's start (`bfcl_dataloader.py` `_format_full_conversation_prompt`, d6fe80e lines 119-133):
    the configuration when there is one, the tool lines when there are both classes and a path (the path's
    function names without their class, `func.split('.')[-1]`), each section followed by a blank line, joined
    by newlines."""
    lines: list[str] = []
    if initial_config:
        lines += ["Initial Environment Configuration:", json.dumps(initial_config, indent=2), ""]
    if involved_classes and path:
        lines += [f"Available Tool Classes: {', '.join(involved_classes)}",
                  f"Available Functions: {', '.join(function.split('.')[-1] for function in path)}", ""]
    return "\n".join(lines)


def bfcl_user_turn(history: str, messages: Sequence[dict[str, Any]]) -> str:
    """The history with one user turn appended: `"\\n User:"` + the turn's message contents joined by spaces."""
    return history + "\n User:" + " ".join(str(message["content"]) for message in messages)


def bfcl_assistant_turn(history: str, response: str) -> str:
    """The history with the model's own (stripped) answer appended after `"\\n Assistant:"`."""
    return history + "\n Assistant:" + response


def bfcl_prompt(history: str) -> str:
    """What the model reads at a turn: the system prompt, a blank line, the history so far."""
    return with_system_prompt(BFCL_SYSTEM_PROMPT, history)
