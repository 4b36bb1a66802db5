"""Tokenizers: PaliGemma's SentencePiece vocabulary with openpi's Pi0 / Pi0.5 prompts, the FAST action tokenizer and
openpi's Pi0-FAST prompt."""

from multinet_jax.tokenizers.fast import FastPromptTokenizer, FastTokenizer
from multinet_jax.tokenizers.paligemma import (
    PALIGEMMA_VOCAB_SIZE,
    PaliGemmaTokenizer,
    build_paligemma_vocab,
    discretize_state,
)

__all__ = [
    "PALIGEMMA_VOCAB_SIZE",
    "FastPromptTokenizer",
    "FastTokenizer",
    "PaliGemmaTokenizer",
    "build_paligemma_vocab",
    "discretize_state",
]
