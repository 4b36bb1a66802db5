"""The Pi0.5 / Pi0-FAST prompts eval builds: the sample's own state dims, quantile-normalized with the checkpoint's
state q01/q99 (openpi's fixture checkpoint), then discretized into 256 bins, compared with what openpi's own input
transforms built from the same samples (`fixtures/openpi_prompts.json`)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from conftest import shared_path
from multinet_jax import tokenizers, weights
from multinet_jax.data import transforms
from multinet_jax.models import configs
from multinet_jax.models.pi0_fast import Pi0FastModel
from multinet_jax.models.state_prompts import StatePrompts
from tokenizers_helpers import (
    assert_openpi_prompt,
    build_test_paligemma,
    openpi_case_state,
    openpi_prompt_cases,
    openpi_prompts,
)


@pytest.fixture(scope="module")
def paligemma(tmp_path_factory) -> tokenizers.PaliGemmaTokenizer:
    return build_test_paligemma(tmp_path_factory.mktemp("paligemma"))


@pytest.fixture(scope="module")
def norm_stats() -> dict:
    """openpi's FAST fixture checkpoint's norm stats (8 state dims with distinct q01/q99): those openpi normalized with."""
    stats = weights.read_norm_stats(shared_path("openpi_reference", "fast", "ckpt", "0"))
    recorded = openpi_prompts()["norm_stats"]
    assert stats["state"]["q01"].tolist() == recorded["state_q01"] and stats["state"]["q99"].tolist() == recorded["state_q99"]
    return stats


def _batch(cases: list[dict]) -> dict:
    """The evaluator's batch of the cases' samples: zero-padded float32 states beside their own dims."""
    states = [openpi_case_state(case) for case in cases]
    return {"prompt": [case["prompt"] for case in cases], "state": np.stack([transforms.pad_state(s) for s in states]),
            "state_dim": np.stack([transforms.state_dim(s) for s in states])}


def _state_prompts(paligemma, norm_stats: dict, model: str, max_token_len: int, normalize: bool) -> StatePrompts:
    fast_prompt = tokenizers.FastPromptTokenizer(paligemma, max_len=max_token_len) if model == "pi0_fast" else None
    return StatePrompts(paligemma=paligemma, fast_prompt=fast_prompt, max_token_len=max_token_len,
                        norm_stats=norm_stats if normalize else None, normalize=normalize, source="ckpt")


@pytest.mark.parametrize("model", ["pi05", "pi0_fast"])
def test_prompts_are_openpis(paligemma, norm_stats, model):
    """Every case openpi built (states at q01, q99, their midpoint and beyond; all 8 dims; none; raw; prompts with "_",
    "\n", mixed case; cut at 8 and at the default lengths), batched by what builds them, equals openpi's ids and masks."""
    cases = openpi_prompt_cases(model)
    assert len(cases) >= 7
    group = lambda case: (case["max_token_len"], case["normalize"])  # noqa: E731
    for (max_token_len, normalize), grouped in itertools.groupby(sorted(cases, key=group), key=group):
        grouped = [case for case in grouped if case["fast_test_chunk"] is None]  # FAST's action postfix: test_tokenizers_fast
        if not grouped:
            continue
        prompts = _state_prompts(paligemma, norm_stats, model, max_token_len, normalize)(_batch(grouped))
        for index, case in enumerate(grouped):
            assert_openpi_prompt(case, {key: value[index] for key, value in prompts.items()})


def test_default_lengths_are_openpis():
    """openpi's Pi0.5 and Pi0-FAST configs cut their prompts at 200 and 250 (the fixture's uncut-config cases)."""
    defaults = {case["model"]: case["max_token_len"] for case in openpi_prompts()["cases"] if case["name"].endswith("_long")}
    assert defaults == {"pi05": configs.PI05_MAX_TOKEN_LEN, "pi0_fast": configs.PI0_FAST_MAX_TOKEN_LEN}
    assert configs.Pi0FastConfig().max_token_len == configs.PI0_FAST_MAX_TOKEN_LEN


