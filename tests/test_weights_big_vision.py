"""big_vision PaliGemma npz checkpoints: the source-VLM baseline loads natively and equals the Pi0 backbone it came
from (logits and openpi's greedy tokens), the full-size layout is proven with `jax.eval_shape`, and every way an npz
can be wrong fails with one line naming the file. The shared `pt_tiny.npz` (the Pi0 fixture's backbone as big_vision
writes it) loads whole and reproduces openpi's greedy tokens for that backbone."""

from __future__ import annotations

import functools
import pathlib
import zipfile

import jax
import numpy as np
import pytest

from conftest import shared_path
from decoding_helpers import fast_io, fast_observation, pi0_backbone_npz, pi0_model
from test_decoding_parity import STEPS, assert_tokens_match
from test_models_configs import read_param_spec
from multinet_jax import weights
from multinet_jax.models import configs, decoding, load_model, param_shapes, registry
from multinet_jax.models.paligemma import PaliGemmaModel
from multinet_jax.models.backbone import PaliGemma
from multinet_jax.weights import big_vision


def shared_npz() -> pathlib.Path:
    """`../shared/openpi_reference/paligemma_npz/pt_tiny.npz`: `pi0/ckpt/0` without its action expert, 32 arrays."""
    return shared_path("openpi_reference", "paligemma_npz", "pt_tiny.npz")


def rewrite(source: pathlib.Path, target: pathlib.Path, **changes) -> pathlib.Path:
    """A copy of an npz with keys replaced (a value) or removed (None)."""
    with np.load(source, allow_pickle=False) as arrays:
        content = {key: arrays[key] for key in arrays.files}
    for key, value in changes.items():
        content.pop(key) if value is None else content.__setitem__(key, value)
    np.savez(target, **content)
    return target


def test_written_npz_equals_the_shared_big_vision_npz():
    """`save_npz` writes exactly the shared fixture's keys with its float32 values, and both are recognised as
    big_vision PaliGemma checkpoints."""
    with np.load(shared_npz(), allow_pickle=False) as fixture, np.load(pi0_backbone_npz(), allow_pickle=False) as ours:
        assert sorted(ours.files) == sorted(fixture.files)
        for key in fixture.files:
            assert ours[key].dtype == fixture[key].dtype == np.float32
            np.testing.assert_array_equal(ours[key], fixture[key], err_msg=key)
    for path in (shared_npz(), pi0_backbone_npz()):
        assert registry.format_of(str(path)).name == "big_vision_npz"
        assert registry.family_of(path) == "paligemma"  # what `eval` infers when --model is left out


def test_shared_npz_loads_whole_and_reproduces_openpi_pi0_backbone_tokens():
    """openpi's greedy tokens for the Pi0 backbone (`tokens_greedy_pi0backbone_f32` of `fast/io.npz`) from the shared
    npz alone: every parameter comes from the file (a missing one would fail the load, not be filled at random)."""
    model = load_model(shared_npz())
    assert isinstance(model, PaliGemmaModel)
    with np.load(shared_npz(), allow_pickle=False) as fixture:
        assert {big_vision.npz_key(path) for path in weights.flatten_params(model.params)} == set(fixture.files)
    tokens = model.sample_tokens(fast_observation(), max_decoding_steps=STEPS)
    assert_tokens_match(tokens, fast_io()["tokens_greedy_pi0backbone_f32"])


def test_text_logits_equal_the_pi0_backbone():
    """Same weights, same modules: the prefill logits equal the Pi0 backbone's, and so do the option scores."""
    paligemma, pi0 = load_model(pi0_backbone_npz()), pi0_model()
    assert isinstance(paligemma, PaliGemmaModel) and paligemma.family == "paligemma"
    logits = []
    for model in (paligemma, pi0):
        inputs = decoding.decoder_inputs(model.config, fast_observation(), None, None, skip_absent_cameras=False)
        del inputs["sample_index"], inputs["rng"]
        prefill = jax.jit(functools.partial(decoding.prefill_observation, PaliGemma(model.config),
                                            decoding.DecodeSettings(max_decoding_steps=STEPS)))
        logits.append(np.asarray(prefill(model.params, **inputs).first_logits))
    np.testing.assert_array_equal(logits[0], logits[1])
    options = np.array([[[5, 9, 0], [17, 0, 0]]] * len(logits[0]), np.int32)
    scores = [np.asarray(model.score_options(fast_observation(), options, options > 0)) for model in (paligemma, pi0)]
    np.testing.assert_array_equal(scores[0], scores[1])


