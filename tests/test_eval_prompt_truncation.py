"""Prompt truncation is counted for every family that tokenizes its own prompts (SmolVLA, Magma, OpenVLA), for the
Pi0.5 / Pi0-FAST action prompts holding the state (`models/state_prompts.py`) and for Act2Answer's text-probe
questions, on the demo data and checkpoints: per row the prompt's whole length, the limit and the tokens cut; per
domain the count in the metrics file and a warning line. The pipeline-tokenized families (Pi0, PaliGemma):
`test_eval_e2e.py`."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import tokenizers

from conftest import shared_path
from multinet_jax.demo import datasets
from multinet_jax.models import configs

import eval_helpers
from magma_helpers import magma_dir
from multinet_jax import data, demo, weights
from multinet_jax import tokenizers as paligemma_tokenizers
from multinet_jax.models import load_model, magma_protocol
from openvla_helpers import openvla_dir

LIMIT = 4


def _run(tmp_path: pathlib.Path, domain: str, **settings) -> tuple[list[dict], dict]:
    settings = {"tokenizer": None, **settings}  # the model's own, unless a PaliGemma-tokenized family's is given
    decodes = eval_helpers.settings(tmp_path, (domain,), **settings)["max_decoding_steps"] is not None
    eval_helpers.evaluate(tmp_path, (domain,), limit=LIMIT, batch_size=LIMIT, **({"max_decoding_steps": 2} if decodes else {}),
                          **settings)
    records = eval_helpers.read_jsonl(tmp_path / "predictions" / f"{domain}.jsonl")
    return records, json.loads((tmp_path / f"{domain}_metrics.json").read_text())["prompt_truncation"]


def _prompts(domain: str) -> list[str]:
    paths = eval_helpers.assets()
    batch = next(iter(data.load(domain, pathlib.Path(paths["data_dir"]) / domain, split="public", tokenizer=None,
                                batch_size=LIMIT, limit=LIMIT, cache_dir=paths["cache_dir"])))
    return [str(prompt) for prompt in batch["prompt"]]


def test_smolvla_counts_the_tasks_cut_at_its_tokenizer_max_length(tmp_path, capsys):
    """The demo SmolVLA with config.json's tokenizer_max_length lowered to 6: each Open-X task's whole length is what
    its backbone's tokenizer.json gives (read here with `tokenizers` itself), and the model reads 6 of them."""
    checkpoint = demo.build_checkpoint("smolvla", tmp_path / "smolvla_demo")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "tokenizer_max_length": 6}))
    records, truncation = _run(tmp_path / "run", "openx_bimanual", model="smolvla", checkpoint=str(checkpoint),
                               num_flow_steps=1)
    backbone = checkpoint.parent / config["vlm_model_name"]
    lengths = [len(tokenizers.Tokenizer.from_file(str(backbone / "tokenizer.json")).encode(f"{prompt}\n").ids)
               for prompt in _prompts("openx_bimanual")]
    assert min(lengths) > 6  # every demo task is longer than the limit
    assert [(r["prompt_tokens"], r["prompt_token_limit"], r["prompt_tokens_cut"]) for r in records] == \
        [(length, 6, length - 6) for length in lengths]
    kept = load_model(checkpoint).tokenizer.tokenize_tasks(_prompts("openx_bimanual"))[1].sum(axis=1)
    assert kept.tolist() == [6] * LIMIT  # what the model read: the limit, as recorded
    assert truncation == {"max_prompt_tokens": 6, "truncated": LIMIT, "counted": LIMIT, "longest_prompt_tokens": max(lengths),
                          "most_tokens_cut": max(lengths) - 6}
    assert f"warning: openx_bimanual: {LIMIT} of {LIMIT} prompts truncated to 6 tokens" in capsys.readouterr().err


def test_magma_counts_the_chats_cut_at_the_protocols_length(tmp_path, capsys, monkeypatch):
    """Magma's PIQA chat (system prompt, question) cut at 24 tokens instead of the scripts' 1024: every demo row is
    longer, so every row is counted, with its whole length as Magma's tokenizer encodes the chat."""
    monkeypatch.setattr(magma_protocol, "MAX_SEQ_LEN", 24)
    records, truncation = _run(tmp_path, "piqa", model="magma", checkpoint=magma_dir())
    assert all(r["prompt_token_limit"] == 24 and r["prompt_tokens"] > 24 for r in records)
    assert all(r["prompt_tokens_cut"] == r["prompt_tokens"] - 24 for r in records)
    assert truncation["truncated"] == LIMIT and truncation["max_prompt_tokens"] == 24
    assert f"warning: piqa: {LIMIT} of {LIMIT} prompts truncated to 24 tokens" in capsys.readouterr().err


