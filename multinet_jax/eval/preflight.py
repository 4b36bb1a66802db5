"""Checks an evaluation runs before its long part, so a run with five domains whose fifth is missing fails in
seconds, not after evaluating four: the output folder, the family's own protocol on each domain (`check_protocols`),
and per domain its data (found, readable, not empty, the first sample decodable and labeled, action statistics where
actions are unnormalized with them).

Once the checkpoint is resolved and before any of its weights are read (`check_checkpoint_inputs`): what the family's
registry entry can tell from the checkpoint's small files, so that an 8B model is not loaded for minutes only to be
refused: the action statistics `--unnorm_key` / `--asset_id` picks (an openpi asset of the state's alone is refused),
and a state of the right size for a model that reads one.

Tokenizers, the checkpoint and the run manifest are checked by the evaluator itself in the same phase, before the
first batch (see `loop.Evaluator`).
"""

from __future__ import annotations

import fcntl
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from multinet_jax import data, domains
from multinet_jax.data import prompts
from multinet_jax.metrics.act2answer_scoring import NO_ACTION_HEAD
from multinet_jax.models import registry

# jax's PRNG keys hold 32 bits of seed: `jax.random.key(2**32)` is `jax.random.key(0)`, `key(-1)` is `key(2**32 - 1)`.
SEED_LIMIT = 2**32
# Upper bounds of the size flags, so a typo fails at start-up and not as an out-of-memory error after the model
# loaded: Gemma's context (8192 positions) for prompt and decoding lengths, 1024 actions per chunk (openpi's: 10-50).
MAX_SIZES = {"max_token_len": 8192, "max_decoding_steps": 8192, "action_horizon": 1024}
# The output folder's lock file: held (an OS lock on the open file) by the one `eval` writing into the folder.
OUTPUT_LOCK = ".multinet_jax.lock"


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


def check_seed(seed: int) -> None:
    """A seed jax's PRNG takes as it is (`SEED_LIMIT`): any other would silently alias another seed's noise."""
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"--seed must be in [0, 2^32) (jax's PRNG keys hold 32 bits: other seeds alias these), got {seed}")


class OutputLock:
    """This process's hold on an output folder (`lock_output_dir`); `release()` ends it."""

    def __init__(self, folder: pathlib.Path, descriptor: int, created: bool):
        self.folder, self._descriptor, self._created = folder, descriptor, created

    def release(self) -> None:
        """Unlocks; a run that wrote nothing leaves nothing behind (its lock file, and the folder if it made it)."""
        if [entry.name for entry in self.folder.iterdir()] == [OUTPUT_LOCK]:
            (self.folder / OUTPUT_LOCK).unlink()  # while still held: a run waiting on it re-checks the inode
            if self._created:
                self.folder.rmdir()
        os.close(self._descriptor)


