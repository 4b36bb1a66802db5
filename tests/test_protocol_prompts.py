"""Every domain's prompt, built from a real sample, character for character against MultiNet's templates.

The templates are read from `../shared/multinet_reference/pi0_text_protocol.md` at test time (the quoted strings
of each domain's row) and filled with the sample's own fields; the system prompts, which the document only names,
are spelled out here as MultiNet's sources write them (paths and commits in the document). Samples come from
`../shared/data/multinet_sample` (SQA3D, which it lacks, from a split written in SQA3D's published format).
"""

from __future__ import annotations

import ast
import functools
import json
import pickle
import re

import numpy as np
import pytest

from conftest import shared_path
from data_helpers import write_sqa3d
from multinet_jax import data, domains
from multinet_jax.data import prompts

# piqa_hf_inference.py (ManifoldRG/openpi): a triple-quoted string whose continuation lines are indented by 4.
PIQA_SYSTEM = (
    "<image>You are evaluating physical commonsense reasoning questions. You will be presented with a goal and possible solutions.\n"
    "    Your task is to determine which solution is more appropriate for achieving the given goal.\n"
    "    Output only the index of the correct solution, and nothing else.\n"
    "    Do not provide any explanation, reasoning, or additional text."
)
# definitions/odinw.py ODinWDefinitions.SYSTEM_PROMPT: opens with a newline, lines indented by 8, closes with 4 spaces.
ODINW_SYSTEM = (
    "\n"
    "        You are a specialized Visual-Language Model Assistant that identifies the object in a given image and selects the best option possible from the options provided.\n"
    "        Read the task carefully. Look at the image and the provided multiple-choice options.\n"
    "        Identify the correct object and output ONLY the number corresponding to the correct option.\n"
    "        The answer must be a single integer within the provided range of options (e.g., 0, 1, 2, \u2026).\n"
    "        Do not output words, category names, or explanations.\n"
    "        Do not output reasoning steps.\n"
    "    "
)
# definitions/sqa3d_prompt.py SQA3DDefinitions.SYSTEM_PROMPT ("".join of its sentences).
SQA3D_SYSTEM = (
    "You are a vision-language model specializing in 3D scene understanding and question answering. "
    "You will be presented with a scene image and a question about the scene. "
    "Your task is to answer the question based on the visual information provided.\n"
    "Instructions:\n"
    "   - Visually analyze the scene image\n"
    "   - Understand the question and any provided context and/or situation\n"
    "   - Follow any additional instructions provided in the question.\n"
    "   - If the question asks for a specific object or location, be precise in your response.\n"
    "   - Respond with only your answer. Do not provide explanations or reasoning."
)
# definitions/robovqa_prompt.py ROBOVQA_PROMPT (2dcd389): two of its lines end in a space.
ROBOVQA_SYSTEM = (
    "\n"
    "        You are a Visual-Language Model Assistant that specializes in answering questions about robotics tasks based on given images representing the robot's environment.\n"
    "\n"
    "        Core directive:\n"
    "        Analyze the provided image and answer the question. \n"
    "        Your answer must be grounded in the provided verbal context and/or task descriptions and informed by general commonsense. \n"
    "        Adhere strictly to the output formatting rules.\n"
    "\n"
    "        Inputs:\n"
    "            1. Image: A visual representation of the robot's current environment.\n"
    "            2. Question: A specific query about the environment or the next possible action, along with additional context and/or task description.\n"
    "\n"
    "        Output formatting rules:\n"
    "        Your response must be one of the following, and nothing else. Do not add conversational filler, explanations, or apologies.\n"
    "            1. Action Execution Query (e.g., \"What should I do?\", \"What is the next step? What should I do to achieve the current goal\"):\n"
    "                - Respond with a concise action phrase.\n"
    "            2. Feasibility/Possibility/Completion Query (e.g., \"Is it possible to grasp the handle?\", \"Is the drawer open?\"):\n"
    "                - Respond with a single word: yes or no.\n"
    "        If the current goal is to perform an action with no followup question, then assume it's an action execution query.\n"
    "        Do not respond with any additional explanation or information.\n"
    "    "
)
# bfcl_hf_inference.py (8e50c71): each line of the prompt is padded with spaces to column 242 of the source file
# (line starts at characters 1576, 2062, 2305, 2548, 2791, one blank line), the first after `BFCL_SYSTEM_PROMPT = """`.
BFCL_LINES = (
    "You are an AI assistant that can call functions to complete tasks. You will be presented with conversation histories where each turn may require function calls.",
    "",
    "For each turn, analyze the conversation history, which may include previous assistant responses in addition to user prompts, and respond with the correct function to call.",
    "Format each function call as: function_name(param1=value1, param2=value2, ...)",
    "Use only the exact function names available in the provided set of functions and append appropriate parameters.",
    "Output only the function calls, no explanations or additional text.",
)
BFCL_LINE_LENGTHS = (2062 - 1576 - 243 - 24 - 1, 242, 2305 - 2062 - 1, 2548 - 2305 - 1, 2791 - 2548 - 1, len(BFCL_LINES[5]))
SAMPLE = ("data", "multinet_sample")


