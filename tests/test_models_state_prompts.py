"""The Pi0.5 / Pi0-FAST prompts eval builds: the sample's own state dims, quantile-normalized with the checkpoint's
state q01/q99 (openpi's fixture checkpoint), then discretized into 256 bins, as openpi's transforms do."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from multinet_jax import tokenizers, weights
from multinet_jax.data import transforms
from multinet_jax.models import configs
from multinet_jax.models.pi0_fast import Pi0FastModel
from multinet_jax.models.state_prompts import StatePrompts
from tokenizers_helpers import build_test_paligemma


@pytest.fixture(scope="module")
def paligemma(tmp_path_factory) -> tokenizers.PaliGemmaTokenizer:
    return build_test_paligemma(tmp_path_factory.mktemp("paligemma"))


@pytest.fixture(scope="module")
def norm_stats() -> dict:
    """openpi's FAST fixture checkpoint's norm stats: 8 state dims with distinct q01/q99."""
    return weights.read_norm_stats(shared_path("openpi_reference", "fast", "ckpt", "0"))


def _batch(norm_stats: dict) -> dict:
    """Row 0: 5 state dims placed by hand at q01, q99, their midpoint, below q01 and above q99; row 1: no state."""
    q01, q99 = (np.asarray(norm_stats["state"][key], np.float64) for key in ("q01", "q99"))
    state = np.array([q01[0], q99[1], (q01[2] + q99[2]) / 2, q01[3] - 10, q99[4] + 10], np.float32)
    return {"prompt": ["Pick_up the cup", "Stir"], "state": np.stack([transforms.pad_state(state), transforms.pad_state(None)]),
            "state_dim": np.stack([transforms.state_dim(state), transforms.state_dim(None)])}


def _text(paligemma, ids: np.ndarray, mask: np.ndarray) -> str:
    return paligemma.decode(ids[mask])


def test_pi05_prompt_holds_the_normalized_unpadded_state(paligemma, norm_stats):
    prompts = StatePrompts(paligemma=paligemma, fast_prompt=None, max_token_len=200, norm_stats=norm_stats,
                           normalize=True, source="ckpt")(_batch(norm_stats))
    ids, masks = prompts["tokenized_prompt"], prompts["tokenized_prompt_mask"]
    assert ids.shape == masks.shape == (2, 200)
    # q01 -> -1 (bin 0); q99 -> just under 1 (bin 255); the midpoint -> just under 0 (bin 127); beyond: -1 and 255
    assert _text(paligemma, ids[0], masks[0]) == "Task: Pick up the cup, State: 0 255 127 -1 255;\nAction: "
    assert _text(paligemma, ids[1], masks[1]) == "Task: Stir, State: ;\nAction: "
    assert ids[0, 0] == paligemma.bos_id
    assert prompts["prompt_tokens"].tolist() == masks.sum(axis=1).tolist()  # uncut at 200: their whole lengths


def test_prompts_cut_at_the_limit_keep_their_whole_length(paligemma, norm_stats):
    """The cut happens here, so the whole lengths are counted here: the prompts uncut at 200, cut at 8."""
    def build(max_token_len: int) -> dict:
        return StatePrompts(paligemma=paligemma, fast_prompt=None, max_token_len=max_token_len, norm_stats=norm_stats,
                            normalize=True, source="ckpt")(_batch(norm_stats))
    whole, cut = build(200), build(8)
    assert whole["prompt_tokens"].tolist() == cut["prompt_tokens"].tolist() == whole["tokenized_prompt_mask"].sum(axis=1).tolist()
    assert cut["tokenized_prompt_mask"].sum(axis=1).tolist() == [8, 8] and min(whole["prompt_tokens"]) > 8


def test_fast_prompt_holds_the_normalized_unpadded_state(paligemma, norm_stats):
    fast_prompt = tokenizers.FastPromptTokenizer(paligemma)
    prompts = StatePrompts(paligemma=paligemma, fast_prompt=fast_prompt, max_token_len=200, norm_stats=norm_stats,
                           normalize=True, source="ckpt")(_batch(norm_stats))
    assert set(prompts) == {"tokenized_prompt", "tokenized_prompt_mask", "token_ar_mask", "token_loss_mask", "prompt_tokens"}
    assert prompts["prompt_tokens"].tolist() == prompts["tokenized_prompt_mask"].sum(axis=1).tolist()  # uncut at 256
    text = _text(paligemma, prompts["tokenized_prompt"][0], prompts["tokenized_prompt_mask"][0])
    assert text == "Task: pick up the cup, State: 0 255 127 -1 255;\n"  # FAST's prompt is lower-cased
    assert not prompts["token_ar_mask"].any()  # no action postfix at inference


def test_without_normalization_the_raw_state_is_discretized(paligemma):
    batch = {"prompt": ["go"], "state": transforms.pad_state(np.array([0.5, -0.25, 3.0]))[None],
             "state_dim": np.array([3])}
    prompts = StatePrompts(paligemma=paligemma, fast_prompt=None, max_token_len=64, norm_stats=None,
                           normalize=False, source="ckpt")(batch)
    assert _text(paligemma, prompts["tokenized_prompt"][0], prompts["tokenized_prompt_mask"][0]) == \
        "Task: go, State: 192 96 255;\nAction: "


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
    config = configs.NAMED_CONFIGS["pi0_fast_tiny"]
    fast = Pi0FastModel(config, {}, norm_stats, action_tokenizer=tokenizers.FastPromptTokenizer(paligemma))
    prompts = fast.action_prompts(paligemma, normalize_state=True, source="ckpt")
    assert prompts.limit == config.max_token_len != tokenizers.FastPromptTokenizer(paligemma).max_len
    assert prompts(_batch(norm_stats))["tokenized_prompt"].shape == (2, config.max_token_len)
    with pytest.raises(ValueError, match="ckpt: Pi0FastModel has no action tokenizer to build its state prompts with"):
        Pi0FastModel(config, {}, norm_stats).action_prompts(paligemma, normalize_state=True, source="ckpt")