def test_magma_under_the_scripts_length_cuts_nothing(tmp_path):
    records, truncation = _run(tmp_path, "piqa", model="magma", checkpoint=magma_dir())
    assert all(r["prompt_token_limit"] == magma_protocol.MAX_SEQ_LEN and r["prompt_tokens_cut"] == 0 for r in records)
    assert truncation["truncated"] == 0 and truncation["counted"] == LIMIT


def test_openvla_never_cuts_and_counts_its_own_prompt_tokens(tmp_path):
    records, truncation = _run(tmp_path, "piqa", model="openvla", checkpoint=openvla_dir())
    tokenizer = load_model(openvla_dir()).tokenizer
    lengths = [len(tokenizer.encode(f"In: {prompt}\nOut:")) for prompt in _prompts("piqa")]
    assert [(r["prompt_tokens"], r["prompt_token_limit"], r["prompt_tokens_cut"]) for r in records] == \
        [(length, None, 0) for length in lengths]
    assert truncation == {"max_prompt_tokens": None, "truncated": 0, "counted": LIMIT,
                          "longest_prompt_tokens": max(lengths), "most_tokens_cut": 0}


def _batch(domain: str) -> dict:
    paths = eval_helpers.assets()
    return next(iter(data.load(domain, pathlib.Path(paths["data_dir"]) / domain, split="public", tokenizer=None,
                               batch_size=LIMIT, limit=LIMIT, cache_dir=paths["cache_dir"])))


def _normalized_states(domain: str, norm_stats: dict) -> list[np.ndarray]:
    """Each demo row's own state dims, quantile-normalized with the checkpoint's state q01/q99 (openpi's order)."""
    batch = _batch(domain)
    q01, q99 = (np.asarray(norm_stats["state"][key], np.float64) for key in ("q01", "q99"))
    states = [np.asarray(state, np.float64)[:dim] for state, dim in zip(batch["state"], batch["state_dim"])]
    return [(state - q01[:len(state)]) / (q99[:len(state)] - q01[:len(state)] + 1e-6) * 2 - 1 for state in states]


def _cut_between(lengths: list[int]) -> int:
    """A limit that cuts the longer demo prompts and not the shortest (so both cases are checked)."""
    assert min(lengths) < max(lengths)
    return min(lengths) + 1


def test_pi05_counts_its_state_prompts_cut_at_max_token_len(tmp_path, capsys, monkeypatch):
    """Pi0.5 (openpi's tiny fixture) builds the prompts holding the state per batch and cuts them at its
    max_token_len (openpi's 200, lowered here): each row's whole length is what PaliGemma's tokenizer gives the
    uncut openpi prompt (at 200, which none reaches), the cut what the limit leaves out, 0 for the shortest."""
    paths = eval_helpers.assets()
    checkpoint = shared_path("openpi_reference", "pi05", "ckpt", "0")
    tokenizer = paligemma_tokenizers.PaliGemmaTokenizer(paths["tokenizer"])
    states = _normalized_states("openx_bimanual", weights.read_norm_stats(checkpoint))
    lengths = [int(tokenizer.tokenize_prompt(prompt, configs.PI05_MAX_TOKEN_LEN, state=state)[1].sum())
               for prompt, state in zip(_prompts("openx_bimanual"), states)]
    assert max(lengths) < configs.PI05_MAX_TOKEN_LEN  # uncut: the whole lengths
    limit = _cut_between(lengths)
    monkeypatch.setattr(configs, "PI05_MAX_TOKEN_LEN", limit)
    records, truncation = _run(tmp_path, "openx_bimanual", model=None, checkpoint=str(checkpoint), tokenizer=paths["tokenizer"])
    assert [(r["prompt_tokens"], r["prompt_token_limit"], r["prompt_tokens_cut"]) for r in records] == \
        [(length, limit, max(length - limit, 0)) for length in lengths]
    cut = sum(length > limit for length in lengths)
    assert truncation == {"max_prompt_tokens": limit, "truncated": cut, "counted": LIMIT, "longest_prompt_tokens": max(lengths),
                          "most_tokens_cut": max(lengths) - limit}
    assert f"warning: openx_bimanual: {cut} of {LIMIT} prompts truncated to {limit} tokens" in capsys.readouterr().err