@functools.cache
def _protocol_rows() -> dict[str, str]:
    text = shared_path("multinet_reference", "pi0_text_protocol.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| domain", "|---"))]
    return {row.split("|")[1].strip(): row for row in rows}


def _template(domain: str, prefix: str) -> str:
    """The quoted string of `domain`'s row in pi0_text_protocol.md that starts with `prefix`, as Python reads it."""
    quoted = [literal for code in re.findall(r"`([^`]*)`", _protocol_rows()[domain]) for literal in re.findall(r'f?"(?:[^"\\]|\\.)*"', code)]
    matches = [ast.literal_eval(literal.removeprefix("f")) for literal in quoted if literal.removeprefix("f").startswith('"' + prefix)]
    assert matches, f"pi0_text_protocol.md: no quoted string starting {prefix!r} in the {domain} row"
    return matches[0]


def _json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_system_prompts_are_multinets():
    assert prompts.PIQA_SYSTEM_PROMPT == PIQA_SYSTEM
    assert prompts.ODINW_SYSTEM_PROMPT == ODINW_SYSTEM
    assert prompts.SQA3D_SYSTEM_PROMPT == SQA3D_SYSTEM
    assert prompts.ROBOVQA_PROMPT == ROBOVQA_SYSTEM
    lines = prompts.BFCL_SYSTEM_PROMPT.split("\n")
    assert tuple(line.rstrip(" ") for line in lines) == BFCL_LINES
    assert tuple(len(line) for line in lines) == BFCL_LINE_LENGTHS


def test_piqa_prompt_of_real_samples():
    directory = shared_path(*SAMPLE, "piqa")
    source = data.make_source("piqa", directory, split="public")
    wrapper, question = _template("PIQA", "{PIQA_SYSTEM_PROMPT}"), _template("PIQA", "Goal: ")
    for index, row in enumerate(_json_lines(directory / "public" / "piqa.jsonl")):
        expected = wrapper.format(PIQA_SYSTEM_PROMPT=PIQA_SYSTEM, question=question.format(**row))
        assert source[index]["prompt"] == expected


def test_odinw_prompt_of_real_samples():
    root = shared_path(*SAMPLE, "odinw", "public")
    source = data.make_source("odinw", root.parent, split="public")
    wrapper = _template("ODinW", "{SYSTEM_PROMPT}")
    head, option, tail = _template("ODinW", "What object"), _template("ODinW", "Option "), _template("ODinW", "Output the number")
    for index in range(len(source)):
        sample = source[index]
        names = json.loads((root / sample["subset"] / "categories.json").read_text())["category_names"]
        question = head.format(name=sample["subset"]) + "".join(option.format(i=i, option=name) for i, name in enumerate(names))
        question += tail.replace("{n-1}", "{last}").format(last=len(names) - 1)
        assert sample["prompt"] == wrapper.format(SYSTEM_PROMPT=ODINW_SYSTEM, question=question)


def test_sqa3d_prompt_in_the_published_format(tmp_path):
    written = write_sqa3d(tmp_path)
    source = data.make_source("sqa3d", tmp_path, split="test")
    wrapper, body = _template("SQA3D", "{SYSTEM_PROMPT}"), _template("SQA3D", "Situation: ")
    for index in range(2):  # the questions whose scene has an image
        question = written["questions"][index]
        expected = wrapper.format(SYSTEM_PROMPT=SQA3D_SYSTEM, question=body.format(**question))
        assert source[index]["prompt"] == expected


