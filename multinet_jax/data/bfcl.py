"""BFCL v3 multi-turn function calling: one sample per conversation, run turn by turn (`eval.runners`).

A sample's `environment` is where MultiNet's conversation history starts (`prompts.bfcl_environment`), its
`turns` the user messages per turn; `prompt` is what the model reads at the first turn.

Two layouts of the same data:
- MultiNet's: `questions.jsonl` (id, question = turns of messages, initial_config, path,
  involved_classes) and `answers.jsonl` (id, ground_truth = per-turn lists of call strings).
- BFCL's own (bfcl-eval package): `BFCL_v3_multi_turn_base.json` (JSON Lines despite the name)
  with `possible_answer/BFCL_v3_multi_turn_base.json`.
Function docs come from `multi_turn_func_doc/<class file>.json` (JSON Lines, one function per
line) in `data_dir` or `func_doc_dir`; when neither has them the samples carry `function_docs=None`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from multinet_jax import domains
from multinet_jax.data import prompts
from multinet_jax.data.bad_records import BadRecordError, check_unique_ids
from multinet_jax.data.jsonl import read_json_lines

# BFCL's MULTI_TURN_FUNC_DOC_FILE_MAPPING: involved class -> func doc file stem
FUNC_DOC_FILES = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
# A question's optional environment fields and their types (absent: empty); another type would be read as one silently
# (a string of classes joined letter by letter, "G, o, r, ...").
ENVIRONMENT_FIELDS = (("initial_config", dict), ("involved_classes", list), ("path", list))
LAYOUTS = (("questions.jsonl", "answers.jsonl"), ("BFCL_v3_multi_turn_base.json", "possible_answer/BFCL_v3_multi_turn_base.json"))


class BfclSource:
    def __init__(self, directory: pathlib.Path, dataset: str = "bfcl", func_doc_dir: pathlib.Path | None = None):
        directory = pathlib.Path(directory)
        self.dataset = dataset
        layouts = [(directory / q, directory / a) for q, a in LAYOUTS if (directory / q).exists()]
        if not layouts:
            raise FileNotFoundError(f"{directory}: no BFCL questions ({' or '.join(q for q, _ in LAYOUTS)})")
        if len(layouts) > 1:  # which one was meant would be a guess
            raise ValueError(f"{directory}: holds both {layouts[0][0].name} and {layouts[1][0].name}; keep one layout")
        questions_path, answers_path = layouts[0]
        if not answers_path.exists():
            raise FileNotFoundError(f"{answers_path}: missing (ground truth for {questions_path.name})")
        self._questions = read_json_lines(questions_path, dataset)
        answers = read_json_lines(answers_path, dataset)
        for record, row in answers:  # at load: a malformed one would otherwise fail scoring, after the whole run
            if not domains.is_turns_of_calls(row.get("ground_truth")):
                raise BadRecordError(dataset, record, "ground_truth",
                                     f"expected a list of turns, each a list of call strings, got {row.get('ground_truth')!r}"[:300])
        # two answers to one question: the last would win silently (MultiNet's loader), scoring a ground truth at random
        check_unique_ids(dataset, ((record, row["id"]) for record, row in answers if isinstance(row.get("id"), str)))
        self._answers = {row.get("id"): row for _, row in answers}
        check_unique_ids(dataset, ((record, question["id"]) for record, question in self._questions
                                   if isinstance(question.get("id"), str)))
        doc_dir = pathlib.Path(func_doc_dir) if func_doc_dir else directory / "multi_turn_func_doc"
        self._doc_dir = doc_dir if doc_dir.is_dir() else None
        self._docs: dict[str, list[dict]] = {}

    def __len__(self) -> int:
        return len(self._questions)

    def function_docs(self, involved_classes: list[str], record: str) -> list[dict] | None:
        if self._doc_dir is None:
            return None
        docs = []
        for name in involved_classes:
            if name not in FUNC_DOC_FILES:
                raise BadRecordError(self.dataset, record, "involved_classes", f"unknown class {name!r}")
            if name not in self._docs:
                path = self._doc_dir / f"{FUNC_DOC_FILES[name]}.json"
                self._docs[name] = [row for _, row in read_json_lines(path, self.dataset)]
            docs += self._docs[name]
        return docs

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, question = self._questions[index]
        for name, kind in (("id", str), ("question", list)):
            if not isinstance(question.get(name), kind):
                raise BadRecordError(self.dataset, record, name, f"expected {kind.__name__}, got {question.get(name)!r}")
        answer = self._answers.get(question["id"])
        if answer is None:
            raise BadRecordError(self.dataset, record, "ground_truth", f"no answer for {question['id']}")
        turns, ground_truth = question["question"], answer["ground_truth"]
        if len(turns) != len(ground_truth):
            raise BadRecordError(self.dataset, record, "ground_truth", f"{len(ground_truth)} answer turns for {len(turns)} question turns")
        if not turns or not all(isinstance(turn, list) and all(isinstance(message, dict) and isinstance(message.get("content"), str)
                                                                 for message in turn) for turn in turns):
            raise BadRecordError(self.dataset, record, "question", "expected a non-empty list of turns, each a list of messages with text `content`")
        initial_config, involved, path = (question.get(name, kind()) for name, kind in ENVIRONMENT_FIELDS)
        for (name, kind), value in zip(ENVIRONMENT_FIELDS, (initial_config, involved, path)):
            if not isinstance(value, kind) or (kind is list and not all(isinstance(item, str) for item in value)):
                raise BadRecordError(self.dataset, record, name, f"expected {'an object' if kind is dict else 'a list of strings'}, "
                                     f"got {value!r}"[:300])
        environment = prompts.bfcl_environment(initial_config, involved, path)
        return {
            "id": question["id"],
            "image": None,
            "state": None,
            "prompt": prompts.bfcl_prompt(prompts.bfcl_user_turn(environment, turns[0])),
            "environment": environment,
            "ground_truth": ground_truth,
            "turns": turns,
            "num_turns": np.int32(len(turns)),
            "initial_config": initial_config,
            "involved_classes": involved,
            "path": path,
            "function_docs": self.function_docs(involved, record),
        }
