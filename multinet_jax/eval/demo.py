"""The embedded demo: tiny Pi0 / Pi0-FAST checkpoints, their tokenizers and small datasets, built by the
project's own code, deterministically, the first time `multinet-jax eval --demo` needs them.

    multinet-jax eval --flagfile=flags/demo.flags     # builds checkpoints/*, .cache/demo_data/ when missing

- Checkpoints (`checkpoints/pi0_tiny`, `checkpoints/pi0_fast_tiny`): the named tiny configs' parameter tree
  (`models.param_shapes`) filled with seeded normal noise, written by `weights.save_openpi_checkpoint` in
  openpi's exact layout. (Flax's `init_params` gives the same tree but costs a minute of tracing and
  compiling on a 2-core CPU; the demo only needs a deterministic random model.)
- PaliGemma (`checkpoints/paligemma_tiny.npz`, `flags/demo_paligemma.flags`): a random tiny PaliGemma in big_vision's
  npz layout (the source-VLM baseline; text domains and Act2Answer's text probe).
- OpenVLA (`checkpoints/openvla_tiny/`, `flags/demo_openvla.flags`): a random tiny OpenVLA in openvla-7b's Hugging
  Face layout (config.json, model.safetensors, a Llama-convention tokenizer.model trained on the demo prompts,
  preprocessor_config.json), written by `build_openvla_checkpoint`.
- Tokenizer (`checkpoints/demo_tokenizer.model`): the tiny models have a 1024-token vocabulary, so the
  demo cannot use PaliGemma's 257,152 pieces. It mirrors PaliGemma's layout at that size: a SentencePiece
  model trained on the demo prompts, padded with `<unusedNNN>` pieces and ending in 128 `<segNNN>` pieces;
  the FAST action tokens land on the padding pieces exactly as openpi maps them onto PaliGemma's vocabulary.
- FAST tokenizer (`checkpoints/demo_fast_tokenizer/`): a FAST BPE trained on the demo Open-X actions.
- Datasets (`<data_dir>/<domain folder>/public/...`): `multinet_jax.eval.demo_data` writes each domain in its
  publisher's real format (the layout of MultiNet's `multinet_sample`; point `--data_dir` at a real
  `multinet_sample` or MultiNet download instead and `--demo` leaves it alone).
"""

from __future__ import annotations

import io
import json
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np

from multinet_jax.models import openvla_checkpoint

DEMO_SEED = 0
DEMO_PARAM_SCALE = 0.1  # std of the random parameters: small enough to keep the tiny networks finite
DEMO_CONFIGS = {"pi0": "pi0_tiny", "pi0_fast": "pi0_fast_tiny", "paligemma": "paligemma_tiny"}
DEMO_VOCAB_SIZE = 1024  # the tiny configs' embedding rows
DEMO_FAST_VOCAB_SIZE = 300
NUM_SEG_PIECES = 128
# SentencePiece pieces the trainer may use; the rest (up to the vocab size) are padding that the FAST ids land on.
_MAX_TRAINED_PIECES = DEMO_VOCAB_SIZE - NUM_SEG_PIECES - DEMO_FAST_VOCAB_SIZE
# The tiny OpenVLA: openvla-7b's config.json with the sizes of `../shared/openvla_reference`
# (`openvla_checkpoint.NAMED_CONFIGS["openvla_tiny"]`), 7-dim actions with q01/q99 = -1/1 under the key "demo".
DEMO_OPENVLA_CONFIG = {
    **openvla_checkpoint.NAMED_CONFIGS["openvla_tiny"], "architectures": ["OpenVLAForActionPrediction"],
    "pad_token_id": openvla_checkpoint.TINY_VOCAB_SIZE,
    "norm_stats": {"demo": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}},
}
DEMO_OPENVLA_PREPROCESSOR = {
    "image_resize_strategy": "resize-naive", "tvf_do_letterbox": False,
    "tvf_resize_params": [{"size": [224, 224], "interpolation": 3, "antialias": True, "max_size": None}] * 2,
    "tvf_normalize_params": [{"mean": [0.484375, 0.455078125, 0.40625], "std": [0.228515625, 0.2236328125, 0.224609375]},
                             {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}],
}


def build_checkpoint(model: str, directory: pathlib.Path, norm_dims: int = 32) -> pathlib.Path:
    """Random tiny checkpoint of the `model` family (seeded): openpi's layout with identity action norm stats, or for
    PaliGemma (no actions) a big_vision npz at `directory`."""
    from multinet_jax import models, weights

    config = models.configs.get_config(DEMO_CONFIGS[model])
    rng = np.random.default_rng(DEMO_SEED)
    params = jax.tree.map(lambda leaf: (rng.standard_normal(leaf.shape) * DEMO_PARAM_SCALE).astype(leaf.dtype),
                          models.param_shapes(config))
    if model == "paligemma":
        return weights.big_vision.save_npz(params, directory)
    identity = {"mean": np.zeros(norm_dims), "std": np.ones(norm_dims), "q01": -np.ones(norm_dims), "q99": np.ones(norm_dims)}
    weights.save_openpi_checkpoint(params, directory, norm_stats={"actions": identity, "state": identity}, asset_id="demo")
    return directory