def test_robovqa_prompt_of_real_samples(tmp_path):
    tf = pytest.importorskip("tensorflow")
    directory = shared_path(*SAMPLE, "openx_multi_embodiment")
    source = data.make_source("openx_multi_embodiment", directory, split="public", cache_dir=tmp_path)
    wrapper, with_context = _template("RoboVQA", "{ROBOVQA_PROMPT}"), _template("RoboVQA", "Task and Context: ")
    for index in range(len(source)):
        step = next(tf.data.Dataset.load(str(directory / "public" / f"translated_shard_{index}")).as_numpy_iterator())
        before, after = step["observation"]["raw_text_question"].decode().split("Q:", 1)
        question = with_context.format(before=before.strip(), after=after.strip())
        assert source[index]["prompt"] == wrapper.format(ROBOVQA_PROMPT=ROBOVQA_SYSTEM, question=question)
    assert prompts.robovqa_prompt("Q: done?") == wrapper.format(ROBOVQA_PROMPT=ROBOVQA_SYSTEM, question=_template("RoboVQA", "Question: {rest}").format(rest="done?"))


def test_overcooked_prompt_of_real_samples():
    directory = shared_path(*SAMPLE, "overcooked_ai", "public")
    rows = pickle.loads((directory / "2020_hh_trials_train.pickle").read_bytes())
    source = data.make_source("overcooked_ai", directory)
    template = _template("Overcooked", "Layout ")
    first_group, last_group = _template("Overcooked", "0-5:").split(", 6-11:")[0], "30-35:Player 0: Interact, Player 1: ["
    moves = first_group[first_group.index("[") + 1 : -1].split(",")
    groups = ", ".join(f"{6 * i}-{6 * i + 5}:Player 0: {move}, Player 1: [{','.join(moves)}]" for i, move in enumerate(moves))
    assert groups.startswith(first_group) and last_group in groups
    trials = [row["trial_id"] for row in rows]
    order = sorted(range(len(rows)), key=lambda index: (trials.index(rows[index]["trial_id"]), index))  # MultiNet's grouping
    for position, row in enumerate(rows[index] for index in order):
        expected = template.format(layout=row["layout_name"], elapsed=float(row["time_elapsed"]), left=float(row["time_left"]), groups=groups)
        assert source[position]["prompt"] == expected


def test_bfcl_first_turn_prompt_of_real_samples():
    directory = shared_path(*SAMPLE, "bfcl_v3", "public")
    source = data.make_source("bfcl", directory.parent, split="public")
    environment = _template("BFCL", "Initial Environment").replace("{json.dumps(config, indent=2)}", "{config}")
    user = _template("BFCL", "\\n User:")
    for index, question in enumerate(_json_lines(directory / "questions.jsonl")):
        base = environment.format(config=json.dumps(question["initial_config"], indent=2),
                                  classes=", ".join(question["involved_classes"]), names=", ".join(question["path"]))
        history = base + user + " ".join(message["content"] for message in question["question"][0])
        assert source[index]["environment"] == base
        assert source[index]["prompt"] == prompts.BFCL_SYSTEM_PROMPT + "\n\n" + history


def test_decoding_budgets_are_the_documents():
    for domain, row_name in (("piqa", "PIQA"), ("odinw", "ODinW"), ("sqa3d", "SQA3D"), ("openx_multi_embodiment", "RoboVQA"), ("bfcl", "BFCL")):
        decoding = _protocol_rows()[row_name].split("|")[3]
        assert domains.lookup(domain).protocol.max_new_tokens == int(re.search(r"\d+", decoding).group()), domain
    assert "max_token_len=256" in _protocol_rows()["Overcooked"] and domains.lookup("overcooked_ai").protocol.max_prompt_tokens == 256
    assert "48 tokens" in _protocol_rows()["Open-X"] and domains.OPENX_PROTOCOL.max_prompt_tokens == 48


def test_odinw_subsets_are_multinets(tmp_path):
    """The subsets data.load evaluates and their class counts are MultiNet's table (the sample's two among them)."""
    root = shared_path(*SAMPLE, "odinw", "public")
    source = data.make_source("odinw", root.parent, split="public")
    for index in range(len(source)):
        sample = source[index]
        assert int(sample["valid_outputs"]) == domains.ODINW_SUBSET_CLASSES[sample["subset"]] == int(sample["num_options"]) - 1
    assert np.all([count >= 2 for count in domains.ODINW_SUBSET_CLASSES.values()])  # single-class subsets were left out
