"""How a domain turns one data batch into prediction records: the evaluator's per-domain strategy.

- `SingleCall` (every domain but BFCL): one model call for the batch (Act2Answer: its two probes), then the domain's
  output mapping.
- `TurnByTurn` (BFCL, as MultiNet's `bfcl_hf_inference.py` ran it): each conversation's history starts at its
  environment description; per turn the user's messages are appended (`"\\n User:"`), the model answers from the
  whole history (system prompt + history, re-tokenized each turn, up to the domain's decoding budget), and its
  own stripped answer is appended (`"\\n Assistant:"`), so later turns see earlier answers. Under a protocol with a
  chat (Magma's `bfcl_inference.py`) the history is chat messages instead: [system, user: the environment], each
  turn's messages as the data has them, each non-empty answer as an assistant turn. The batch keeps its
  shape every turn (conversations already finished ride along masked), so each prompt bucket compiles once.

Text outputs are decoded as Hugging Face's processor decodes them (`decode_text`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import jax
import numpy as np

from multinet_jax import data, domains, metrics
from multinet_jax.data import prompts, transforms
from multinet_jax.eval import act2answer_probes, results
from multinet_jax.models.interface import MultiNetActions, PromptLengths

if TYPE_CHECKING:
    from multinet_jax.eval.loop import Evaluator, Timing

def plain(value: Any) -> Any:
    """A per-sample field of a batch as plain Python (numpy scalars/arrays/bytes unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def sample_fields(batch: Mapping[str, Any], row: int) -> dict[str, Any]:
    """One row of a batch as plain Python, model inputs left out."""
    return {key: plain(value[row]) for key, value in batch.items() if not key.startswith(data.MODEL_INPUT_PREFIXES)}


def decode_text(tokenizer: Any, tokens: Sequence[int]) -> str:
    """Generated ids -> text as the HF processor's `decode(..., skip_special_tokens=True).strip()`: the ids up to
    the end-of-sequence token, without PAD / BOS / UNK (which MultiNet's decoding skipped) and ids past the
    vocabulary (the zero-padded rows of MultiNet's text runs: the first is HF's special `<image>`, the others have
    no piece), stripped. `tokenizer`: PaliGemma's, or a model's bundled one (`decode`, `eos_id`; the others where it
    has them: `eos_ids`, every id generation stops at, as a `generation_config.json` list such as Llama-3-Instruct's
    `[<|end_of_text|>, <|eot_id|>]`; what `sample_tokens` writes after any of them is padding, not text;
    `decodes_every_id`: its `decode` takes every id the model emits and skips the special ones itself, as Magma's
    does, keeping added tokens that are not special, such as `<image>`, which HF's decode keeps)."""
    skipped = {getattr(tokenizer, name, None) for name in ("pad_id", "bos_id", "unk_id")} - {None}
    vocab_size = None if getattr(tokenizer, "decodes_every_id", False) else getattr(tokenizer, "vocab_size", None)
    stops = {tokenizer.eos_id, *getattr(tokenizer, "eos_ids", ())}
    ids = []
    for token in (int(token) for token in tokens):
        if token in stops:
            break
        if token not in skipped and (vocab_size is None or token < vocab_size):
            ids.append(token)
    return tokenizer.decode(ids).strip()


class Runner(Protocol):
    def records(self, evaluator: Evaluator, domain: domains.Domain, batch: Mapping[str, Any],
                norm: domains.ActionNorm | None, timing: Timing) -> list[results.Record]: ...


def runner_for(domain: domains.Domain) -> Runner:
    return TurnByTurn() if domain.protocol.turn_by_turn else SingleCall()


def scored_ground_truth(rules: MultiNetActions | None, domain: domains.Domain, batch: Mapping[str, Any], row: int) -> Any:
    """Row `row`'s ground truth as its record holds it: on Open-X, MultiNet's transform for the family
    (`MultiNetActions.ground_truth`, named by the protocol's `ground_truth`), else the data's own. A resume compares
    the written records with it."""
    truth = plain(batch["ground_truth"][row])
    if rules is None or domain.output is not domains.Output.CONTINUOUS_ACTIONS:
        return truth
    return rules.ground_truth(domain.name, np.asarray(truth, np.float64)).tolist()


def check_action_widths(domain: str, records: Sequence[results.Record]) -> None:
    """Each valid prediction has its ground truth's width (as scored): scored otherwise, every one would count as
    invalid and the run exit 0. A model predicting fewer dims than the dataset's actions (a checkpoint trained on
    another robot, a small `--action_dim`) is refused at its first batch, naming both widths."""
    for record in records:
        prediction, truth = record["prediction"], record["ground_truth"]
        if prediction is not None and len(prediction) != len(truth):
            raise ValueError(f"{domain}: sample {record['id']!r}: the model's action has {len(prediction)} dims, its "
                             f"ground truth (as scored) {len(truth)}: every prediction would be invalid; evaluate a "
                             "checkpoint whose actions cover the dataset's dims")


def _base_record(batch: Mapping[str, Any], row: int, raw_output: Any, prediction: Any, ground_truth: Any) -> results.Record:
    record = {
        "id": str(plain(batch["id"][row])),
        "sample_index": int(batch["sample_index"][row]),
        "raw_output": raw_output,
        "prediction": prediction,
        "ground_truth": ground_truth,
    }
    return record


# Each record's prompt: its whole length in the model's tokens, the most tokens kept (None: never cut), how many were cut.
PROMPT_TOKENS, PROMPT_LIMIT, PROMPT_CUT = "prompt_tokens", "prompt_token_limit", "prompt_tokens_cut"
# Act2Answer's records hold two prompts: the text probe's question (the fields above) and the action probe's (these).
ACTION_PROBE = "action_"


def prompt_fields(lengths: PromptLengths | None, row: int, prefix: str = "") -> dict[str, Any]:
    """Row `row`'s prompt length and cut, as every record carries them (the domain's count in its metrics file),
    named with `prefix`; `lengths` None: no such prompt ran (the fields are null)."""
    if lengths is None:
        return {prefix + PROMPT_TOKENS: None, prefix + PROMPT_LIMIT: None, prefix + PROMPT_CUT: None}
    return {prefix + PROMPT_TOKENS: int(lengths.tokens[row]), prefix + PROMPT_LIMIT: lengths.limit,
            prefix + PROMPT_CUT: lengths.cut(row)}


class SingleCall:
    """One model call per batch; actions or text mapped to predictions by the domain's rules."""

    def records(self, evaluator: Evaluator, domain: domains.Domain, batch: Mapping[str, Any],
                norm: domains.ActionNorm | None, timing: Timing) -> list[results.Record]:
        observation = evaluator._observation(domain, batch)
        with timing.clock("model"):
            raw = evaluator._run_model(domain, observation, evaluator.rng)
        with timing.clock("output"):
            records = self.output_records(evaluator.text_tokenizer, evaluator.model.multinet_actions, domain, batch, raw, norm)
            prompts = evaluator._prompt_lengths(domain, batch, observation)
            row_of = {int(index): row for row, index in enumerate(batch["sample_index"])}
            for record in records:
                for prefix, lengths in prompts.items():
                    record.update(prompt_fields(lengths, row_of[record["sample_index"]], prefix))
            return records

    @staticmethod
    def output_records(tokenizer: Any, rules: MultiNetActions | None, domain: domains.Domain, batch: Mapping[str, Any],
                       raw: Any, norm: domains.ActionNorm | None) -> list[results.Record]:
        """`rules`: MultiNet's rules for the family's actions (`Model.multinet_actions`); None: the default ones."""
        rows = np.flatnonzero(np.asarray(batch["_mask"], bool))
        if domain.output is domains.Output.KNOWLEDGE_PROBES:
            return act2answer_probes.records(batch, rows, raw, norm, plain)
        if domain.output is domains.Output.CONTINUOUS_ACTIONS:
            action_dim = len(batch["ground_truth"][rows[0]]) if len(rows) else 0
            if rules is not None:
                predictions = rules.predictions(raw[rows], norm, domain.name)
            else:
                predictions = domains.continuous_predictions(raw[rows], action_dim, norm)
            raw_outputs = [raw[row, 0].tolist() for row in rows]
        elif domain.output is domains.Output.DISCRETE_ACTION:
            predictions, clipped = domains.discrete_predictions(raw[rows], norm)
            raw_outputs = [raw[row, 0].tolist() for row in rows]
        else:
            raw_outputs = [decode_text(tokenizer, raw[row]) for row in rows]
            predictions = [domains.parse_text(domain, text, sample_fields(batch, row)) for text, row in zip(raw_outputs, rows)]
        records = []
        for row, raw_output, prediction in zip(rows, raw_outputs, predictions):
            record = _base_record(batch, row, raw_output, prediction, scored_ground_truth(rules, domain, batch, row))
            if domain.metric_kind in ("multiple_choice", "discrete", "vqa") and domain.protocol.answer in metrics.RULES_SCORED_APART:
                record[metrics.ANSWER_RULE_FIELD] = domain.protocol.answer  # `score` then reads them by the script's rule
            if domain.metric_kind == "classification":
                record["num_options"] = int(batch["num_options"][row])
                record[metrics.SUBSET_FIELD] = plain(batch["subset"][row])
            records.append(record)
        if domain.output is domains.Output.DISCRETE_ACTION:
            for record, value in zip(records, clipped):
                record[metrics.CLIPPED_FIELD] = value
        if domain.output is domains.Output.CONTINUOUS_ACTIONS:
            check_action_widths(domain.name, records)
        return records


class TurnByTurn:
    """BFCL's conversations, one model call per turn over the whole batch (see the module docstring)."""

    def records(self, evaluator: Evaluator, domain: domains.Domain, batch: Mapping[str, Any],
                norm: domains.ActionNorm | None, timing: Timing) -> list[results.Record]:
        rows = np.flatnonzero(np.asarray(batch["_mask"], bool)).tolist()
        turns = {row: batch["turns"][row] for row in rows}
        histories = {row: batch["environment"][row] for row in rows}
        responses: dict[int, list[str]] = {row: [] for row in rows}
        longest_prompt: dict[int, dict[str, Any]] = {}  # per row, the fields of its turn with the longest prompt
        chat = domain.protocol.chat
        chats = {row: chat.messages(histories[row]) for row in rows} if chat is not None else {}
        observation = evaluator._observation(domain, batch)
        for turn in range(max((len(turns[row]) for row in rows), default=0)):
            active = [row for row in rows if turn < len(turns[row])]
            with timing.clock("output"):
                for row in active:
                    histories[row] = prompts.bfcl_user_turn(histories[row], turns[row][turn])
                    if chat is not None:
                        chats[row] += [{"role": str(message["role"]), "content": str(message["content"])}
                                       for message in turns[row][turn]]
                texts = {row: prompts.bfcl_prompt(histories[row]) for row in active}
                if evaluator.bundled_tokenizer:  # the model tokenizes `prompt` texts itself
                    turn_inputs = {"prompt": [texts.get(row, "") for row in range(len(batch["_mask"]))]}
                    if chat is not None:  # ... from the conversation (rows not in this turn: an empty one)
                        turn_inputs["chat"] = [chats[row] if row in active else chat.messages("")
                                               for row in range(len(batch["_mask"]))]
                        turn_inputs["chat_tokenizer_bos"], turn_inputs["chat_max_tokens"] = chat.tokenizer_bos, chat.max_tokens
                    lengths = evaluator.model.prompt_lengths({**observation, **turn_inputs}, for_actions=False)
                else:
                    tokens = self._tokenize(evaluator, domain, len(batch["_mask"]), texts)
                    turn_inputs = {key: tokens[key] for key in ("tokenized_prompt", "tokenized_prompt_mask")}
                    lengths = PromptLengths(tokens["prompt_tokens"], domain.protocol.truncation_length(evaluator.config.max_token_len))
                for row in active:
                    fields = prompt_fields(lengths, row)
                    if fields[PROMPT_TOKENS] > longest_prompt.get(row, {}).get(PROMPT_TOKENS, -1):
                        longest_prompt[row] = fields
            with timing.clock("model"):
                # each turn its own key: reusing the last turn's would correlate a conversation's answers when sampling
                raw = evaluator._run_model(domain, {**observation, **turn_inputs}, jax.random.fold_in(evaluator.rng, turn))
            with timing.clock("output"):
                for row in active:
                    response = decode_text(evaluator.text_tokenizer, raw[row])
                    responses[row].append(response)
                    histories[row] = prompts.bfcl_assistant_turn(histories[row], response)
                    if chat is not None and response:  # MultiNet's Magma script adds only non-empty answers
                        chats[row].append({"role": "assistant", "content": response})
        records = []
        for row in rows:
            calls = [domains.parse_function_calls(response) for response in responses[row]]
            # a conversation's answers are the data's own (no action transform applies to text)
            record = _base_record(batch, row, "\n".join(responses[row]), calls, plain(batch["ground_truth"][row]))
            record["responses"] = responses[row]  # per-turn texts: what `score` embeds for BFCL's similarity
            record.update(longest_prompt.get(row, {}))  # the longest turn's prompt, in the model's own tokens
            records.append(record)
        return records

    @staticmethod
    def _tokenize(evaluator: Evaluator, domain: domains.Domain, batch_size: int, texts: dict[int, str]) -> dict[str, np.ndarray]:
        """This turn's prompts of the active rows, bucketed like the pipeline's; other rows get an empty prompt."""
        max_len = domain.protocol.truncation_length(evaluator.config.max_token_len)
        per_row = {row: transforms.tokenize(evaluator.prompt_tokenizer, text, domain.protocol.prompt_format.value, max_len)
                   for row, text in texts.items()}
        length = max(len(tokens["tokenized_prompt"]) for tokens in per_row.values())
        ids, mask = np.zeros((batch_size, length), np.int32), np.zeros((batch_size, length), bool)
        prompt_tokens = np.zeros(batch_size, np.int32)
        for row, tokens in per_row.items():
            ids[row, : len(tokens["tokenized_prompt"])] = tokens["tokenized_prompt"]
            mask[row, : len(tokens["tokenized_prompt_mask"])] = tokens["tokenized_prompt_mask"]
            prompt_tokens[row] = tokens["prompt_tokens"]
        return {"tokenized_prompt": ids, "tokenized_prompt_mask": mask, "prompt_tokens": prompt_tokens}
