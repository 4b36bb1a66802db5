"""The embedded demo: a tiny random checkpoint of the family `--model` names, its tokenizers and small datasets, built
by the project's own code, deterministically, the first time `multinet-jax eval --demo` needs them.

    multinet-jax eval --flagfile=flags/demo.flags     # builds checkpoints/*, .cache/demo_data/ when missing

- Checkpoints (`checkpoints/pi0_tiny`, `checkpoints/openvla_tiny`, ...): the family's named tiny config
  (`registry.Family.demo_config`) with seeded normal parameters, written in its checkpoint format by the format's
  `write_random` (openpi's exact layout with identity norm stats, a big_vision npz, openvla-7b's Hugging Face layout
  with a tokenizer trained on the demo prompts). Flax's `init_params` gives the same tree but costs a minute of
  tracing and compiling on a 2-core CPU; the demo only needs a deterministic random model.
- Tokenizer (`checkpoints/demo_tokenizer.model`): the tiny models have a 1024-token vocabulary, so the
  demo cannot use PaliGemma's 257,152 pieces. It mirrors PaliGemma's layout at that size: a SentencePiece
  model trained on the demo prompts, padded with `<unusedNNN>` pieces and ending in 128 `<segNNN>` pieces;
  the FAST action tokens land on the padding pieces exactly as openpi maps them onto PaliGemma's vocabulary.
- FAST tokenizer (`checkpoints/demo_fast_tokenizer/`): a FAST BPE trained on the demo Open-X actions.
- Datasets (`<data_dir>/<domain folder>/public/...`): `multinet_jax.demo.datasets` writes each domain in its
  publisher's real format (the layout of MultiNet's `multinet_sample`), beside the domains the demo made (each
  marked by `DEMO_DATA_MARKER`) or into a new folder: generated data is never mixed into a real `multinet_sample`
  or MultiNet download, and a published asset's name (`pi0_base`, ...) is never given to a random model.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from multinet_jax.demo.datasets import DEMO_DATA_MARKER
from multinet_jax.models import registry
from multinet_jax.tokenizers import sentencepiece_training

DEMO_SEED = 0
DEMO_PARAM_SCALE = 0.1  # std of the random parameters: small enough to keep the tiny networks finite
DEMO_VOCAB_SIZE = 1024  # the tiny configs' embedding rows
DEMO_FAST_VOCAB_SIZE = 300
NUM_SEG_PIECES = 128
# SentencePiece pieces the trainer may use; the rest (up to the vocab size) are padding that the FAST ids land on.
_MAX_TRAINED_PIECES = DEMO_VOCAB_SIZE - NUM_SEG_PIECES - DEMO_FAST_VOCAB_SIZE


def build_checkpoint(family: str, directory: pathlib.Path) -> pathlib.Path:
    """The random tiny checkpoint of `family` (seeded), written at `directory` in its checkpoint format."""
    from multinet_jax.demo import datasets

    return registry.write_demo_checkpoint(family, directory, corpus=list(datasets.corpus()), seed=DEMO_SEED,
                                          scale=DEMO_PARAM_SCALE)


def build_tokenizer(path: pathlib.Path, corpus: Iterable[str]) -> pathlib.Path:
    """A 1024-piece SentencePiece model laid out like PaliGemma's (see the module docstring)."""
    # Gemma's special ids; no dummy prefix, as Gemma: decoded pieces re-encode to themselves.
    proto = sentencepiece_training.train(corpus, _MAX_TRAINED_PIECES, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                                         add_dummy_prefix=False)
    num_padding = DEMO_VOCAB_SIZE - NUM_SEG_PIECES - len(proto.pieces)
    pieces = [f"<unused{i:03d}>" for i in range(num_padding)] + [f"<seg{i:03d}>" for i in range(NUM_SEG_PIECES)]
    return sentencepiece_training.write_padded(proto, path, pieces)


def build_fast_tokenizer(directory: pathlib.Path, action_chunks: Sequence[np.ndarray]) -> pathlib.Path:
    """A FAST BPE fitted on the demo's (z-scored) action chunks."""
    from multinet_jax import tokenizers

    fast = tokenizers.FastTokenizer.train(action_chunks, vocab_size=DEMO_FAST_VOCAB_SIZE)
    return fast.save_pretrained(directory)


