"""Checks an evaluation runs before its long part, so a run with five domains whose fifth is missing fails in
seconds, not after evaluating four: the output folder, and per domain its data (found, readable, not empty, the
first sample decodable and labeled, action statistics where actions are unnormalized with them).

Tokenizers, the checkpoint and the run manifest are checked by the evaluator itself in the same phase, before the
first batch (see `loop.Evaluator`).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from multinet_jax import data, domains


def check_output_dir(path: pathlib.Path) -> None:
    """`path` is, or can become, a writable folder."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: --output_dir is a file, not a folder")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{path}: cannot create --output_dir: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: --output_dir is not writable ({ancestor} is read-only)")


def check_labeled(directory: pathlib.Path, sample_id: Any, ground_truth: Any) -> None:
    """A sample without ground truth means an unlabeled split: nothing to score against."""
    if ground_truth is None:
        raise ValueError(
            f"{directory}: sample {sample_id!r} has no ground truth (an unlabeled split, e.g. MultiNet's public "
            "PIQA sample); evaluate a labeled split"
        )


def check_domain_data(config: Any, name: str) -> None:
    """The domain's data opens, holds samples, its first sample decodes with ground truth, and (when actions are
    unnormalized with the split's statistics) it has action statistics."""
    domain = domains.lookup(name)
    directory = pathlib.Path(config.data_dir) / domain.folder
    source = data.make_source(name, directory, split=config.split, cache_dir=config.cache_dir)
    if len(source) == 0:
        raise ValueError(f"{directory}: the {name} data holds no samples")
    first = source[0]
    check_labeled(directory, first.get("id"), first.get("ground_truth"))
    scored_against_actions = domain.output in (domains.Output.CONTINUOUS_ACTIONS, domains.Output.DISCRETE_ACTION)
    if scored_against_actions and config.unnormalize != "checkpoint":
        if data.action_stats(name, directory, split=config.split, cache_dir=config.cache_dir) is None:
            raise ValueError(
                f"{directory}: {name} has no action statistics to unnormalize with (--unnormalize={config.unnormalize})"
            )
