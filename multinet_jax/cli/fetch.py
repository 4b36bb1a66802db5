"""`multinet-jax fetch`: download ahead of time every asset a run needs, for machines without network.

    multinet-jax fetch --flagfile=flags/pi0_openx.flags          # what that eval reads (checkpoint, tokenizers, embedder)
    multinet-jax fetch pi0_base paligemma_tokenizer             # named assets, hub repos or URLs
    multinet-jax fetch --offline --flagfile=flags/pi0_text.flags # check the cache holds everything; download nothing

Takes `multinet-jax eval`'s flags (so an eval flagfile works as is; --data_dir is not needed) and prints each
asset's local path. Copy `$MULTINET_JAX_CACHE` (default ~/.cache/multinet_jax) and the Hugging Face cache
(`$HF_HUB_CACHE`, default ~/.cache/huggingface/hub) to an air-gapped TPU VM, then run there with --offline.
"""

from __future__ import annotations

from absl import flags

from multinet_jax.cli import eval as eval_cli
from multinet_jax.cli import offline

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    offline.apply()
    from multinet_jax import assets

    specs = {spec: spec for spec in argv[1:]}
    if FLAGS["checkpoint"].present or not specs:
        specs.update(eval_cli.config_from_flags(require_data=False).asset_specs())
    resolved = assets.resolve_all(specs)  # an AssetError is bad input: one line, exit code 2 (cli/errors.py)
    missing = [specs[role] for role, path in resolved.items() if not path.exists()]
    if missing:  # neither a path nor an asset: nothing was fetched, and a run would not find it either
        raise assets.not_found(missing[0])
    for role, path in resolved.items():
        print(f"{role}: {specs[role]} -> {path}" if role != specs[role] else f"{role} -> {path}")
