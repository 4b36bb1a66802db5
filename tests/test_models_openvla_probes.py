"""OpenVLA in the knowledge-retention tools: `score_options` (the text probe) and `activations` (per-layer residual
streams for `multinet-jax probe`), checked against the outputs of OpenVLA's PyTorch code (`../shared/openvla_reference`)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from act2answer_helpers import item_set
from models_helpers import relative_error
from openvla_helpers import fixture_images, fixture_instructions, openvla_dir, openvla_io, openvla_model
from multinet_jax.models import InferenceOptions
from multinet_jax.models.openvla_inputs import action_prompt
from multinet_jax.probing import runner
from multinet_jax.probing import activation_store

TOLERANCE = 1e-4


def _observation(rows: list[int], prompts: list[str]) -> dict:
    return {"image/base_0_rgb": np.stack([fixture_images()[row] for row in rows]), "prompt": prompts}


def _question(row: int) -> str:
    """A text prompt whose `In: {prompt}\\nOut:` is exactly the fixture's action prompt (no empty token yet)."""
    return action_prompt(fixture_instructions()[row]).removeprefix("In: ").removesuffix("\nOut:")


def test_score_options_match_the_reference_logits_after_the_prompt():
    model, io = openvla_model(), openvla_io()
    rows = [0, 1, 2]  # the fixture's 224 x 224 images (one batch array)
    empty = model.tokenizer.empty_id
    first = io["generated_ids"][rows, 0]
    observation = _observation(rows, [_question(row) for row in rows])
    tokens = np.stack([[[empty, token], [empty, 0]] for token in first]).astype(np.int32)  # [b, 2 options, 2]
    mask = np.array([[[True, True], [True, False]]] * len(rows))
    scores = np.asarray(model.score_options(observation, tokens, mask))
    # option 0 minus option 1 is log p(first action token | prompt + empty token): PyTorch's last-position logits
    reference = np.asarray(jax.nn.log_softmax(io["last_logits"][rows], axis=-1))[np.arange(len(rows)), first]
    np.testing.assert_allclose(scores[:, 0] - scores[:, 1], reference, rtol=TOLERANCE, atol=TOLERANCE)
    assert np.all(scores[:, 1] < 0)


def test_score_options_of_a_ragged_batch_equal_each_row_alone():
    model = openvla_model()
    prompts = ["is the cup on the left or the right?", "which side?"]
    options = [model.tokenizer.encode_continuation(text) for text in ("left", "right side")]
    length = max(map(len, options))
    tokens = np.zeros((2, 2, length), np.int32)
    mask = np.zeros(tokens.shape, bool)
    for index, ids in enumerate(options):
        tokens[:, index, : len(ids)], mask[:, index, : len(ids)] = ids, True
    images = np.stack(fixture_images()[:2])
    batched = np.asarray(model.score_options({"image/base_0_rgb": images, "prompt": prompts}, tokens, mask))
    for row in range(2):
        alone = model.score_options({"image/base_0_rgb": images[row : row + 1], "prompt": prompts[row : row + 1]},
                                    tokens[row : row + 1], mask[row : row + 1])
        np.testing.assert_allclose(batched[row], np.asarray(alone)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="option_tokens / option_mask must both be"):
        model.score_options({"image/base_0_rgb": images, "prompt": prompts}, tokens[:1], mask[:1])


def test_activations_are_the_reference_hidden_states_at_the_prompts_last_token():
    model, io = openvla_model(), openvla_io()
    rows = [0, 1, 2]
    observation = _observation(rows, [fixture_instructions()[row] for row in rows])
    actions, streams = model.activations(observation)
    depth, width = model.config.llm.depth, model.config.llm.width
    assert set(streams) == {"prefix_last", "prefix_mean"}
    assert all(np.shape(value) == (len(rows), depth, width) for value in streams.values())
    # HF hidden_states index l (1..L-1) is decoder layer l's output: ours are layers 1..L (before the final norm)
    last = np.asarray(streams["prefix_last"])
    assert relative_error(last[:, : depth - 1], io["hidden_last"][rows, 1:depth]) < TOLERANCE
    np.testing.assert_array_equal(actions, model.predict_actions(observation, rng=None, options=InferenceOptions()))
    assert np.all(np.isfinite(np.asarray(streams["prefix_mean"])))


def test_probe_runs_openvla_without_a_paligemma_tokenizer(tmp_path):
    config = runner.ProbeConfig(checkpoint=openvla_dir(), tokenizer=None, data_dir=str(item_set(tmp_path / "items", 2)),
                               output_dir=str(tmp_path / "run"), batch_size=4, num_folds=2)
    result = runner.run_probe(config, model=openvla_model())
    saved = activation_store.read(tmp_path / "run" / "activations" / "all")
    depth, width = openvla_model().config.llm.depth, openvla_model().config.llm.width
    assert saved["prefix_last"].shape == saved["prefix_mean"].shape == (12, depth, width) and "action_mean" not in saved
    written = json.loads((tmp_path / "run" / "probing.json").read_text())
    assert written["streams"] == ["prefix_last", "prefix_mean"] and written["config"]["tokenizer"] is None
    assert written["tasks"] == json.loads(json.dumps(result["tasks"])) and "retention" not in written  # no action stream