def _train_sentencepiece(corpus: Iterable[str], vocab_size: int, **options) -> Any:
    """A unigram SentencePiece ModelProto trained deterministically on `corpus` (at most `vocab_size` pieces)."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus)),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        byte_fallback=False,
        num_threads=1,  # one thread: the same corpus gives the same model
        minloglevel=2,
        **options,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto


def _write_padded(proto: Any, path: pathlib.Path, pieces: Sequence[str], piece_type: str = "USER_DEFINED") -> pathlib.Path:
    """Append `pieces` (score 0) to a trained model and write it."""
    from sentencepiece import sentencepiece_model_pb2

    for text in pieces:
        piece = proto.pieces.add()
        piece.piece, piece.score = text, 0.0
        piece.type = getattr(sentencepiece_model_pb2.ModelProto.SentencePiece, piece_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


def build_tokenizer(path: pathlib.Path, corpus: Iterable[str]) -> pathlib.Path:
    """A 1024-piece SentencePiece model laid out like PaliGemma's (see the module docstring)."""
    # Gemma's special ids; no dummy prefix, as Gemma: decoded pieces re-encode to themselves.
    proto = _train_sentencepiece(corpus, _MAX_TRAINED_PIECES, pad_id=0, eos_id=1, bos_id=2, unk_id=3, add_dummy_prefix=False)
    num_padding = DEMO_VOCAB_SIZE - NUM_SEG_PIECES - len(proto.pieces)
    pieces = [f"<unused{i:03d}>" for i in range(num_padding)] + [f"<seg{i:03d}>" for i in range(NUM_SEG_PIECES)]
    return _write_padded(proto, path, pieces)


def build_openvla_checkpoint(directory: pathlib.Path, corpus: Iterable[str]) -> pathlib.Path:
    """A random tiny OpenVLA in openvla/openvla-7b's Hugging Face layout (see `DEMO_OPENVLA_CONFIG`): config.json,
    model.safetensors, a Llama-convention tokenizer.model trained on the demo prompts, preprocessor_config.json."""
    from multinet_jax.weights import safetensors

    # Llama's special ids (unk 0, BOS 1, EOS 2, no pad piece), dummy prefix; the empty token's piece must exist.
    proto = _train_sentencepiece(corpus, DEMO_VOCAB_SIZE - 256, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True)
    missing_empty = ["\u2581"] if "\u2581" not in {piece.piece for piece in proto.pieces} else []
    pieces = missing_empty + [f"<unused{i:03d}>" for i in range(DEMO_VOCAB_SIZE - len(proto.pieces) - len(missing_empty))]
    _write_padded(proto, directory / "tokenizer.model", pieces, piece_type="NORMAL")
    (directory / "config.json").write_text(json.dumps(DEMO_OPENVLA_CONFIG, indent=2))
    (directory / "preprocessor_config.json").write_text(json.dumps(DEMO_OPENVLA_PREPROCESSOR, indent=2))
    rng = np.random.default_rng(DEMO_SEED)
    shapes = openvla_checkpoint.tensor_shapes(openvla_checkpoint.read_config(directory))
    tensors = {name: (rng.standard_normal(shape) * DEMO_PARAM_SCALE).astype(np.float32) for name, shape in sorted(shapes.items())}
    safetensors.save_checkpoint(tensors, directory)
    return directory


def build_fast_tokenizer(directory: pathlib.Path, action_chunks: Sequence[np.ndarray]) -> pathlib.Path:
    """A FAST BPE fitted on the demo's (z-scored) action chunks."""
    from multinet_jax import tokenizers

    fast = tokenizers.FastTokenizer.train(action_chunks, vocab_size=DEMO_FAST_VOCAB_SIZE)
    return fast.save_pretrained(directory)


def build_probe_demo(*, checkpoint: str, tokenizer: str, item_set: str) -> None:
    """`multinet-jax probe --demo`: the tiny Pi0 checkpoint, the demo tokenizer and the generated Act2Answer items."""
    from multinet_jax.act2answer import write_item_set
    from multinet_jax.eval import demo_data

    if not pathlib.Path(item_set, "pairs.json").exists():
        write_item_set(item_set, items_per_category=5)
    if not pathlib.Path(tokenizer).exists():
        build_tokenizer(pathlib.Path(tokenizer), demo_data.corpus())
    if not pathlib.Path(checkpoint).exists():
        build_checkpoint("pi0", pathlib.Path(checkpoint).resolve())


def build(*, checkpoint: str, tokenizer: str | None, fast_tokenizer: str | None, data_dir: str, model: str,
          domains: Sequence[str]) -> None:
    """Creates whichever demo artifacts are missing at the given paths (existing ones are kept)."""
    from multinet_jax.eval import demo_data

    data_root = pathlib.Path(data_dir)
    datasets = demo_data.missing(data_root, domains)
    files = [path for path in (tokenizer, fast_tokenizer, checkpoint) if path is not None and not pathlib.Path(path).exists()]
    if datasets or files:
        listed = files + ([f"the {', '.join(datasets)} data under {data_root}"] if datasets else [])
        print(f"demo: building {'; '.join(listed)} (first run only)", flush=True)
    demo_data.write_missing(data_root, datasets)
    if tokenizer is not None and not pathlib.Path(tokenizer).exists():
        build_tokenizer(pathlib.Path(tokenizer), demo_data.corpus())
    if fast_tokenizer is not None and not pathlib.Path(fast_tokenizer).exists():
        build_fast_tokenizer(pathlib.Path(fast_tokenizer), demo_data.action_chunks())
    checkpoint_path = pathlib.Path(checkpoint)
    if checkpoint_path.exists():
        return
    if model == "openvla":
        build_openvla_checkpoint(checkpoint_path, demo_data.corpus())
    else:
        build_checkpoint(model, checkpoint_path.resolve())
