"""BFCL turn by turn, as MultiNet's `bfcl_hf_inference.py` ran it: what the model reads at every turn of real conversations.

A scripted stand-in for the model answers each turn; the test rebuilds every prompt it must have been shown from the
conversation's own fields (history = environment, then per turn `"\\n User:" + contents`, the model's stripped
answer after `"\\n Assistant:"`), and checks the records that come out.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import shared_path
from multinet_jax import data, domains
from multinet_jax.data import prompts
from multinet_jax.eval import runners
from multinet_jax.eval.loop import Timing
from tokenizers_helpers import build_test_paligemma

BATCH = 4


class ScriptedModel:
    """Stands in for the evaluator: answers turn t of row r with `answers(t, r)` and remembers what it was shown."""

    def __init__(self, tokenizer, answers):
        self.paligemma = self.text_tokenizer = tokenizer
        self.answers, self.bundled_tokenizer = answers, False
        self.config = SimpleNamespace(max_token_len=None)
        self.shown: list[dict] = []

    def _observation(self, domain, batch):
        return {key: value for key, value in batch.items() if key.startswith(("image/", "image_mask/", "state"))}

    def _run_model(self, domain, observation):
        turn = len(self.shown)
        self.shown.append(observation)
        tokens = np.zeros((BATCH, domain.protocol.max_new_tokens), np.int32)
        for row in range(BATCH):
            ids = self.paligemma.encode(self.answers(turn, row)) + [self.paligemma.eos_id]
            tokens[row, : len(ids)] = ids
        return tokens


@pytest.fixture(scope="module")
def conversation_run(tmp_path_factory):
    tokenizer = build_test_paligemma(tmp_path_factory.mktemp("paligemma"))
    directory = shared_path("data", "multinet_sample", "bfcl_v3")
    batch = next(iter(data.load("bfcl", directory, split="public", tokenizer=tokenizer, batch_size=BATCH, shard_index=0, shard_count=1)))
    model = ScriptedModel(tokenizer, lambda turn, row: f"  cd(folder='t{turn}r{row}') then ls( a = True )\n")
    records = runners.TurnByTurn().records(model, domains.lookup("bfcl"), batch, None, Timing())
    questions = [json.loads(line) for line in (directory / "public" / "questions.jsonl").read_text().splitlines()]
    return tokenizer, batch, model, records, questions


def test_every_turn_reads_the_whole_history_with_the_models_own_answers(conversation_run):
    tokenizer, batch, model, _, questions = conversation_run
    assert len(model.shown) == max(len(question["question"]) for question in questions) == 5
    for row, question in enumerate(questions):
        history = batch["environment"][row]
        for turn, messages in enumerate(question["question"]):
            history += "\n User:" + " ".join(message["content"] for message in messages)
            expected = prompts.BFCL_SYSTEM_PROMPT + "\n\n" + history
            shown = model.shown[turn]
            ids = shown["tokenized_prompt"][row][shown["tokenized_prompt_mask"][row]]
            assert ids.tolist() == tokenizer.prompt_ids(expected, "paligemma_processor"), (row, turn)
            history += "\n Assistant:" + f"cd(folder='t{turn}r{row}') then ls( a = True )"
        for turn in range(len(question["question"]), len(model.shown)):  # finished: rides along with no prompt
            assert not model.shown[turn]["tokenized_prompt_mask"][row].any()
    for shown in model.shown:  # BFCL's white 224x224 image, attended
        assert np.all(shown["image/base_0_rgb"][:3] == 255) and shown["image_mask/base_0_rgb"][:3].all()


def test_records_hold_each_turns_calls_and_answer(conversation_run):
    _, _, _, records, questions = conversation_run
    assert [record["id"] for record in records] == [question["id"] for question in questions]
    for row, (record, question) in enumerate(zip(records, questions)):
        turns = range(len(question["question"]))
        assert record["responses"] == [f"cd(folder='t{turn}r{row}') then ls( a = True )" for turn in turns]
        assert record["prediction"] == [[f"cd(folder='t{turn}r{row}')", "ls( a = True )"] for turn in turns]
        assert record["prompt_tokens"] > 0
