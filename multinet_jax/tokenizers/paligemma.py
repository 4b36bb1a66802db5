"""PaliGemma's SentencePiece tokenizer (vocab 257,152) and a way to rebuild it from Gemma's.

PaliGemma (and therefore Pi0 / Pi0-FAST) uses Gemma's 256,000-piece vocabulary with 1024 `<locNNNN>` and 128
`<segNNN>` pieces appended (ids 256000..257151). Users who have the real file (openpi caches it as
`~/.cache/openpi/big_vision/paligemma_tokenizer.model`, from `gs://big_vision/paligemma_tokenizer.model`) pass its
path to `PaliGemmaTokenizer`; `build_paligemma_vocab` writes an equivalent file from `gemma_tokenizer.model` for
machines without it (tests, offline runs).
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np
import sentencepiece
from sentencepiece import sentencepiece_model_pb2

GEMMA_VOCAB_SIZE = 256_000
NUM_LOC_TOKENS = 1024
NUM_SEG_TOKENS = 128
PALIGEMMA_VOCAB_SIZE = GEMMA_VOCAB_SIZE + NUM_LOC_TOKENS + NUM_SEG_TOKENS
# Gemma's special ids (gemma_tokenizer.model's, kept by PaliGemma's): prompts start with this BOS and decoding stops
# at this EOS, so a tokenizer of the same size with other conventions (Llama's BOS 1, EOS 2) would be read wrongly.
SPECIAL_IDS = {"pad": 0, "eos": 1, "bos": 2, "unk": 3}
STATE_BINS = 256  # openpi's discretization of the state in the Pi0.5 and Pi0-FAST prompts
# Hugging Face's PaliGemma processor expands this placeholder into the image tokens and puts BOS after the last one.
IMAGE_PLACEHOLDER = "<image>"
PROMPT_FORMATS = ("openpi", "paligemma_processor")


def build_paligemma_vocab(gemma_model_path: str | os.PathLike, output_path: str | os.PathLike) -> pathlib.Path:
    """Writes PaliGemma's 257,152-piece SentencePiece model: Gemma's pieces + `<locNNNN>` + `<segNNN>`.

    The appended pieces are USER_DEFINED with score 0, as in big_vision's `paligemma_tokenizer.model`, so text
    containing them encodes to exactly one id each.
    """
    gemma_model_path = pathlib.Path(gemma_model_path)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(gemma_model_path.read_bytes())
    if len(proto.pieces) != GEMMA_VOCAB_SIZE:
        raise ValueError(f"{gemma_model_path}: expected Gemma's {GEMMA_VOCAB_SIZE} pieces, found {len(proto.pieces)}")
    new_pieces = [f"<loc{i:04d}>" for i in range(NUM_LOC_TOKENS)] + [f"<seg{i:03d}>" for i in range(NUM_SEG_TOKENS)]
    for text in new_pieces:
        piece = proto.pieces.add()
        piece.piece = text
        piece.score = 0.0
        piece.type = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
    output_path = pathlib.Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_bytes(proto.SerializeToString())
    return output_path


class PaliGemmaTokenizer:
    """SentencePiece wrapper with openpi's Pi0 and Pi0.5 prompt formats (`tokenize_prompt`)."""

    def __init__(self, model_path: str | os.PathLike):
        model_path = pathlib.Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(
                f"{model_path}: no such PaliGemma tokenizer file{' (it is a directory)' if model_path.is_dir() else ''}; "
                "point to paligemma_tokenizer.model or build one with "
                "multinet_jax.tokenizers.build_paligemma_vocab(gemma_tokenizer.model, output_path)"
            )
        self.model_path = model_path
        try:
            self._processor = sentencepiece.SentencePieceProcessor(model_proto=model_path.read_bytes())
        except RuntimeError as error:  # sentencepiece's error for bytes that are not a model proto
            raise ValueError(f"{model_path}: not a SentencePiece model ({' '.join(str(error).split())})") from None
        self._check_layout()
        # Pieces text never encodes to (<pad>, <eos>, <bos>, <unk>): Hugging Face's tokenizer reads their strings in a
        # prompt as the tokens themselves, and MultiNet's text prompts went through it.
        processor = self._processor
        control = {processor.id_to_piece(i): i for i in range(processor.vocab_size())
                   if processor.is_control(i) or processor.is_unknown(i)}
        self._control_pattern = re.compile("(" + "|".join(map(re.escape, sorted(control, key=len, reverse=True))) + ")")
        self._control_ids = control

    def _check_layout(self) -> None:
        """PaliGemma's special ids and, in a full-size vocabulary, its `<locNNNN>` pieces where PaliGemma has them."""
        found = {"pad": self.pad_id, "eos": self.eos_id, "bos": self.bos_id, "unk": self.unk_id}
        if found != SPECIAL_IDS:
            raise ValueError(f"{self.model_path}: special ids {found}, PaliGemma's are {SPECIAL_IDS}: not a PaliGemma "
                             "tokenizer (another model's of the same size?)")
        if self.vocab_size == PALIGEMMA_VOCAB_SIZE and self._processor.id_to_piece(GEMMA_VOCAB_SIZE) != "<loc0000>":
            raise ValueError(f"{self.model_path}: piece {GEMMA_VOCAB_SIZE} is "
                             f"{self._processor.id_to_piece(GEMMA_VOCAB_SIZE)!r}, PaliGemma's is '<loc0000>'")

    def check_vocabulary(self, checkpoint: str | os.PathLike, embedding_rows: int) -> None:
        """This must be the checkpoint's tokenizer: ids past the embedding table would be clamped silently, and
        Pi0-FAST's action tokens are counted back from the end of the vocabulary (eval and probe both ask)."""
        if self.vocab_size != embedding_rows:
            raise ValueError(f"{self.model_path}: a {self.vocab_size}-piece tokenizer, but {checkpoint} embeds "
                             f"{embedding_rows} tokens; pass the tokenizer this checkpoint was trained with")

    @property
    def vocab_size(self) -> int:
        return self._processor.vocab_size()

    @property
    def bos_id(self) -> int:
        return self._processor.bos_id()

    @property
    def eos_id(self) -> int:
        return self._processor.eos_id()

    @property
    def pad_id(self) -> int:
        return self._processor.pad_id()

    @property
    def unk_id(self) -> int:
        return self._processor.unk_id()

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        return self._processor.encode(text, add_bos=add_bos, add_eos=add_eos)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self._processor.decode([int(i) for i in ids])

    def prompt_ids(self, text: str, prompt_format: str) -> list[int]:
        """A prompt's token ids, unpadded and untruncated, in one of two formats (`PROMPT_FORMATS`):

        - "openpi": openpi's Pi0 tokenizer (MultiNet's Open-X and Overcooked runs): the text stripped, "_" and
          "\\n" turned into spaces, then BOS + text + "\\n" (its own piece, the start-of-answer marker).
        - "paligemma_processor": Hugging Face's PaliGemmaProcessor (MultiNet's text domains): BOS + the text as
          is + "\\n", encoded as one string; a leading "<image>" placeholder is where the processor puts the
          image tokens, which are the image's embeddings here, so only the text after it is encoded. Text before
          or between placeholders has no place in this model's prefix: refused.
        """
        if prompt_format == "openpi":
            cleaned = text.strip().replace("_", " ").replace("\n", " ")
            return self.encode(cleaned, add_bos=True) + self.encode("\n")
        if prompt_format == "paligemma_processor":
            rest = text.removeprefix(IMAGE_PLACEHOLDER)
            if IMAGE_PLACEHOLDER in rest:
                raise ValueError(f"prompt has {IMAGE_PLACEHOLDER!r} after its start ({text[:60]!r}...): only a leading one "
                                 "(the image tokens' place) is supported")
            return [self.bos_id] + self._encode_with_control_strings(rest + "\n")
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")

    def _encode_with_control_strings(self, text: str) -> list[int]:
        """`encode`, with every control token's string in `text` (`"<eos>"`) read as that token, as Hugging Face's
        tokenizer reads it: the text between them is encoded piece by piece."""
        ids = []
        for index, part in enumerate(self._control_pattern.split(text)):
            ids += [self._control_ids[part]] if index % 2 else self.encode(part) if part else []
        return ids

    def tokenize_prompt(self, text: str, max_len: int, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """openpi's `PaligemmaTokenizer.tokenize`, right-padded.

        Without `state`, the Pi0 prompt (`prompt_ids(text, "openpi")`). With `state` (a vector normalized to
        [-1, 1]), the Pi0.5 prompt: BOS + "Task: {cleaned text}, State: {256-bin indices, space-separated};\\nAction: "
        in one piece. Returns (ids int32 [max_len], mask bool [max_len]); longer prompts are truncated to `max_len`
        as openpi does.
        """
        return pad_to_length(self.prompt_ids(text, "openpi") if state is None else self.state_prompt_ids(text, state), max_len)

    def state_prompt_ids(self, text: str, state: np.ndarray) -> list[int]:
        """The Pi0.5 prompt's ids (`tokenize_prompt` with `state`), unpadded and uncut: its whole length is counted."""
        cleaned = text.strip().replace("_", " ").replace("\n", " ")
        state_text = " ".join(map(str, discretize_state(np.asarray(state))))
        return self.encode(f"Task: {cleaned}, State: {state_text};\nAction: ", add_bos=True)


def discretize_state(state: np.ndarray) -> np.ndarray:
    """openpi's 256-bin discretization of a state normalized to [-1, 1] (values below -1 give -1, as openpi)."""
    return np.digitize(state, bins=np.linspace(-1, 1, STATE_BINS + 1)[:-1]) - 1


def pad_to_length(ids: list[int], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads (with 0) or truncates `ids` to `max_len`; returns (ids int32, validity mask bool)."""
    ids = ids[:max_len]
    padded = np.zeros(max_len, np.int32)
    padded[: len(ids)] = ids
    return padded, np.arange(max_len) < len(ids)
