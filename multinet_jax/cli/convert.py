"""`multinet-jax convert`: Open-X / RoboVQA data -> step-level ArrayRecord for random access.

Reads MultiNet translated shards (tf.data snapshots) or an RLDS builder directory (tfrecord or
ArrayRecord) and writes `steps-NNNNN.array_record` + `multinet_steps.json` (with action stats):

    multinet-jax convert --input=data/openx_bimanual/test --output=converted/openx_bimanual
    multinet-jax data --domain=openx_bimanual --data_dir=converted/openx_bimanual
"""

from __future__ import annotations

import json

from absl import flags

from multinet_jax.cli.errors import no_arguments

_INPUT = flags.DEFINE_string("input", None, "translated_shard_N folder(s) parent, or a TFDS builder dir", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "output directory (created; not inside --input)", required=True)
_SPLIT = flags.DEFINE_string("split", None, "TFDS split of an RLDS builder dir (default: its only split, else test)")
_STEPS_PER_FILE = flags.DEFINE_integer("steps_per_file", 4096, "records per ArrayRecord file")


def main(argv: list[str]) -> None:
    no_arguments(argv)
    from multinet_jax.data import openx

    manifest = openx.convert(_INPUT.value, _OUTPUT.value, split=_SPLIT.value, steps_per_file=_STEPS_PER_FILE.value)
    summary = {key: manifest[key] for key in ("source", "source_format", "num_steps", "num_episodes", "files")}
    summary["action_dim"] = manifest["action_stats"]["size"][0] if manifest["action_stats"] else None
    print(json.dumps(summary, indent=1))