def test_prompts_cut_at_the_limit_keep_their_whole_length(paligemma, norm_stats):
    """The cut happens here, so the whole lengths are counted here: the prompts uncut at 200, cut at 8."""
    cases = [case for case in openpi_prompt_cases("pi05") if case["normalize"] and case["max_token_len"] == 200][:2]
    whole = _state_prompts(paligemma, norm_stats, "pi05", 200, True)(_batch(cases))
    cut = _state_prompts(paligemma, norm_stats, "pi05", 8, True)(_batch(cases))
    assert whole["prompt_tokens"].tolist() == cut["prompt_tokens"].tolist() == whole["tokenized_prompt_mask"].sum(axis=1).tolist()
    assert cut["tokenized_prompt_mask"].sum(axis=1).tolist() == [8, 8] and min(whole["prompt_tokens"]) > 8
    fast = _state_prompts(paligemma, norm_stats, "pi0_fast", 256, True)(_batch(cases))
    assert fast["prompt_tokens"].tolist() == fast["tokenized_prompt_mask"].sum(axis=1).tolist()


def test_state_dims_are_the_samples_own_up_to_the_padded_width():
    assert transforms.state_dim(None) == 0
    assert transforms.state_dim(np.zeros((2, 7))) == 14
    assert transforms.state_dim(np.zeros(40)) == transforms.STATE_DIM  # pad_state keeps the first 32


def test_missing_or_short_state_quantiles_fail_naming_the_checkpoint(paligemma, norm_stats):
    without_quantiles = {"state": {**norm_stats["state"], "q01": None}}
    for stats in (None, {"actions": norm_stats["state"]}, without_quantiles):
        with pytest.raises(ValueError, match=r"^ckpt/x: the Pi0\.5 / Pi0-FAST prompt holds the state quantile-normalized"
                                             r".*--nonormalize_state"):
            StatePrompts(paligemma=paligemma, fast_prompt=None, max_token_len=64, norm_stats=stats, normalize=True,
                         source="ckpt/x")
    prompts = StatePrompts(paligemma=paligemma, fast_prompt=None, max_token_len=64, norm_stats=norm_stats,
                           normalize=True, source="ckpt/x")
    batch = {"prompt": ["go"], "state": transforms.pad_state(np.zeros(9))[None], "state_dim": np.array([9])}
    with pytest.raises(ValueError, match=r"^ckpt/x: the state has 9 dims but the checkpoint's state norm stats only 8"):
        prompts(batch)


def test_pi0_fast_builds_its_prompts_at_its_max_token_len_and_refuses_without_its_tokenizer(paligemma, norm_stats):
    """openpi's data config builds Pi0-FAST's prompt tokenizer with the model's max_token_len (not the tokenizer's
    default 256), and a Pi0-FAST without its FAST tokenizer must not fall back to Pi0.5's prompt format."""
    config = dataclasses.replace(configs.NAMED_CONFIGS["pi0_fast_tiny"], max_token_len=configs.PI0_FAST_MAX_TOKEN_LEN)
    fast = Pi0FastModel(config, {}, norm_stats, action_tokenizer=tokenizers.FastPromptTokenizer(paligemma))
    prompts = fast.action_prompts(paligemma, normalize_state=True, source="ckpt")
    assert prompts.limit == config.max_token_len != tokenizers.FastPromptTokenizer(paligemma).max_len
    (long,) = [case for case in openpi_prompt_cases("pi0_fast") if case["name"] == "pi0_fast_long"]  # cut at 250
    assert_openpi_prompt(long, {key: value[0] for key, value in prompts(_batch([long])).items()})
    with pytest.raises(ValueError, match="ckpt: Pi0FastModel has no action tokenizer to build its state prompts with"):
        Pi0FastModel(config, {}, norm_stats).action_prompts(paligemma, normalize_state=True, source="ckpt")
