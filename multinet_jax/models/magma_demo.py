"""A random tiny Magma in microsoft/Magma-8B's Hugging Face layout (the demo's, and the tests' when `../shared` is
absent): `magma_checkpoint.NAMED_CONFIGS["magma_tiny"]`'s sizes, seeded normal weights in `model.safetensors`, and a
small byte-level BPE laid out as Magma-8B's tokenizer (the base vocabulary, then Llama-3's special block, `<pad>`,
`<image>`, `<image_start>`, `<image_end>`; the post-processor's BOS; Llama-3-Instruct's chat template).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from multinet_jax.models import magma_checkpoint
from multinet_jax.models.llama_checkpoint import GENERATION_CONFIG_FILE
from multinet_jax.models.magma_inputs import (IMAGE_START_END, IMAGE_TOKEN, LLAMA3_CHAT_TEMPLATE,
                                              PREPROCESSOR_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE)
from multinet_jax.weights import safetensors

_BASE_VOCAB = 900  # trained BPE tokens; with the 20 special and added tokens it fits the tiny embedding's 1024 rows
# Llama-3's 256-token special block, at the tiny size: the ids Magma's prompts use, then reserved tokens.
_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
             "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
             "<|reserved_special_token_4|>", "<|eot_id|>"]
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_PREPROCESSOR = {"image_processor_type": "MagmaImageProcessor", "processor_class": "MagmaProcessor",
                 "anyres_strategy": "crop", "base_img_size": 96, "num_crops": 4, "do_convert_rgb": True,
                 "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}


def _build_tokenizer(directory: pathlib.Path, corpus: Iterable[str]) -> tokenizers.Tokenizer:
    bpe = tokenizers.Tokenizer(models.BPE(ignore_merges=True))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(_LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=_BASE_VOCAB, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(corpus), trainer)
    specials = _SPECIALS + [f"<|reserved_special_token_{i}|>" for i in range(5, 11)]
    bpe.add_special_tokens([tokenizers.AddedToken(token, special=True, normalized=False) for token in [*specials, "<pad>"]])
    bpe.add_tokens([tokenizers.AddedToken(token, normalized=False) for token in (IMAGE_TOKEN, *IMAGE_START_END)])
    bos = _SPECIALS[0]
    bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
                                                       special_tokens=[(bos, bpe.token_to_id(bos))])
    bpe.save(str(directory / TOKENIZER_FILE))
    (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps({
        "bos_token": bos, "eos_token": "<|eot_id|>", "pad_token": "<pad>", "chat_template": LLAMA3_CHAT_TEMPLATE,
        "model_max_length": 8192, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2))
    return bpe


def write_random(directory: str | pathlib.Path, config_name: str, *, corpus: Iterable[str], seed: int, scale: float) -> pathlib.Path:
    """`CheckpointFormat.write_random`: the random Magma of a named config with a ConvNeXt given by size (the demo's
    "magma_tiny"; module docstring) into `directory`, normal weights of std `scale` seeded by `seed`, its tokenizer
    trained on `corpus`."""
    raw = json.loads(json.dumps(magma_checkpoint.NAMED_CONFIGS[config_name]))
    if "convnext" not in raw:
        raise ValueError(f"{config_name}: a random Magma is written only for a config whose ConvNeXt is given by size (magma_tiny)")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = _build_tokenizer(directory, corpus)
    convnext = raw.pop("convnext")  # a checkpoint's headers tell the ConvNeXt's sizes
    eos, pad = bpe.token_to_id("<|eot_id|>"), bpe.token_to_id("<pad>")
    raw |= {"architectures": ["MagmaForCausalLM"], "image_token_index": bpe.token_to_id(IMAGE_TOKEN),
            "tokenizer_vocab_size": bpe.get_vocab_size(with_added_tokens=False), "bos_token_id": bpe.token_to_id(_SPECIALS[0]),
            "eos_token_id": eos, "pad_token_id": pad}
    (directory / magma_checkpoint.CONFIG_FILE).write_text(json.dumps(raw, indent=2))
    (directory / GENERATION_CONFIG_FILE).write_text(json.dumps({"eos_token_id": eos, "pad_token_id": pad}, indent=2))
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(_PREPROCESSOR, indent=2))
    vision = magma_checkpoint.ConvNeXtConfig(tuple(convnext["depths"]), tuple(convnext["widths"]))
    config = magma_checkpoint.parse_config(raw, vision, "float32", directory / magma_checkpoint.CONFIG_FILE)
    rng = np.random.default_rng(seed)
    shapes = magma_checkpoint.tensor_shapes(config)
    tensors = {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in sorted(shapes.items())}
    safetensors.save_checkpoint(tensors, directory)
    return directory
