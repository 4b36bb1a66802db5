"""FAST action tokenizer (DCT + byte-level BPE) and openpi's Pi0-FAST prompt format.

FAST (Pertsch et al. 2025) compresses an action chunk [T, D] with an orthonormal DCT-II over time per dimension,
scales and rounds the coefficients, shifts them by the minimum token so they are non-negative, writes each as one
unicode character (low frequencies of every dimension first) and runs a byte-level BPE over that string. This module
re-implements the published `physical-intelligence/fast` processor so its `processor_config.json` + `tokenizer.json`
load from a local directory, and can train a BPE on local action data.

Decoding a model's output must never kill an evaluation: malformed token sequences decode to `None`.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.fft
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from multinet_jax.tokenizers.paligemma import PaliGemmaTokenizer, discretize_state, pad_to_length

PROCESSOR_CONFIG = "processor_config.json"
TOKENIZER_FILE = "tokenizer.json"
# openpi maps FAST ids onto the end of PaliGemma's vocabulary, skipping its last 128 (`<segNNN>`) pieces.
FAST_SKIP_TOKENS = 128
ACTION_PREFIX = "Action: "
ACTION_SUFFIX = "|"


class FastTokenizer:
    """DCT + BPE action tokenizer, equivalent to `physical-intelligence/fast`'s `UniversalActionProcessor`."""

    def __init__(self, bpe: tokenizers.Tokenizer, *, scale: float, min_token: int, vocab_size: int):
        self.bpe = bpe
        self.scale = float(scale)
        self.min_token = int(min_token)
        self.vocab_size = int(vocab_size)

    @classmethod
    def from_pretrained(cls, local_dir: str | os.PathLike) -> FastTokenizer:
        """Loads the published layout: `processor_config.json` (scale, min_token, vocab_size) + `tokenizer.json`."""
        local_dir = pathlib.Path(local_dir)
        config_path, tokenizer_path = local_dir / PROCESSOR_CONFIG, local_dir / TOKENIZER_FILE
        for path in (config_path, tokenizer_path):
            if not path.is_file():
                raise FileNotFoundError(f"FAST tokenizer directory {local_dir} has no {path.name}")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as error:  # not UTF-8, not JSON
            raise ValueError(f"{config_path}: not a JSON file ({error})") from None
        missing = [key for key in ("scale", "min_token", "vocab_size") if not isinstance(config, dict) or key not in config]
        if missing:
            raise ValueError(f"{config_path}: missing field(s) {missing}")
        try:
            bpe = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        except Exception as error:  # the tokenizers library raises its own Exception for a corrupt file
            raise ValueError(f"{tokenizer_path}: not a Hugging Face tokenizers file ({' '.join(str(error).split())[:200]})") from None
        return cls(
            bpe,
            scale=config["scale"],
            min_token=config["min_token"],
            vocab_size=config["vocab_size"],
        )

    def save_pretrained(self, local_dir: str | os.PathLike) -> pathlib.Path:
        """Writes the same two files `from_pretrained` reads."""
        local_dir = pathlib.Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        config = {"scale": self.scale, "min_token": self.min_token, "vocab_size": self.vocab_size}
        (local_dir / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        self.bpe.save(str(local_dir / TOKENIZER_FILE))
        return local_dir

    @classmethod
    def train(
        cls, action_chunks: Iterable[np.ndarray], vocab_size: int = 1024, *, scale: float = 10.0, min_frequency: int = 2
    ) -> FastTokenizer:
        """Fits the BPE on action chunks (each [T, D]), as the FAST processor's `fit` does.

        The initial alphabet is every symbol between the smallest and largest quantized coefficient seen, so any
        chunk inside the training range encodes.
        """
        quantized = [_quantize(np.asarray(chunk, np.float64), scale) for chunk in action_chunks]
        if not quantized:
            raise ValueError("FastTokenizer.train needs at least one action chunk")
        all_values = np.concatenate(quantized)
        min_token, max_token = int(all_values.min()), int(all_values.max())
        if max_token - min_token > vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the quantized range {max_token - min_token}")
        bpe = tokenizers.Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=[chr(i) for i in range(max_token - min_token + 1)],
            max_token_length=10000,
        )
        bpe.train_from_iterator((_to_symbols(values, min_token) for values in quantized), trainer=trainer)
        return cls(bpe, scale=scale, min_token=min_token, vocab_size=vocab_size)

    def encode(self, actions: np.ndarray) -> list[int]:
        """Tokens of one action chunk [T, D]."""
        actions = np.asarray(actions, np.float64)
        if actions.ndim != 2:
            raise ValueError(f"FastTokenizer.encode expects one action chunk [T, D], got shape {actions.shape}")
        return self.bpe.encode(_to_symbols(_quantize(actions, self.scale), self.min_token)).ids

    def decode(self, tokens: Sequence[int] | np.ndarray, horizon: int, action_dim: int) -> np.ndarray | None:
        """Action chunk [horizon, action_dim] float32, or None when the tokens do not form exactly that chunk."""
        ids = [int(t) for t in tokens]
        if any(t < 0 or t >= self.bpe.get_vocab_size() for t in ids):
            return None
        text = self.bpe.decode(ids, skip_special_tokens=False)
        # U+FFFD marks bytes that merged into invalid UTF-8: no chunk was ever encoded that way.
        if len(text) != horizon * action_dim or "\ufffd" in text:
            return None
        coefficients = np.array([ord(c) for c in text], np.float64) + self.min_token
        coefficients = coefficients.reshape(horizon, action_dim) / self.scale
        return scipy.fft.idct(coefficients, axis=0, norm="ortho").astype(np.float32)


