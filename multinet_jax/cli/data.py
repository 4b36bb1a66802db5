"""`multinet-jax data`: inspect and validate one domain's dataset before a long run.

    multinet-jax data --domain=openx_bimanual --data_dir=data/openx_bimanual --split=public
    multinet-jax data --domain=piqa --data_dir=data/piqa_validation --json
    multinet-jax data --domain=act2answer --data_dir=data/act2answer/public --frames_dir=sim_first_frames
"""

from __future__ import annotations

import json

import numpy as np
from absl import flags

from multinet_jax import data, domains
from multinet_jax.cli.errors import no_arguments

_DOMAIN = flags.DEFINE_string("domain", None, domains.names_help(), required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "the domain's data directory", required=True)
_SPLIT = flags.DEFINE_string("split", None, "split: a subfolder (MultiNet's layout), a TFDS split or SQA3D's split name")
_LIMIT = flags.DEFINE_integer("limit", None, "check only the first N samples (counts still cover all)")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "where conversions go (default: $MULTINET_JAX_CACHE/converted; never data_dir)")
_FRAMES_DIR = flags.DEFINE_string(
    "frames_dir", None, "act2answer: simulator first frames <item id>_<layout>.png instead of rendered composites"
)
_JSON = flags.DEFINE_bool("json", False, "print one JSON object instead of text")


def _jsonable(value):
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return str(value)


def _text(report: dict) -> str:
    lines = [f"{report['domain']} at {report['data_dir']} (split {report['split']})", f"samples: {report['num_samples']} (checked {report['num_checked']})"]
    if "num_episodes" in report:
        lines.append(f"episodes: {report['num_episodes']}  converted steps: {report['converted_dir']}")
    lines.append("fields:")
    lines += [f"  {key}: {description}" for key, description in report["fields"].items()]
    lines.append("one sample:")
    lines += [f"  {key}: {str(value)[:200]!s}" for key, value in report["sample"].items()]
    if report["action_stats"]:
        lines.append(f"action stats (dim {report['action_dim']}):")
        lines += [f"  {name}: {np.round(report['action_stats'][name], 4).tolist()}" for name in ("min", "max", "mean", "std", "q01", "q99")]
    lines.append(f"bad records: {report['num_bad_records']}")
    lines += [f"  {bad}" for bad in report["bad_records"]]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    no_arguments(argv)
    report = data.inspect(_DOMAIN.value, _DATA_DIR.value, split=_SPLIT.value, limit=_LIMIT.value, cache_dir=_CACHE_DIR.value,
                          frames_dir=_FRAMES_DIR.value)
    print(json.dumps(report, default=_jsonable) if _JSON.value else _text(report))
