"""How far a prompt is padded: the corrected decoder's tokens do not depend on it; openpi's window lets the masked
cameras' tokens attend to the padding, so `eval` says when its text answers depend on the batch."""

from __future__ import annotations

import numpy as np
import pytest

import eval_helpers
from multinet_jax.models import decoding, openpi_checkpoint, paligemma, registry
from multinet_jax.models.observation import OPENPI_CAMERAS

PROMPT_TOKENS = 10


def _observation(config, image, prompt, padded_to: int) -> dict[str, np.ndarray]:
    """One row: the base camera live, the wrists masked (MultiNet's text layout), the prompt padded to `padded_to`."""
    observation = {}
    for index, camera in enumerate(OPENPI_CAMERAS):
        observation[f"image/{camera}"] = image[None]
        observation[f"image_mask/{camera}"] = np.array([index == 0])
    tokens = np.zeros((1, padded_to), np.int32)
    tokens[0, :PROMPT_TOKENS] = prompt
    observation["tokenized_prompt"] = tokens
    observation["tokenized_prompt_mask"] = np.arange(padded_to)[None] < PROMPT_TOKENS
    observation["sample_index"] = np.zeros(1, np.int32)
    return observation


@pytest.mark.parametrize(("family", "build_model"), [("pi0", openpi_checkpoint.build_model), ("paligemma", paligemma.build_model)])
def test_the_corrected_decoder_ignores_the_padding_and_openpis_window_does_where_the_registry_says(family, build_model):
    """`Family.masks_cameras_on_text` (what `eval`'s note reads) is what the model does: Pi0's masked wrist cameras
    attend to the padding under openpi's window, PaliGemma's one camera leaves none to do so."""
    config = openpi_checkpoint.named_config(registry.family(family).demo_config)
    model = build_model(config, openpi_checkpoint.random_params(config, seed=0, scale=0.3))
    rng = np.random.default_rng(1)
    image = rng.uniform(-1, 1, (config.siglip.image_size, config.siglip.image_size, 3)).astype(np.float32)
    prompt = rng.integers(2, config.vocab_size, PROMPT_TOKENS)
    tokens = {(exact, padded_to): np.asarray(decoding.sample_tokens(model, _observation(config, image, prompt, padded_to),
                                                                    max_decoding_steps=12, openpi_exact=exact))
              for exact in (True, False) for padded_to in (32, 64)}
    np.testing.assert_array_equal(tokens[False, 32], tokens[False, 64])
    assert np.array_equal(tokens[True, 32], tokens[True, 64]) != registry.family(family).masks_cameras_on_text


def test_eval_says_which_text_domains_answer_depending_on_their_batch(tmp_path, capsys):
    note = "openpi's decoding window (--openpi_exact_decoding) lets a masked camera's tokens attend to every prefix slot"
    eval_helpers.evaluate(tmp_path / "window", ("piqa", "openx_bimanual"), limit=2)
    assert f"note: piqa: {note}" in capsys.readouterr().err
    eval_helpers.evaluate(tmp_path / "corrected", ("piqa", "openx_bimanual"), limit=2, openpi_exact_decoding=False)
    assert note not in capsys.readouterr().err
