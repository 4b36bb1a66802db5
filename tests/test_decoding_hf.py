"""Text decoding as MultiNet's text runs did it: Hugging Face's `PaliGemmaForConditionalGeneration.generate`
(transformers 4.48) with Pi0's PaliGemma weights injected, greedy.

What HF does, and so the transcription below: positions come from the attention mask's cumulative sum (valid tokens
numbered contiguously; HF starts at 1, a uniform offset RoPE's relative rotation cancels), the prefill attends
every valid prefix token bidirectionally, each generated token attends every valid prefix token and the tokens
generated before it, and a masked token is never attended. Transcribed without a KV cache: every step reruns the
whole sequence of valid tokens. `openpi_exact=False` must give its tokens on a batch whose rows mask wrist cameras
(MultiNet's text inputs: the base camera live, the wrists masked), one of them encoded because another row uses it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import openpi_observation
from decoding_helpers import pi0_model
from multinet_jax.models import decoding
from multinet_jax.models.backbone import PaliGemma

STEPS = 8
PADDED_VOCAB = 1024 + 64  # the tiny model's vocabulary plus MultiNet's 64 zero-padded rows


def masked_wrist_batch() -> dict[str, np.ndarray]:
    """The fixture's two rows: both wrists masked in row 0; row 1 keeps its left wrist (so that camera is encoded
    and row 0's masked tokens are in the prefix). Masked pixels are noise: they must not matter."""
    observation = openpi_observation("pi0")
    observation["image_mask/left_wrist_0_rgb"] = np.array([False, True])
    observation["image_mask/right_wrist_0_rgb"] = np.array([False, False])
    return observation


def hf_greedy_tokens(model, observation: dict[str, np.ndarray], steps: int, logits_vocab_size: int | None = None) -> np.ndarray:
    """HF's greedy `generate` per row, cache-free (module docstring), with the padded-vocabulary argmax when given:
    logits of the rows past the vocabulary are 0 and such a token embeds as zeros."""
    module = PaliGemma(model.config)
    variables = {"params": model.params["PaliGemma"]}
    cameras = [key.removeprefix("image/") for key in observation if key.startswith("image/")]
    embedded, valid = module.apply(
        variables, [jnp.asarray(observation[f"image/{c}"]) for c in cameras],
        [jnp.asarray(observation[f"image_mask/{c}"]) for c in cameras], jnp.asarray(observation["tokenized_prompt"]),
        jnp.asarray(observation["tokenized_prompt_mask"]), method=PaliGemma.embed_prefix)
    vocab = model.config.vocab_size

    @functools.partial(jax.jit, static_argnums=2)
    def last_logits(sequence, length, prefix_len):
        """Logits after token `length - 1` of `sequence` [L, width] (slots past `length` unused)."""
        slots = jnp.arange(sequence.shape[0])
        mask = (slots[None, :] < prefix_len) | (slots[None, :] <= slots[:, None])  # prefix bidirectional, then causal
        mask &= slots[None, :] < length
        experts = [sequence[None]] + [None] * (len(model.config.experts) - 1)
        (hidden, *_), _ = module.apply(variables, experts, slots[None], mask[None], method=lambda m, *a: m.llm(*a))
        last = jax.lax.dynamic_slice_in_dim(hidden, length - 1, 1, axis=1)
        logits = module.apply(variables, last, method=lambda m, h: m.llm.logits(h))[0, 0]
        return jnp.pad(logits, (0, (logits_vocab_size or vocab) - vocab))

    tokens = np.zeros((len(valid), steps), np.int32)
    for row in range(len(valid)):
        prefix = np.asarray(embedded[row])[np.asarray(valid[row])]  # the valid tokens only, in order
        sequence = np.concatenate([prefix, np.zeros((steps, prefix.shape[1]), prefix.dtype)])
        for step in range(steps):
            token = int(jnp.argmax(last_logits(jnp.asarray(sequence), len(prefix) + step, len(prefix))))
            tokens[row, step] = token
            if token == decoding.PALIGEMMA_EOS_ID:
                break
            if token < vocab:  # a padded row embeds as zeros
                sequence[len(prefix) + step] = np.asarray(module.apply(variables, jnp.array([[token]]),
                                                                      method=lambda m, t: m.llm.embed(t)))[0, 0]
    return tokens


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return hf_greedy_tokens(pi0_model(), masked_wrist_batch(), STEPS)


def test_contiguous_positions_and_valid_keys_are_hfs_generate(reference):
    tokens = np.asarray(pi0_model().sample_tokens(masked_wrist_batch(), max_decoding_steps=STEPS, openpi_exact=False))
    np.testing.assert_array_equal(tokens, reference)


def test_masked_wrist_tokens_get_no_attention():
    """Repainting the masked wrists (row 0's left one is encoded for row 1) changes nothing; openpi's window, which
    reads masked tokens, is changed by it."""
    observation = masked_wrist_batch()
    repainted = {**observation, "image/left_wrist_0_rgb": observation["image/left_wrist_0_rgb"].copy(),
                 "image/right_wrist_0_rgb": -observation["image/right_wrist_0_rgb"]}
    repainted["image/left_wrist_0_rgb"][0] = np.random.default_rng(1).uniform(-1, 1, (224, 224, 3))
    model = pi0_model()
    hf = [np.asarray(model.sample_tokens(o, max_decoding_steps=STEPS, openpi_exact=False)) for o in (observation, repainted)]
    np.testing.assert_array_equal(hf[0], hf[1])
    openpi = [np.asarray(model.sample_tokens(o, max_decoding_steps=STEPS)) for o in (observation, repainted)]
    assert not np.array_equal(openpi[0][0], openpi[1][0])


def test_padded_vocabulary_decodes_as_the_transcription():
    expected = hf_greedy_tokens(pi0_model(), masked_wrist_batch(), STEPS, logits_vocab_size=PADDED_VOCAB)
    tokens = pi0_model().sample_tokens(masked_wrist_batch(), max_decoding_steps=STEPS, openpi_exact=False,
                                       logits_vocab_size=PADDED_VOCAB)
    np.testing.assert_array_equal(np.asarray(tokens), expected)


def test_padded_logits_win_when_every_real_logit_is_negative_and_embed_as_zeros():
    settings = decoding.DecodeSettings(4, logits_vocab_size=6)
    logits = jnp.array([[-3.0, -1.0, -2.0, -5.0], [-3.0, 2.0, -2.0, -5.0]])
    padded = decoding.pad_logits(logits, settings)
    np.testing.assert_array_equal(padded[:, 4:], 0)
    picked = decoding.sample_next(padded, jax.random.split(jax.random.key(0), 2), jnp.int32(0), decoding.Sampling.create())
    assert picked.tolist() == [4, 1]  # the first zero logit (HF: `<image>`, id 257,152), else the real argmax
    model = pi0_model()
    module, variables = PaliGemma(model.config), {"params": model.params["PaliGemma"]}
    vocab = model.config.vocab_size
    embedded = decoding._embed_generated(module, variables, jnp.array([vocab, 5, vocab + 63]),
                                         decoding.DecodeSettings(4, logits_vocab_size=vocab + 64))
    np.testing.assert_array_equal(embedded[0], 0)
    np.testing.assert_array_equal(embedded[2], 0)
    np.testing.assert_array_equal(embedded[1], module.apply(variables, jnp.array([[5]]), method=lambda m, t: m.llm.embed(t))[0])