def test_pi0_fast_counts_its_state_prompts_cut_at_its_max_token_len(tmp_path, monkeypatch):
    """Pi0-FAST's prompt is cut at the model's max_token_len, as openpi's data config builds its FAST tokenizer
    (openpi's 250, lowered here; not the tokenizer's own default 256): the whole lengths are those of the uncut
    prompts PaliGemma's tokenizer gives (at 256, which none reaches)."""
    paths = eval_helpers.assets()
    tokenizer = paligemma_tokenizers.PaliGemmaTokenizer(paths["tokenizer"])
    states = _normalized_states("openx_bimanual", weights.read_norm_stats(paths["fast_checkpoint"]))
    uncut = paligemma_tokenizers.FastPromptTokenizer(tokenizer)
    lengths = [int(uncut.tokenize(prompt, state)["tokenized_prompt_mask"].sum())
               for prompt, state in zip(_prompts("openx_bimanual"), states)]
    assert max(lengths) < uncut.max_len
    limit = _cut_between(lengths)
    monkeypatch.setattr(configs, "PI0_FAST_MAX_TOKEN_LEN", limit)
    records, truncation = _run(tmp_path, "openx_bimanual", model="pi0_fast", checkpoint=paths["fast_checkpoint"],
                               tokenizer=paths["tokenizer"], fast_tokenizer=paths["fast_tokenizer"])
    assert [(r["prompt_tokens"], r["prompt_token_limit"], r["prompt_tokens_cut"]) for r in records] == \
        [(length, limit, max(length - limit, 0)) for length in lengths]
    assert truncation["truncated"] == sum(length > limit for length in lengths) and truncation["counted"] == LIMIT


def test_act2answer_counts_the_text_probe_questions_and_the_action_prompts(tmp_path, capsys):
    """Act2Answer's records count the text probe's question (the prediction's prompt, PaliGemma's tokens cut at the
    protocol's length, --max_token_len here) and, apart, the action probe's instruction, each in its metrics entry
    and warning line."""
    paths = eval_helpers.assets()
    datasets.write_missing(pathlib.Path(paths["data_dir"]), ["act2answer"])
    tokenizer = paligemma_tokenizers.PaliGemmaTokenizer(paths["tokenizer"])
    batch = _batch("act2answer")
    lengths = {"": [int(tokenizer.tokenize_prompt(question, 1024)[1].sum()) for question in batch["question"]],
               "action_": [int(tokenizer.tokenize_prompt(prompt, 1024)[1].sum()) for prompt in batch["prompt"]]}
    # a limit cutting some, not all, of both the questions and the instructions
    limit = next(limit for limit in range(1, max(map(max, lengths.values())))
                 if all(0 < sum(length > limit for length in whole) < LIMIT for whole in lengths.values()))
    records, _ = _run(tmp_path, "act2answer", max_token_len=limit, tokenizer=paths["tokenizer"], num_flow_steps=1)
    metrics_file, err = json.loads((tmp_path / "act2answer_metrics.json").read_text()), capsys.readouterr().err
    for prefix, whole in lengths.items():
        assert [(r[f"{prefix}prompt_tokens"], r[f"{prefix}prompt_token_limit"], r[f"{prefix}prompt_tokens_cut"])
                for r in records] == [(length, limit, max(length - limit, 0)) for length in whole]
        cut = sum(length > limit for length in whole)
        assert 0 < cut < LIMIT
        assert metrics_file[f"{prefix}prompt_truncation"] == {
            "max_prompt_tokens": limit, "truncated": cut, "counted": LIMIT, "longest_prompt_tokens": max(whole),
            "most_tokens_cut": max(whole) - limit}
        assert f"warning: act2answer: {cut} of {LIMIT} {prefix.replace('_', ' ')}prompts truncated to {limit} tokens" in err


def test_act2answer_counts_a_bundled_tokenizers_questions_and_no_action_prompt_it_did_not_run(tmp_path):
    """SmolVLA tokenizes the questions itself (its backbone's tokenizer.json, read here with `tokenizers`, cut at
    config.json's tokenizer_max_length); its action probe does not apply, so no action prompt is counted."""
    datasets.write_missing(pathlib.Path(eval_helpers.assets()["data_dir"]), ["act2answer"])
    checkpoint = demo.build_checkpoint("smolvla", tmp_path / "smolvla_demo")
    config = json.loads((checkpoint / "config.json").read_text())
    backbone = tokenizers.Tokenizer.from_file(str(checkpoint.parent / config["vlm_model_name"] / "tokenizer.json"))
    lengths = [len(backbone.encode(f"{question}\n").ids) for question in _batch("act2answer")["question"]]
    limit = _cut_between(lengths)
    (checkpoint / "config.json").write_text(json.dumps({**config, "tokenizer_max_length": limit}))
    records, truncation = _run(tmp_path / "run", "act2answer", model="smolvla", checkpoint=str(checkpoint))
    assert [(r["prompt_tokens"], r["prompt_token_limit"], r["prompt_tokens_cut"]) for r in records] == \
        [(length, limit, max(length - limit, 0)) for length in lengths]
    assert truncation["truncated"] == sum(length > limit for length in lengths)
    assert all(r["action_prompt_tokens"] is r["action_prompt_token_limit"] is r["action_prompt_tokens_cut"] is None
               for r in records)
    assert json.loads((tmp_path / "run" / "act2answer_metrics.json").read_text())["action_prompt_truncation"] is None
