"""The prompts MultiNet v1.0 fed Pi0, character for character (`../shared/multinet_reference/pi0_text_protocol.md`;
`tests/test_protocol_prompts.py` compares them with what MultiNet's own code built, `multinet_built_prompts.json`).

Each builder returns the whole text the model's tokenizer receives. Sources (ManifoldRG/MultiNet `d6fe80e` and its
openpi submodule ManifoldRG/openpi `f3c69f2`, whose `scripts/*_hf_inference.py` ran the text domains; BFCL's
turn-wise script at `d88fd33`):
- Open-X: the step's instruction as is (`openx_dataloader.py`, tokenized by openpi's Pi0 tokenizer); for a model
  answering in text on a dataset whose definitions are here (openx_quadrupedal), MultiNet's VLM instruction
  (`openx_instruction_prompt`, `definitions/openx_prompt.py`) holding the split's statistics.
- Overcooked-AI: `overcooked_inference.py` `_build_prompt` (layout, time, the 36 joint actions in six groups); for
  a model answering in text, MultiNet's VLM instruction (`overcooked_instruction_prompt`, `definitions/overcooked_prompt.py`).
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


# The sample field holding MultiNet's VLM instruction prompt, where its data builds one (`domains.Chat.question_field`).
INSTRUCTION_PROMPT = "instruction_prompt"

# MultiNet's VLM instruction prompt for Overcooked-AI (`definitions/overcooked_prompt.py` `format_instruction_prompt`,
# with `definitions/overcooked.py`'s action meanings and joint-action options), which its Magma script
# (`overcooked_single_inference.py` `_create_prompt`) gave Magma. The descriptions keep their source's indentation
# and trailing spaces: the prompt holds their `str()`.
_OVERCOOKED_ACTION_MEANINGS = {
        "NORTH": {
            "coordinate": "(0, -1)",
            "description": """
            Move the player one grid cell upward on the kitchen layout.
            """,
        },
        "SOUTH": {
            "coordinate": "(0, 1)",
            "description": """
            Move the player one grid cell downward on the kitchen layout.
            """,
        },
        "EAST": {
            "coordinate": "(1, 0)",
            "description": """
            Move the player one grid cell to the right on the kitchen layout.
            """,
        },
        "WEST": {
            "coordinate": "(-1, 0)",
            "description": """
            Move the player one grid cell to the left on the kitchen layout.
            """,
        },
        "STAY": {
            "coordinate": "(0, 0)",
            "description": """
            Keep the player in their current position without moving. 
            This action maintains the player's current x and y coordinates. 
            Use this when waiting for a cooking timer to complete, when the desired adjacent tile is temporarily blocked by the other player, 
            when coordinating timing with your partner, or when the player is already optimally positioned for their next intended interaction.
            """,
        },
        "INTERACT": {
            "coordinate": "(1, 1)",
            "description": """
            Perform context-sensitive interactions with kitchen objects adjacent to or at the player's current position. 
            The specific interaction depends on what objects are nearby, what the player is currently holding and what task 
            is assigned to the player(s).
            """,
        },
    }
_OVERCOOKED_JOINT_OPTIONS = {6 * p0 + p1: f"Player 0: {first}, Player 1: {second}"
                             for p0, first in enumerate(_OVERCOOKED_ACTION_MEANINGS)
                             for p1, second in enumerate(_OVERCOOKED_ACTION_MEANINGS)}
_OVERCOOKED_INSTRUCTION = " ".join([
    "We are running a simulation for two AI agents cooperatively playing Overcooked in layout '{env_name}', a kitchen coordination game.",
    "Your role is to evaluate potential joint actions for both players based on the current game state.",
    "You should produce proper joint action outputs to maximize soup delivery through effective coordination.",
    "The current state consists of a game screenshot showing player positions, ingredients, cooking stations, objectives.",
    "Values for the elapsed time and the remaining time are also provided.",
    "Both players must work together - one player's actions affect the other's ability to complete tasks.",
    "Key game mechanics: Players can pick up ingredients, place them in pots (3 ingredients per soup), wait for cooking (20 time steps), then deliver completed soups to serving stations for points.",
    "Individual action meanings: {action_meaning}.",
    "Options available in the format 'Player 0 action, Player 1 action': {action_info}.",
    "Time remaining: {time_left}.",
    "Elapsed time: {time_elapsed}.",
    "Focus on maximizing soup delivery rate while maintaining smooth coordination between players within the time remaining.",
    "You MUST generate your output keeping the following format: {output_format}",
    "You should not include any other words or characters in your response.",
    "{additional_inst}",
])
_OVERCOOKED_OUTPUT_FORMAT = "\n        A list starting with '[' and ending with ']'. Each position corresponds to each one of the 36 option indices. \n        Generate a probability distribution as a list of exactly 36 decimal values formatted as [p0, p1, p2, p3, ..., p35], \n        where each position in the list corresponds to one of the 36 possible option indices (0 through 35). Every \n        probability value must be a decimal number between 0.0 and 1.0 inclusive, representing the probability of selecting \n        that particular option. The list must contain all 36 probability values with no missing entries. \n        Critically, the sum of all 36 probabilities MUST equal exactly 1.0 to form a valid probability distribution.\n    "


def overcooked_instruction_prompt(layout_name: str, time_left: float, time_elapsed: float) -> str:
    """MultiNet's VLM Overcooked instruction (above) for one timestep: the layout, the seconds as Python prints the
    floats it read, no additional instruction (MultiNet defines none for Overcooked)."""
    return _OVERCOOKED_INSTRUCTION.format(
        env_name=layout_name, action_meaning=str(_OVERCOOKED_ACTION_MEANINGS), action_info=str(_OVERCOOKED_JOINT_OPTIONS),
        time_left=time_left, time_elapsed=time_elapsed, output_format=_OVERCOOKED_OUTPUT_FORMAT, additional_inst="")


# MultiNet's VLM instruction prompt for Open-X (`definitions/openx_prompt.py` `format_instruction_prompt`), with the
# definitions (`definitions/openx.py`) of the datasets a protocol asks it on, by domain: MultiNet's dataset name, each
# instruction's task description (DESCRIPTIONS, lines joined) and each action dim's verbal description (ACTION_SPACES).
# None of these datasets has ADDITIONAL_INSTRUCTIONS, and each answers a whole list (ACTION_EXCLUSIVENESS False).
OPENX_INSTRUCTION_DEFINITIONS: dict[str, tuple[str, dict[str, str], tuple[str, ...]]] = {
    "openx_quadrupedal": ("utokyo_saytap_converted_externally_to_rlds", {
        "bound in place": "Execute bounding movements while remaining stationary, lifting all feet off the ground simultaneously.",
        "trot in place": "Perform a trotting gait without forward movement, alternating diagonal leg pairs.",
        "trot forward fast": "Move forward using a rapid trotting gait with quick, rhythmic steps.",
        "trot backward fast": "Execute backward locomotion at high speed using trotting movement patterns.",
        "trot forward slowly": "Advance forward with a controlled, deliberate trotting pace.",
        "trot backward slowly": "Move in reverse direction using a measured trotting gait.",
        "move backward fast in pacing gait": "Travel backward rapidly using a pacing gait where legs on the same side move together.",
        "move backward slowly in pacing gait": "Execute slow rearward movement with synchronized same-side leg coordination.",
        "move forward slowly in pacing gait": "Progress forward at a gentle pace using lateral leg pairing movements.",
        "move forward fast in pacing gait": "Accelerate forward while maintaining pacing gait coordination patterns.",
        "pace in place": "Demonstrate pacing gait mechanics without changing position.",
        "bound forward slowly": "Use bounding motion to move forward at a controlled speed.",
        "bound forward fast": "Execute rapid forward bounds.",
        "bound backward fast": "Perform quick rearward bounding movements.",
        "bound backward slowly": "Move backward using deliberate, controlled bounding motions.",
        "stand still": "Maintain a stationary position without any movement.",
        "raise your front left leg": "Lift the front left leg off the ground while maintaining balance.",
        "raise your front right leg": "Lift the front right leg off the ground while maintaining balance.",
        "raise your rear left leg": "Lift the rear left leg off the ground while maintaining balance.",
        "raise your rear right leg": "Lift the rear right leg off the ground while maintaining balance.",
    }, (
        "Motor joint position for front right hip",
        "Motor joint position for front right thigh",
        "Motor joint position for front right calf",
        "Motor joint position for front left hip",
        "Motor joint position for front left thigh",
        "Motor joint position for front left calf",
        "Motor joint position for rear right hip",
        "Motor joint position for rear right thigh",
        "Motor joint position for rear right calf",
        "Motor joint position for rear left hip",
        "Motor joint position for rear left thigh",
        "Motor joint position for rear left calf",
    )),
}
_OPENX_INSTRUCTION = " ".join([
    'You are an AI agent to solve the task called "{env_name}".',
    "In this environment: {env_desc}",
    "You should produce a proper action output to achieve the final goal given the current progress so far given the current state information.",
    "The current state can be any forms, such as images, continuous/discrete vectors, or texts.",
    "The actions available: {action_desc}",
    "You must generate your output keeping the following format: {output_format}",
    "You should not include any other words or characters in your response.",
    "{additional_inst}",
])
_OPENX_ACTION_DESCRIPTION = "A discrete action has the available options as key-value pairs, {Option index}: {Option description}. A continuous action has the range of {minimum} ~ {maximum}. A continuous action without a verbal description is described using the statistics of the action space over the entire dataset, which includes the range for each dimension between {minimum} ~ {maximum} and a mean of {mean}."
_OPENX_LIST_FORMAT = "A list starting with '[' and ending with ']'. Each position corresponds to each action index and a value in that position represents the option index (discrete) or actual value (continuous) of that action."
# `_get_action_space` of MultiNet"s Magma quadrupedal script: a dim"s verbal description, then this, then the
# split's min, max and mean.
_OPENX_STATISTICS_NOTE = ". In addition to this verbal description, here are the action space statistics of this dimension over the entire dataset"


def openx_instruction_prompt(domain: str, instruction: str, stats: dict[str, Any]) -> str:
    """MultiNet's VLM Open-X instruction (above) for one step of `domain` (a key of `OPENX_INSTRUCTION_DEFINITIONS`),
    as MultiNet's Magma quadrupedal script built it for every batch after its first (`_create_prompt`): the task's
    description (the instruction capitalized, with a period, when MultiNet has none), and every action dim as its
    verbal description with the split's min, max and mean (`stats`: MultiNet's statistics), printed as Python prints
    the floats. The split's dims must be the definitions' (MultiNet's builder failed on others)."""
    dataset, descriptions, dims = OPENX_INSTRUCTION_DEFINITIONS[domain]
    size = len(stats["min"])
    if size != len(dims):
        raise ValueError(f"{domain}: the split's actions have {size} dims, MultiNet's {dataset} definitions describe {len(dims)}")
    lines = [f"{index}. {description}{_OPENX_STATISTICS_NOTE} => Continuous. Range: {float(stats['min'][index])} ~ "
             f"{float(stats['max'][index])}. Mean: {float(stats['mean'][index])}." for index, description in enumerate(dims)]
    return _OPENX_INSTRUCTION.format(
        env_name=instruction, env_desc=descriptions.get(instruction, instruction.capitalize() + "."),
        action_desc="\n".join([_OPENX_ACTION_DESCRIPTION, *lines]) + "\n", output_format=_OPENX_LIST_FORMAT,
        additional_inst="")


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