def build_probe_demo(*, checkpoint: str, tokenizer: str | None, item_set: str, model: str) -> None:
    """`multinet-jax probe --demo`: the tiny checkpoint of family `model`, the demo tokenizer (None: the family's
    checkpoint bundles its own) and the generated Act2Answer items."""
    from multinet_jax.act2answer import write_item_set
    from multinet_jax.demo import datasets

    refuse_published_names(checkpoint=checkpoint, tokenizer=tokenizer)
    if not pathlib.Path(item_set, "pairs.json").exists():
        (write_item_set(item_set, items_per_category=5) / DEMO_DATA_MARKER).touch()
    if tokenizer is not None and not pathlib.Path(tokenizer).exists():
        build_tokenizer(pathlib.Path(tokenizer), datasets.corpus())
    if not pathlib.Path(checkpoint).exists():
        build_checkpoint(model, pathlib.Path(checkpoint).resolve())


def refuse_published_names(**paths: str | None) -> None:
    """`--demo` builds random models and tokenizers at the paths its flags give: a published asset's name there
    (`--checkpoint=pi0_base`) would make a random model answer to it, in this run's results and in every later
    run resolving that name from this folder."""
    from multinet_jax import assets

    for flag, spec in paths.items():
        asset = None if spec is None else assets.asset_for(str(spec))
        if asset is not None:
            raise ValueError(f"--demo builds a random tiny model at --{flag}, but {spec!r} names {asset.description}: "
                             f"drop --demo to evaluate it, or give --{flag} a path of its own")


def _generated(folder: pathlib.Path) -> bool:
    """Whether the demo wrote `folder`, a domain's data (marked in it, or in its split folder as `probe --demo`'s item
    set is)."""
    return (folder / DEMO_DATA_MARKER).exists() or any((child / DEMO_DATA_MARKER).exists()
                                                        for child in folder.iterdir() if child.is_dir())


def _refuse_mixing(data_root: pathlib.Path, missing_domains: Sequence[str]) -> None:
    """Generated datasets go only beside other generated ones, or into a new folder."""
    if not missing_domains or not data_root.is_dir():
        return
    foreign = sorted(entry.name for entry in data_root.iterdir()
                     if not entry.name.startswith(".") and not (entry.is_dir() and _generated(entry)))
    if foreign:
        raise ValueError(f"--demo would write generated {', '.join(missing_domains)} data into {data_root}, which holds "
                         f"data the demo did not write ({', '.join(foreign)}; demo data of a version before this check "
                         "is unmarked: remove it to have it rebuilt): drop --demo to evaluate that data (domains "
                         "without any are refused), or give --data_dir a folder of its own")


def _refuse_foreign_domains(data_root: pathlib.Path, present: Sequence[str]) -> None:
    """`--demo` evaluates the data it generates: a requested domain whose folder it did not write (real data) would
    be scored by a random tiny model, in results that look like any run's."""
    from multinet_jax.demo import datasets

    foreign = [name for name in present if not _generated(data_root / datasets.WRITERS[name][0])]
    if foreign:
        raise ValueError(f"--demo evaluates the data it generates, but {data_root} holds {', '.join(foreign)} data it did "
                         "not write (demo data of a version before this check is unmarked: remove it to have it "
                         "rebuilt): drop --demo to evaluate that data, or give --data_dir a folder of its own")


def build(*, checkpoint: str, tokenizer: str | None, fast_tokenizer: str | None, data_dir: str, model: str,
          domains: Sequence[str]) -> None:
    """Creates whichever demo artifacts are missing at the given paths (existing ones are kept)."""
    from multinet_jax.demo import datasets

    refuse_published_names(checkpoint=checkpoint, tokenizer=tokenizer, fast_tokenizer=fast_tokenizer)
    data_root = pathlib.Path(data_dir)
    missing_domains = datasets.missing(data_root, domains)
    _refuse_mixing(data_root, missing_domains)
    _refuse_foreign_domains(data_root, [name for name in domains if name not in missing_domains])
    files = [path for path in (tokenizer, fast_tokenizer, checkpoint) if path is not None and not pathlib.Path(path).exists()]
    if missing_domains or files:
        listed = files + ([f"the {', '.join(missing_domains)} data under {data_root}"] if missing_domains else [])
        print(f"demo: building {'; '.join(listed)} (first run only)", flush=True)
    datasets.write_missing(data_root, missing_domains)
    if tokenizer is not None and not pathlib.Path(tokenizer).exists():
        build_tokenizer(pathlib.Path(tokenizer), datasets.corpus())
    if fast_tokenizer is not None and not pathlib.Path(fast_tokenizer).exists():
        build_fast_tokenizer(pathlib.Path(fast_tokenizer), datasets.action_chunks())
    if not pathlib.Path(checkpoint).exists():
        build_checkpoint(model, pathlib.Path(checkpoint).resolve())