def test_bfloat16_restore_and_no_action_head():
    model = load_model(pi0_backbone_npz(), dtype="bfloat16")
    assert {leaf.dtype for leaf in jax.tree.leaves(model.params)} == {jax.numpy.dtype("bfloat16")}
    with pytest.raises(ValueError, match="PaliGemma has no action head"):
        model.predict_actions(fast_observation(), rng=None, options=None)


def test_full_size_pt_224_layout_with_eval_shape():
    """pt_224.npz holds the tree of Pi0-FAST's PaliGemma (Gemma 2B + SigLIP So400m, 257,152 rows): the config
    inferred from those shapes builds exactly that tree."""
    spec = read_param_spec("pi0_fast_full_size.tsv")
    config = configs.infer_paligemma_config(spec)
    assert config == configs.PaliGemmaConfig()
    shapes = {path: tuple(leaf.shape) for path, leaf in weights.flatten_params(param_shapes(config)).items()}
    assert shapes == spec
    with np.load(shared_npz(), allow_pickle=False) as fixture:  # the same 32 names as the tiny fixture
        assert {big_vision.npz_key(path) for path in shapes} == set(fixture.files)


def test_bad_npz_files_fail_with_the_file_and_key(tmp_path):
    source = pi0_backbone_npz()
    key = "params/llm/layers/mlp/linear"
    wrong_shape = rewrite(source, tmp_path / "shape.npz", **{key: np.zeros((3, 128, 65), np.float32)})
    with pytest.raises(weights.CheckpointError, match=f"shape.npz: shape mismatches .*{key}: expected \\(3, 128, 64\\), got \\(3, 128, 65\\)"):
        load_model(wrong_shape)
    extra = rewrite(source, tmp_path / "extra.npz", **{"params/llm/extra": np.zeros(2, np.float32)})
    with pytest.raises(weights.CheckpointError, match="extra.npz: .*unexpected \\['params/llm/extra'\\]"):
        load_model(extra)
    integers = rewrite(source, tmp_path / "ints.npz", **{key: np.zeros((3, 128, 64), np.int32)})
    with pytest.raises(weights.CheckpointError, match=f"ints.npz: {key}: dtype int32 is not floating point"):
        load_model(integers)
    pickled = tmp_path / "pickled.npz"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(pickled, "w") as out:
        for name in archive.namelist():
            out.writestr(name, archive.read(name))
        out.writestr("params/llm/object.npy", _object_npy())
    with pytest.raises(weights.CheckpointError, match="pickled.npz: params/llm/object: dtype object is not floating point"):
        load_model(pickled)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(weights.CheckpointError, match="truncated.npz: not a readable npz"):
        load_model(truncated)
    dropped = [f"params/img/Transformer/encoderblock/{name}" for name in ("LayerNorm_1/bias", "MlpBlock_0/Dense_1/kernel")]
    missing = rewrite(source, tmp_path / "missing.npz", **dict.fromkeys(dropped))
    with pytest.raises(weights.CheckpointError) as error:  # what the shared npz's first version did (openpi: random fill)
        load_model(missing)
    assert "\n" not in str(error.value) and str(error.value).startswith(f"{missing}: ") and f"missing {dropped}" in str(error.value)
    no_sizes = rewrite(source, tmp_path / "no_sizes.npz", **{"params/llm/layers/attn/kv_einsum/w": None})
    with pytest.raises(weights.CheckpointError, match="no_sizes.npz: lacks params/llm/layers/attn/kv_einsum/w"):
        load_model(no_sizes)
    (tmp_path / "other.npz").write_bytes((tmp_path / "shape.npz").read_bytes().replace(b"params/", b"weight/"))
    with pytest.raises(weights.CheckpointError, match="other.npz: no params/... keys: not a big_vision checkpoint"):
        load_model(tmp_path / "other.npz")


def _object_npy() -> bytes:
    """An `.npy` member holding a pickled object array (never unpickled: refused from its header)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()
