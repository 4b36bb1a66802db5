"""Prompt truncation is counted for every family that tokenizes its own prompts (SmolVLA, Magma, OpenVLA), on the demo
data and checkpoints: per row the prompt's whole length, the limit and the tokens cut; per domain the count in the
metrics file and a warning line. The pipeline-tokenized families (Pi0, PaliGemma): `test_eval_e2e.py`."""

from __future__ import annotations

import json
import pathlib

import tokenizers

import eval_helpers
from magma_helpers import magma_dir
from multinet_jax import data, demo
from multinet_jax.models import load_model, magma_protocol
from openvla_helpers import openvla_dir

LIMIT = 4


def _run(tmp_path: pathlib.Path, domain: str, **settings) -> tuple[list[dict], dict]:
    eval_helpers.evaluate(tmp_path, (domain,), tokenizer=None, limit=LIMIT, batch_size=LIMIT, max_decoding_steps=2, **settings)
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