def _quantize(actions: np.ndarray, scale: float) -> np.ndarray:
    """Rounded, scaled DCT-II coefficients, flattened frequency-major (every dimension's DC term first)."""
    return np.around(scipy.fft.dct(actions, axis=0, norm="ortho") * scale).astype(np.int64).reshape(-1)


def _to_symbols(quantized: np.ndarray, min_token: int) -> str:
    # Coefficients below the training minimum clamp to the smallest symbol, as the FAST processor does.
    return "".join(map(chr, np.maximum(quantized - min_token, 0)))


class FastPromptTokenizer:
    """openpi's Pi0-FAST prompt: BOS "Task: {prompt}, State: {bins};\\n" then "Action: " FAST tokens "|" EOS."""

    def __init__(self, paligemma: PaliGemmaTokenizer, fast: FastTokenizer | None = None, *, max_len: int = 256):
        self.paligemma = paligemma
        self.fast = fast
        self.max_len = max_len

    def with_max_len(self, max_len: int) -> FastPromptTokenizer:
        """The same prompt cut and padded at `max_len`: openpi builds it with the model config's `max_token_len`
        (Pi0FASTConfig's default 250; some training configs set others), not the tokenizer's default 256."""
        return FastPromptTokenizer(self.paligemma, self.fast, max_len=max_len)

    def tokenize(self, prompt: str, state: np.ndarray, actions: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The model inputs `tokenized_prompt`, `tokenized_prompt_mask`, `token_ar_mask`, `token_loss_mask`, and
        `prompt_tokens`: the whole sequence's length before the cut at `max_len` (as the pipeline counts prompts).

        The prefix is bidirectional (ar 0, no loss); the optional action postfix is causal (ar 1) and carries the
        loss, exactly as openpi's `FASTTokenizer.tokenize`.
        """
        cleaned = prompt.lower().strip().replace("_", " ")
        state_text = " ".join(map(str, discretize_state(np.asarray(state))))
        prefix = self.paligemma.encode(f"Task: {cleaned}, State: {state_text};\n", add_bos=True)
        postfix = []
        if actions is not None:
            postfix = (
                self.paligemma.encode(ACTION_PREFIX)
                + self.fast_to_paligemma(self._require_fast().encode(actions)).tolist()
                + self.paligemma.encode(ACTION_SUFFIX, add_eos=True)
            )
        ids, mask = pad_to_length(prefix + postfix, self.max_len)
        is_postfix = np.arange(self.max_len) >= len(prefix)
        return {
            "tokenized_prompt": ids,
            "tokenized_prompt_mask": mask,
            "token_ar_mask": (mask & is_postfix).astype(np.int32),
            "token_loss_mask": mask & is_postfix,
            "prompt_tokens": np.int32(len(prefix) + len(postfix)),
        }

    def extract_actions(self, tokens: np.ndarray, horizon: int, action_dim: int) -> np.ndarray | None:
        """Actions [horizon, action_dim] from generated PaliGemma ids, or None when they hold no valid chunk.

        Follows openpi: decode to text, take what lies between "Action: " and "|", re-encode and map to FAST ids.
        """
        ids = [int(t) for t in tokens]
        if any(t < 0 or t >= self.paligemma.vocab_size for t in ids):
            return None
        text = self.paligemma.decode(ids)
        if ACTION_PREFIX not in text:
            return None
        action_text = text.split(ACTION_PREFIX)[1].split(ACTION_SUFFIX)[0].strip()
        fast_ids = self.paligemma_to_fast(np.asarray(self.paligemma.encode(action_text), np.int64))
        return self._require_fast().decode(fast_ids, horizon, action_dim)

    def fast_to_paligemma(self, fast_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.paligemma.vocab_size - 1 - FAST_SKIP_TOKENS - np.asarray(fast_ids, np.int64)

    def paligemma_to_fast(self, paligemma_ids: np.ndarray) -> np.ndarray:
        # The map t -> V - 1 - 128 - t is its own inverse.
        return self.fast_to_paligemma(paligemma_ids)

    def _require_fast(self) -> FastTokenizer:
        if self.fast is None:
            raise ValueError("FastPromptTokenizer was built without a FastTokenizer; pass fast=FastTokenizer(...)")
        return self.fast