def lock_output_dir(path: pathlib.Path) -> OutputLock:
    """Takes the output folder for this run alone (until `release()`), or refuses naming it.

    Two runs appending to one predictions file would interleave and duplicate lines. The lock is the kernel's lock
    on an open file (`flock` on `<path>/.multinet_jax.lock`), which dies with its process: a run killed with SIGKILL,
    or its crashed host, may leave the file behind but never a held lock, so the next run starts at once. A lock
    file removed by its holder while this run was taking it is taken again (the inode must be the one at the path).
    """
    check_output_dir(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / OUTPUT_LOCK
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise BlockingIOError(f"{path}: another multinet-jax eval or probe is writing into this --output_dir (it holds "
                                  f"{OUTPUT_LOCK}); wait for it to finish or choose another --output_dir") from None
        try:
            if os.stat(lock_path).st_ino == os.fstat(descriptor).st_ino:
                return OutputLock(path, descriptor, created)
        except FileNotFoundError:
            pass
        os.close(descriptor)


def check_protocols(model: str, names: Sequence[str], max_decoding_steps: int | None) -> None:
    """The family's own protocol (`registry.Family.protocol`) can run each domain as asked, checked from flags alone:
    a `--max_decoding_steps` below the fewest tokens its output rule reads (`Protocol.min_new_tokens`) is refused."""
    family = registry.family(model)
    if family.protocol is None:
        return
    for name in names:
        protocol = family.protocol(name)
        if max_decoding_steps is not None and protocol.min_new_tokens is not None:
            fewest, what = protocol.min_new_tokens
            if max_decoding_steps < fewest:
                raise ValueError(f"--max_decoding_steps={max_decoding_steps}: --model={model} on {name} reads {what} "
                                 f"(protocol {protocol.name}): pass at least {fewest}")


def check_labeled(directory: pathlib.Path, sample_id: Any, ground_truth: Any) -> None:
    """A sample without ground truth means an unlabeled split: nothing to score against."""
    if ground_truth is None:
        raise ValueError(
            f"{directory}: sample {sample_id!r} has no ground truth (an unlabeled split, e.g. MultiNet's public "
            "PIQA sample); evaluate a labeled split"
        )


def open_domain_data(config: Any, domain: domains.Domain) -> data.Source:
    """The data source of `domain` (under the model's protocol), once it is checked: it opens, holds samples, its
    first sample decodes with ground truth, and (when actions are unnormalized with the split's statistics) it has
    action statistics. MultiNet's VLM instruction prompt is built only where the protocol's chat asks it (it reads
    the split's statistics and fits only MultiNet's definitions of the dataset). The evaluator keeps the source for
    the whole run, so each domain's data is opened once."""
    name = domain.name
    directory = pathlib.Path(config.data_dir) / domain.folder
    chat = domain.protocol.chat
    source = data.make_source(name, directory, split=config.split, cache_dir=config.cache_dir,
                              instruction_prompt=chat is not None and chat.question_field == prompts.INSTRUCTION_PROMPT)
    if len(source) == 0:
        raise ValueError(f"{directory}: the {name} data holds no samples")
    first = source[0]
    check_labeled(directory, first.get("id"), first.get("ground_truth"))
    scored_against_actions = domain.output in (domains.Output.CONTINUOUS_ACTIONS, domains.Output.DISCRETE_ACTION)
    if scored_against_actions and config.unnormalize != "checkpoint":
        if data.source_action_stats(source) is None:
            raise ValueError(
                f"{directory}: {name} has no action statistics to unnormalize with (--unnormalize={config.unnormalize})"
            )
    return source


def action_frame(config: Any, checkpoint: pathlib.Path | None) -> registry.ActionFrame | None:
    """The frame of the model's actions (`registry.Family.action_frame`, read from the checkpoint's small files before
    the weights load; `checkpoint` None: an in-memory model, `Evaluator(model=)`, as its family tells it), or None
    without an action head. What Act2Answer's action probe reads its actions as: its metrics file records it."""
    family = registry.family(config.model)
    if not family.action_head:
        return None
    stats_key = getattr(config, family.norm_stats_flag, None) if family.norm_stats_flag else None  # --asset_id, ...
    return family.action_frame(None if checkpoint is None else str(checkpoint), stats_key)


def action_probe_unavailable(config: Any, checkpoint: pathlib.Path | None) -> str | None:
    """Why Act2Answer's action probe does not apply to this model ("not applicable: ...", the text probe still runs),
    or None when it does: it reads end-effector translation deltas, so a model without an action head, or one whose
    actions are in another frame or in none it names (`action_frame`; an in-memory model's too), gets no action
    probe rather than a meaningless one."""
    return probe_unavailable(action_frame(config, checkpoint))


def probe_unavailable(frame: registry.ActionFrame | None) -> str | None:
    """`action_probe_unavailable` of a frame already read (the evaluator keeps it for the metrics file)."""
    if frame is None:
        return NO_ACTION_HEAD
    if frame.kind == "ee_delta":
        return None
    return (f"not applicable: {frame.source}: its actions are {frame.kind}, and the action probe reads end-effector "
            "translation deltas; text probe only")


def checkpoint_stats_users(config: Any, checkpoint: pathlib.Path | None = None) -> list[str]:
    """The domains whose actions this run unnormalizes with the checkpoint's statistics: Act2Answer's action probe
    (no ground truth to take the split's from; only where it applies to `checkpoint`, counted while `checkpoint` is
    None: not resolved yet, flags alone) and, with --unnormalize=checkpoint, every action domain."""
    if not registry.family(config.model).action_head:
        return []
    outputs = [domains.Output.CONTINUOUS_ACTIONS, domains.Output.DISCRETE_ACTION] if config.unnormalize == "checkpoint" else []
    if checkpoint is None or action_probe_unavailable(config, checkpoint) is None:
        outputs.append(domains.Output.KNOWLEDGE_PROBES)
    return [name for name in config.domains if domains.lookup(name).output in outputs]


def check_checkpoint_inputs(config: Any, checkpoint: pathlib.Path, sources: dict[str, data.Source]) -> None:
    """What the family reads beside its weights, checked from the checkpoint's small files before the weights load
    (`registry.Family.stats_keys`, `.missing_action_stats`, `.state_dims`): the statistics the family's flag
    (`--unnorm_key`, `--asset_id`) picks exist (or the checkpoint holds one set) and hold the actions' (an openpi asset
    of state statistics alone does not), and an action domain holds the state a model reading one needs, of the size
    it reads."""
    family = registry.family(config.model)
    users = checkpoint_stats_users(config, checkpoint)
    if users and family.stats_keys is not None:
        keys = list(family.stats_keys(str(checkpoint)))
        flag = family.norm_stats_flag
        chosen = getattr(config, flag)
        if not keys:
            raise ValueError(f"{checkpoint}: the actions of {', '.join(users)} are unnormalized with the checkpoint's "
                             f"statistics, but it holds none (nothing for --{flag} to pick)")
        if chosen is None and len(keys) != 1:
            raise ValueError(f"{checkpoint}: the actions of {', '.join(users)} are unnormalized with the checkpoint's "
                             f"statistics, which hold {keys}: pass --{flag} (one of them)")
        if chosen is not None and chosen not in keys:
            raise ValueError(f"{checkpoint}: --{flag}={chosen!r} is not one of its action statistics {keys}")
        lacking = None if family.missing_action_stats is None else family.missing_action_stats(str(checkpoint), chosen or keys[0])
        if lacking is not None:
            raise ValueError(f"{lacking}: the actions of {', '.join(users)} are unnormalized with these statistics"
                             + (f"; pass --{flag} of one holding them ({keys})" if len(keys) > 1 else ""))
    if family.state_dims is None:
        return
    dims = family.state_dims(str(checkpoint))
    for name, source in sources.items():
        domain = domains.lookup(name)
        if domain.output not in (domains.Output.CONTINUOUS_ACTIONS, domains.Output.DISCRETE_ACTION):
            continue  # Act2Answer's episodes: zeros by its protocol, for every family (`data/act2answer_episodes.py`)
        # A domain's samples all hold a state of one size or none (one robot: `data/openx.state_vector`), so the
        # first tells, here, what the model would otherwise refuse only after its weights load.
        first = source[0]
        directory = pathlib.Path(config.data_dir) / domain.folder
        if first["state"] is None:
            raise ValueError(f"{directory}: {name} sample {first['id']!r}: field 'state': none, but {checkpoint}/"
                             f"config.json input_features observation.state reads {dims} "
                             "dims: the model would act on a made-up zero state; evaluate a domain whose data holds it")
        if len(first["state"]) != dims:
            raise ValueError(f"{directory}: {name} sample {first['id']!r}: field 'state': {len(first['state'])} dims, but "
                             f"{checkpoint}/config.json input_features observation.state reads {dims}: evaluate a "
                             "checkpoint trained on this robot's state")
