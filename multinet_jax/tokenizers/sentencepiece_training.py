"""Small SentencePiece models trained on a corpus, deterministically: the tokenizers the tiny demo checkpoints bundle
or read (a real checkpoint's tokenizer is its publisher's file)."""

from __future__ import annotations

import io
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any


def train(corpus: Iterable[str], vocab_size: int, **options: Any) -> Any:
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


def write_padded(proto: Any, path: pathlib.Path, pieces: Sequence[str], piece_type: str = "USER_DEFINED") -> pathlib.Path:
    """Append `pieces` (score 0) to a trained model and write it."""
    from sentencepiece import sentencepiece_model_pb2

    for text in pieces:
        piece = proto.pieces.add()
        piece.piece, piece.score = text, 0.0
        piece.type = getattr(sentencepiece_model_pb2.ModelProto.SentencePiece, piece_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path
