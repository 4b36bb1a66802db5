"""BFCL turn by turn, as MultiNet's `bfcl_hf_inference.py` ran it: what the model reads at every turn.

A scripted stand-in for the model answers each turn; every prompt it is shown must be the text MultiNet's own turn loop
passed its processor for the same conversations and answers (`fixtures/multinet_generated.json`, "bfcl": the sample's
conversations plus one without a configuration and one without a path; row 1 always answers nothing).
"""

from __future__ import annotations

import json
import pathlib
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from multinet_jax import data, domains
from multinet_jax.eval import runners
from multinet_jax.eval.loop import Timing
from tokenizers_helpers import build_test_paligemma

REFERENCE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "multinet_generated.json").read_text())["bfcl"]
BATCH = len(REFERENCE["questions"])
SILENT_ROW = 1


def scripted_answer(turn: int, row: int) -> str:
    """The answers the reference was generated with (its `answer_rule`), before the decoder's strip."""
    return "" if row == SILENT_ROW else f"  cd(folder='t{turn}r{row}') then ls( a = True )\n"


class ScriptedModel:
    """Stands in for the evaluator: answers turn t of row r with `answers(t, r)` and remembers what it was shown."""

    def __init__(self, tokenizer, answers):
        self.prompt_tokenizer = self.text_tokenizer = tokenizer
        self.answers, self.bundled_tokenizer = answers, False
        self.config = SimpleNamespace(max_token_len=None)
        self.rng = jax.random.key(0)
        self.shown: list[dict] = []
        self.keys: list[jax.Array] = []  # the sampling key of each call

    def _observation(self, domain, batch):
        return {key: value for key, value in batch.items() if key.startswith(("image/", "image_mask/", "state"))}

    def _run_model(self, domain, observation, rng):
        turn = len(self.shown)
        self.shown.append(observation)
        self.keys.append(rng)
        tokens = np.zeros((BATCH, domain.protocol.max_new_tokens), np.int32)
        for row in range(BATCH):
            ids = self.prompt_tokenizer.encode(self.answers(turn, row)) + [self.prompt_tokenizer.eos_id]
            tokens[row, : len(ids)] = ids
        return tokens


@pytest.fixture(scope="module")
def conversation_run(tmp_path_factory):
    tokenizer = build_test_paligemma(tmp_path_factory.mktemp("paligemma"))
    directory = tmp_path_factory.mktemp("bfcl")
    for name in ("questions", "answers"):
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in REFERENCE[name]))
    batch = next(iter(data.load("bfcl", directory, tokenizer=tokenizer, batch_size=BATCH, shard_index=0, shard_count=1)))
    model = ScriptedModel(tokenizer, scripted_answer)
    records = runners.TurnByTurn().records(model, domains.lookup("bfcl"), batch, None, Timing())
    return tokenizer, model, records, REFERENCE["questions"]


def test_every_turn_reads_what_multinet_read(conversation_run):
    tokenizer, model, _, questions = conversation_run
    assert len(model.shown) == len(REFERENCE["multinet_turn_prompts"]) == max(len(question["question"]) for question in questions)
    for turn, (shown, multinet_prompts) in enumerate(zip(model.shown, REFERENCE["multinet_turn_prompts"])):
        for row, question in enumerate(questions):
            ids = shown["tokenized_prompt"][row][shown["tokenized_prompt_mask"][row]]
            if turn < len(question["question"]):
                assert ids.tolist() == tokenizer.prompt_ids(multinet_prompts[row], "paligemma_processor"), (row, turn)
            else:  # finished: rides along with no prompt (MultiNet re-ran its unchanged history)
                assert not ids.size
    for shown in model.shown:  # BFCL's white 224x224 image, attended
        assert np.all(shown["image/base_0_rgb"] == 255) and shown["image_mask/base_0_rgb"].all()


def test_records_hold_each_turns_calls_and_answer(conversation_run):
    _, _, records, questions = conversation_run
    assert [record["id"] for record in records] == [question["id"] for question in questions]
    for row, (record, question) in enumerate(zip(records, questions)):
        turns = range(len(question["question"]))
        assert record["responses"] == [scripted_answer(turn, row).strip() for turn in turns]
        assert record["prediction"] == [[] if row == SILENT_ROW else [f"cd(folder='t{turn}r{row}')", "ls( a = True )"] for turn in turns]
        assert record["prompt_tokens"] > 0


def test_every_turn_samples_with_its_own_key(conversation_run):
    """A turn reusing the previous turn's key would correlate a conversation's answers under `--temperature > 0`."""
    _, model, _, _ = conversation_run
    key_data = {tuple(np.asarray(jax.random.key_data(key)).ravel().tolist()) for key in model.keys}
    assert len(model.keys) > 1 and len(key_data) == len(model.keys)


@pytest.mark.parametrize("prediction", [[0.1] * 6, [0.1] * 8])
def test_a_valid_prediction_of_another_width_than_its_ground_truth_is_refused_naming_both(prediction):
    """Narrower (a checkpoint with fewer action dims) or wider: scored, each would count as invalid and exit 0."""
    records = [{"id": "a", "prediction": None, "ground_truth": [0.0] * 7},  # invalid rows are scored as invalid
               {"id": "b", "prediction": prediction, "ground_truth": [0.0] * 7}]
    with pytest.raises(ValueError, match=rf"^openx_x: sample 'b': the model's action has {len(prediction)} dims, its "
                                         r"ground truth \(as scored\) 7"):
        runners.check_action_widths("openx_x", records)
    runners.check_action_widths("openx_x", [records[0], {**records[1], "prediction": [0.1] * 7}])
