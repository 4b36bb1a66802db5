"""The evaluation loop behind `multinet-jax eval`.

Per domain: data batches (Grain, fixed shapes, `_mask` for padding rows) -> the model's jitted call on
the mesh -> the domain's output mapping (`multinet_jax.domains`) -> `predictions/<domain>.jsonl`
(appended, fsynced per batch) -> at the end, the `score` metrics over the whole file, a plot and a row
of the summary.

Randomness: one base key from `--seed`; the model folds it with each sample's global `sample_index`,
so a sample's noise does not depend on its batch, the devices or where a resumed run restarts. Its float
rounding does: XLA compiles each per-device batch shape into its own program, so `--batch_size` and the device
layout are recorded in the run manifest and a resume must keep them (`manifest.device_layout`).

Multi-host: every process loads its own shard (`shard_index=jax.process_index()`) and runs the model
on its own devices (the mesh is built from `jax.local_devices()`: data parallel over hosts, the model
replicated or sharded within a host, which fits Pi0 on any TPU host). Per step the processes
exchange their records (`results.gather_records`) and only process 0 writes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import tqdm

from multinet_jax import assets, data, domains, metrics, models, sharding, tokenizers
from multinet_jax.data import transforms
from multinet_jax.eval import act2answer_probes, manifest, preflight, results, runners, summary
from multinet_jax.models import InferenceOptions, registry
from multinet_jax.models.interface import MultiNetActions, PromptLengths

FAMILIES = registry.family_names()
# split: MultiNet's own split statistics (its formula, bit for bit); split_exact: float64 mean/std of the split;
# checkpoint: the checkpoint's norm stats.
UNNORMALIZE_CHOICES = ("split", "split_exact", "checkpoint")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Everything that decides an evaluation's results (written into every `<domain>_metrics.json`).

    Assets (`checkpoint`, `tokenizer`, `fast_tokenizer`, `embedder_dir`) are local paths or names that
    `multinet_jax.assets` resolves; the tokenizers and the embedder default to their public names.
    """

    model: str | None  # the family (`--model`); None: the one the checkpoint holds (`registry.family_of`)
    checkpoint: str
    tokenizer: str | None
    domains: tuple[str, ...]
    data_dir: str
    output_dir: str
    fast_tokenizer: str | None = None
    split: str | None = None
    max_token_len: int | None = None
    action_horizon: int | None = None
    action_dim: int | None = None
    cache_dir: str | None = None
    batch_size: int = 8
    mesh: str = "data:-1,model:1"
    dtype: str = "bfloat16"
    num_flow_steps: int | None = None  # flow families: None samples with the checkpoint's own (`Model.num_flow_steps`)
    max_decoding_steps: int | None = None
    openpi_exact_decoding: bool = True
    normalize_state: bool = True  # Pi0.5 / Pi0-FAST prompts: the state quantile-normalized with the checkpoint's stats
    temperature: float = 0.0
    seed: int = 0
    limit: int | None = None
    resume: bool = False
    unnormalize: str = "split"
    embedder_dir: str | None = None
    skip_similarity: bool = False
    unnorm_key: str | None = None
    asset_id: str | None = None  # openpi: whose `assets/<asset_id>/norm_stats.json` (state and action statistics)

    def __post_init__(self) -> None:
        if self.model is None:
            object.__setattr__(self, "model", registry.family_of(self.checkpoint))
        if self.model not in FAMILIES:
            raise ValueError(f"--model must be one of {FAMILIES}, got {self.model!r}")
        family = registry.family(self.model)
        if self.unnormalize not in UNNORMALIZE_CHOICES:
            raise ValueError(f"--unnormalize must be one of {UNNORMALIZE_CHOICES}, got {self.unnormalize!r}")
        for name in ("batch_size", "max_token_len", "num_flow_steps", "max_decoding_steps", "action_horizon", "action_dim", "limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        for name, most in preflight.MAX_SIZES.items():
            if getattr(self, name) is not None and getattr(self, name) > most:
                raise ValueError(f"--{name} must be at most {most}, got {getattr(self, name)}")
        preflight.check_seed(self.seed)
        if not self.temperature >= 0:
            raise ValueError(f"--temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not self.domains:
            raise ValueError("--domains is empty")
        # Canonical names (an unknown one fails here, before any model is loaded): output files use them.
        object.__setattr__(self, "domains", tuple(domains.canonical(name) for name in self.domains))
        for name in self.domains:  # scorable: an Open-X name that would lose a domain's own metrics fails here, not at the end
            domains.lookup(name).metric_kind
        if self.limit is not None and self.limit % 2 and any(domains.lookup(name).output is domains.Output.KNOWLEDGE_PROBES
                                                             for name in self.domains):
            raise ValueError(f"--limit={self.limit} is odd: Act2Answer's samples are items in both layouts (original, "
                             "then swapped), and an item is scored in both or not at all; pass an even --limit")
        repeated = sorted({name for name in self.domains if self.domains.count(name) > 1})
        if repeated:
            raise ValueError(f"--domains names {', '.join(repeated)} more than once")
        self._check_family_flags(family)
        self._check_capabilities(family)
        self._check_temperature()
        self._check_decoding_budget(family)
        self._check_action_flags()
        self._check_decoding_mode(family)
        preflight.check_protocols(self.model, self.domains, self.max_decoding_steps)
        if self.skip_similarity and self.embedder_dir:
            raise ValueError("--skip_similarity and --embedder_dir contradict each other: pass one of them "
                             "(--noskip_similarity overrides a flagfile's --skip_similarity)")
        self._fill_asset_defaults()

    def _check_family_flags(self, family: registry.Family) -> None:
        """Load-time settings and statistics flags the family does not read are refused, naming those that do."""
        for name in registry.CONFIG_OVERRIDES:
            if getattr(self, name) is not None and name not in family.config_overrides:
                takers = [other for other in FAMILIES if name in registry.family(other).config_overrides]
                why = "its checkpoint fixes it" if family.action_head else "it has no action head"
                raise ValueError(f"--{name} is for --model={'|'.join(takers)}, not --model={self.model} ({why})")
        registry.check_tokenizers(self.model, {"tokenizer": self.tokenizer, "fast_tokenizer": self.fast_tokenizer})
        registry.check_prompt_length(self.model, self.max_token_len)
        registry.check_flow_steps(self.model, self.num_flow_steps)
        for name in registry.NORM_STATS_FLAGS:
            if getattr(self, name) is not None and family.norm_stats_flag != name:
                takers = [other for other in FAMILIES if registry.family(other).norm_stats_flag == name]
                own = f"picks them with --{family.norm_stats_flag}" if family.norm_stats_flag else "reads none"
                raise ValueError(f"--{name} picks the checkpoint's statistics of --model={'|'.join(takers)}; "
                                 f"--model={self.model} {own}")
        if self.unnorm_key is not None and not preflight.checkpoint_stats_users(self):
            raise ValueError("--unnorm_key picks the checkpoint's statistics: it needs --unnormalize=checkpoint or "
                             "act2answer (whose action probe reads them)")

    def _check_capabilities(self, family: registry.Family) -> None:
        """Every domain must be one the family serves: actions need an action head (Act2Answer then gets its text
        probe only), text domains text decoding, Act2Answer's text probe option scoring."""
        probes = [name for name in self.domains if domains.lookup(name).output is domains.Output.KNOWLEDGE_PROBES]
        checks = (
            (family.action_head, "has no action head", "need actions",
             [name for name in self.domains if domains.lookup(name).uses_actions and name not in probes]),
            (family.text_decoding, "decodes no text", "are text domains",
             [name for name in self.domains if not domains.lookup(name).uses_actions]),
            (family.option_scoring, "scores no options", "need them (act2answer's text probe)", probes),
        )
        served = [what for capable, what in ((family.text_decoding, "text domains"),
                                             (family.option_scoring, "act2answer's text probe")) if capable]
        for capable, lacks, need, names in checks:
            if names and not capable:
                raise ValueError(f"--model={self.model} {lacks}: --domains {names} {need}"
                                 + (f" (it evaluates {' and '.join(served)})" if served else ""))

    def _check_temperature(self) -> None:
        """A sampling `--temperature` with no domain that reads it (actions are greedy unless MultiNet's protocol
        sampled them, at its own temperature; Act2Answer's text probe scores options) would be recorded as applied."""
        readers = [name for name in self.domains if (domain := domain_for(self.model, name)).protocol.temperature is None
                   and not domain.uses_actions and domain.output is not domains.Output.KNOWLEDGE_PROBES]
        if self.temperature > 0 and not readers:
            raise ValueError(f"--temperature={self.temperature} samples text answers; --domains {list(self.domains)} "
                             f"decode none under --model={self.model} (their actions and probes are greedy or sampled "
                             "at their protocol's temperature)")

    def _check_decoding_budget(self, family: registry.Family) -> None:
        """`--max_decoding_steps` bounds token decoding (not flow actions, nor OpenVLA's one token per action dim):
        given where no requested domain decodes under a budget, it would be recorded as applied to a run it never
        changed."""
        budgeted_actions = family.action_decoding == "tokens" and not family.one_token_per_action_dim
        decoded = [name for name in self.domains if (domain := domain_for(self.model, name)).output is domains.Output.TEXT
                   or (domain.uses_actions and budgeted_actions)]
        if self.max_decoding_steps is not None and not decoded:
            why = "one token per action dim" if family.one_token_per_action_dim else "by flow matching"
            raise ValueError(f"--max_decoding_steps bounds decoded tokens; --domains {list(self.domains)} decode none under "
                             f"--model={self.model} (its actions come {why}; Act2Answer's text probe scores options)")

    def _check_action_flags(self) -> None:
        """Settings of predicted actions (`--num_flow_steps`, `--action_horizon`; `--unnormalize` for the domains
        scored against the split's actions, not Act2Answer's probe, which reads the checkpoint's statistics) given where
        no requested domain predicts actions would be recorded as applied to a run they never changed."""
        acting = [name for name in self.domains if domain_for(self.model, name).uses_actions]
        scored = [name for name in acting if domains.lookup(name).output is not domains.Output.KNOWLEDGE_PROBES]
        given = [flag for flag, value in (("num_flow_steps", self.num_flow_steps), ("action_horizon", self.action_horizon))
                 if value is not None]
        if given and not acting:
            raise ValueError(f"--{given[0]} sets how actions are predicted; --domains {list(self.domains)} predict none "
                             f"under --model={self.model}")
        if self.unnormalize != UNNORMALIZE_CHOICES[0] and not scored:
            raise ValueError(f"--unnormalize={self.unnormalize} picks the statistics an action domain's predictions are "
                             f"unnormalized with; --domains {list(self.domains)} have none under --model={self.model} "
                             "(Act2Answer's action probe always reads the checkpoint's)")

    def _check_decoding_mode(self, family: registry.Family) -> None:
        """`--noopenpi_exact_decoding` changes how families reading PaliGemma's tokenizer decode tokens (text, FAST
        actions); given where nothing is so decoded (a bundled tokenizer decodes as Hugging Face's `generate`), it
        would be recorded as applied to a run it never changed."""
        decoded = [name for name in self.domains if (domain := domain_for(self.model, name)).output is domains.Output.TEXT
                   or (domain.uses_actions and family.action_decoding == "tokens")]
        if not self.openpi_exact_decoding and (family.bundles_tokenizer or not decoded):
            why = "decodes as Hugging Face's generate" if family.bundles_tokenizer else \
                f"decodes no tokens on --domains {list(self.domains)}"
            raise ValueError(f"--noopenpi_exact_decoding changes openpi's token decoding; --model={self.model} {why}")

    def _fill_asset_defaults(self) -> None:
        """The public names of what was not given, recorded as such; similarity is skipped only when asked."""
        defaults = dict(registry.family(self.model).assets)  # none when the checkpoint bundles its tokenizer
        if self.similarity_domains() and not self.skip_similarity:
            defaults["embedder_dir"] = assets.DEFAULT_EMBEDDER
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def asset_specs(self) -> dict[str, str]:
        """Every asset this run reads, by flag name (what `multinet-jax fetch` gets ahead of time)."""
        specs = {"checkpoint": self.checkpoint, **{name: getattr(self, name) for name in registry.family(self.model).assets}}
        if self.similarity_domains() and not self.skip_similarity:
            specs["embedder_dir"] = self.embedder_dir
        return specs

    def similarity_domains(self) -> tuple[str, ...]:
        """The domains whose metrics include text similarity (SQA3D, RoboVQA, BFCL)."""
        return tuple(name for name in self.domains if domains.lookup(name).metric_kind in metrics.SIMILARITY_KINDS)


@dataclasses.dataclass
class Timing:
    """Wall seconds per stage, so the benchmark can report where time goes."""

    data: float = 0.0
    model: float = 0.0
    output: float = 0.0
    metrics: float = 0.0

    def shares(self) -> dict[str, float]:
        total = self.data + self.model + self.output + self.metrics
        return {name: (value / total if total else 0.0) for name, value in dataclasses.asdict(self).items()}

    def clock(self, stage: str) -> _Clock:
        """`with timing.clock("model"): ...` adds the block's seconds to that stage."""
        return _Clock(self, stage)


class _Clock:
    """Adds the seconds spent inside a `with` block to one Timing field."""

    def __init__(self, timing: Timing, stage: str):
        self.timing, self.stage = timing, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc_info: Any) -> None:
        setattr(self.timing, self.stage, getattr(self.timing, self.stage) + time.perf_counter() - self.start)


def _load_model(config: EvalConfig, checkpoint: pathlib.Path, mesh: jax.sharding.Mesh, action_tokenizer: Any) -> models.Model:
    """The checkpoint's model, with what parameter shapes cannot tell when given (the family's defaults otherwise),
    the statistics `--asset_id` picks and the action tokenizer its checkpoint does not ship (`Family`)."""
    overrides = {name: getattr(config, name) for name in ("action_horizon", "action_dim", "asset_id")
                 if getattr(config, name) is not None}
    if action_tokenizer is not None:
        overrides["action_tokenizer"] = action_tokenizer
    return models.load_model(checkpoint, dtype=config.dtype, mesh=mesh, **overrides)


def _local_mesh(spec: str) -> jax.sharding.Mesh:
    """The mesh of this process's devices (see the module docstring for why it is process-local)."""
    return sharding.make_mesh(spec, devices=jax.local_devices())


class Evaluator:
    """One loaded model and tokenizers, evaluated on one domain after another.

    `model` skips loading `config.checkpoint`: an in-memory `models.Model` of the family `config.model` names (e.g.
    built with `models.build_model` for benchmarks, or a model under training) placed on this evaluator's `mesh`; its
    action frame is the one its family tells without files (`preflight.action_frame`).
    Every asset is resolved first, so a missing one fails before anything is loaded.
    """

    def __init__(self, config: EvalConfig, model: Any = None):
        self.config = config
        self.mesh = _local_mesh(config.mesh)
        sharding.check_batch_size(config.batch_size, self.mesh)
        self.output_dir = pathlib.Path(config.output_dir)
        preflight.check_output_dir(self.output_dir)
        # Said at once: checking the data and loading a checkpoint can take a while before the first progress bar.
        if jax.process_index() == 0:
            print(f"eval: checking {', '.join(config.domains)}, then loading {config.checkpoint}", flush=True)
        # Every domain's data, opened and checked before any download or model time, then kept for the run (the
        # sample count, the split's action statistics and the dataset all read this one source).
        self.sources = {name: preflight.open_domain_data(config, domain_for(config.model, name)) for name in config.domains}
        specs = config.asset_specs()
        if model is not None:
            del specs["checkpoint"]
        paths = assets.resolve_all(specs)
        if model is None:  # before the manifest fingerprints the weights, and before they load
            # The checkpoint's format and family first (headers only): what is read from its small files next is
            # read as that family's.
            registry.check_family(paths["checkpoint"], config.model)
            preflight.check_checkpoint_inputs(config, paths["checkpoint"], self.sources)
        # Read (and a directory declaring another model than MiniLM refused) before the model's minutes of loading.
        self.embedder = metrics.SentenceEmbedder(paths["embedder_dir"]) if "embedder_dir" in paths else None
        # Act2Answer's action probe: None where it runs, else why not (its metrics say so; the text probe runs). An
        # in-memory model is checked as its family tells its frame (no checkpoint files to read).
        self.action_frame = preflight.action_frame(config, paths.get("checkpoint"))
        self.action_probe_unavailable = preflight.probe_unavailable(self.action_frame)
        family = registry.family(config.model)
        # A family whose checkpoint bundles its tokenizer tokenizes the `prompt` texts itself; the others read prompts
        # tokenized with PaliGemma's (`--tokenizer`).
        self.bundled_tokenizer = family.bundles_tokenizer
        self.prompt_tokenizer = None if self.bundled_tokenizer else tokenizers.PaliGemmaTokenizer(paths["tokenizer"])
        action_tokenizer = family.action_tokenizer(paths, self.prompt_tokenizer) if family.action_tokenizer else None
        checkpoint_settings = registry.path_settings(paths["checkpoint"], config.model) if model is None else {}
        implied = {key: value for key, value in checkpoint_settings.items()  # less what --action_horizon / _dim override
                   if key not in registry.CONFIG_OVERRIDES or getattr(config, key) is None}
        line = registry.path_settings_line("eval", config.checkpoint, implied)
        if line and jax.process_index() == 0:  # what no flag said, so said here
            print(line, flush=True)
        source = paths["checkpoint"] if model is None else model
        own_prompts = registry.own_prompts(config.model, source)
        _check_prompt_cut(config, own_prompts)
        _check_state_prompts(config, own_prompts)
        self.image_size = transforms.IMAGE_SIZE if family.processor_image_size is None else family.processor_image_size(source)
        protocols = {name: protocol_settings(config, name, own_prompts, self.image_size) for name in config.domains}
        self.manifest = manifest.describe(config, paths, protocols, manifest.device_layout(self.mesh), checkpoint_settings)
        _check_same_run_everywhere(self.manifest, {name: len(source) for name, source in self.sources.items()}, config.limit)
        checked = _on_writer(lambda: manifest.check(self.output_dir, self.manifest))  # before the model loads
        self.recorded_domains = list(checked["domains"]) if checked else []
        # Existing predictions (refused without --resume, read and checked with it), before the model loads.
        self.completed = _on_writer(lambda: {name: self._completed(self._predictions_path(name)) for name in config.domains}) or {}
        self.model = _load_model(config, paths["checkpoint"], self.mesh, action_tokenizer) if model is None else model
        if not self.bundled_tokenizer:
            self.prompt_tokenizer.check_vocabulary(config.checkpoint, self.model.config.vocab_size)
        _on_writer(lambda: manifest.record(self.output_dir, checked))
        self.predicts_actions = family.action_head
        self.text_tokenizer = self.model.tokenizer if self.bundled_tokenizer else self.prompt_tokenizer
        # Action prompts holding the state (openpi's Pi0.5 and FAST formats), built per batch; checked at start.
        self.action_prompts = None
        if any(domains.lookup(name).uses_actions for name in config.domains):
            self.action_prompts = self.model.action_prompts(self.prompt_tokenizer, normalize_state=config.normalize_state,
                                                            source=config.checkpoint)
        self.rng = jax.random.key(config.seed)
        # Flow steps: --num_flow_steps, else the checkpoint's own (never a default of the evaluator's).
        self.num_flow_steps = self.model.num_flow_steps if config.num_flow_steps is None else config.num_flow_steps
        self.inference_options = InferenceOptions(
            max_decoding_steps=config.max_decoding_steps, temperature=config.temperature,
            openpi_exact=config.openpi_exact_decoding,
            **({} if self.num_flow_steps is None else {"num_flow_steps": self.num_flow_steps}))
        self.action_options = self.inference_options  # per domain: `_action_options`
        # Said once the run is accepted and loaded (a refusal stays one line).
        batch_dependent = [name for name, entry in self.manifest["domains"].items() if family.masks_cameras_on_text and
                           entry["protocol"]["decoding"] == "openpi_window" and entry["protocol"]["max_prompt_tokens"] is None]
        if batch_dependent and jax.process_index() == 0:
            print(f"note: {', '.join(batch_dependent)}: openpi's decoding window (--openpi_exact_decoding) lets a masked "
                  "camera's tokens attend to every prefix slot, and these prompts are padded to their batch's longest, so "
                  "an answer depends on the other prompts in its batch; --noopenpi_exact_decoding decodes each row as "
                  "if alone", file=sys.stderr, flush=True)

    # -- data --------------------------------------------------------------------------------------

    def _prompt_holds_state(self, domain: domains.Domain) -> bool:
        """Whether the model's action prompts hold the state (`Model.action_prompts`), so they are built per batch;
        text domains use the pipeline's prompts with every model."""
        return self.action_prompts is not None and domain.uses_actions

    def _dataset(self, domain: domains.Domain) -> Any:
        return data.load_source(
            self.sources[domain.name],
            # Prompts holding the state are built per batch (`_observation`); a bundled tokenizer is the model's own.
            tokenizer=None if self._prompt_holds_state(domain) or self.bundled_tokenizer else self.prompt_tokenizer,
            protocol=domain.protocol,
            batch_size=self.config.batch_size,
            limit=self.config.limit,
            shard_index=jax.process_index(),
            shard_count=jax.process_count(),
            max_token_len=self.config.max_token_len,
            image_size=self.image_size,
        )

    def _num_samples(self, domain: domains.Domain) -> int:
        """How many samples this evaluation covers (all hosts), for the progress bar's ETA."""
        total = len(self.sources[domain.name])
        return total if self.config.limit is None else min(total, self.config.limit)

    def _domain_dir(self, domain: domains.Domain) -> pathlib.Path:
        return pathlib.Path(self.config.data_dir) / domain.folder

    def _action_norm(self, domain: domains.Domain) -> tuple[domains.ActionNorm, dict[str, Any] | None]:
        """The statistics that unnormalize the model's actions (by its family's rule), and the split's for metrics:
        MultiNet's own, whichever unnormalize (the metrics are MultiNet's)."""
        kind = registry.family(self.model.family).action_normalization
        if domain.output is domains.Output.KNOWLEDGE_PROBES:  # no ground-truth actions: the checkpoint's stats
            return domains.ActionNorm(kind, self._checkpoint_stats(f"{domain.name}'s action probe")), None
        scoring = self._split_stats(domain, "multinet")
        if self.config.unnormalize == "checkpoint":
            return domains.ActionNorm(kind, self._checkpoint_stats("--unnormalize=checkpoint")), scoring
        split_stats = data.source_action_stats(self.sources[domain.name],
                                               kind="multinet" if self.config.unnormalize == "split" else "exact")
        rules = self.model.multinet_actions
        norm = domains.ActionNorm(kind, split_stats if rules is None else rules.split_statistics(domain.name, split_stats))
        if kind in registry.MEAN_STD_NORMALIZATIONS:
            check_split_std(domain.name, norm.stats)
        return norm, scoring

    def _split_stats(self, domain: domains.Domain, kind: str) -> dict[str, Any]:
        """The split's action statistics of `kind` (`data.source_action_stats`), over the ground truth as MultiNet's
        rules for the family's actions scored it (`Model.multinet_actions`)."""
        stats = data.source_action_stats(self.sources[domain.name], kind=kind)
        rules = self.model.multinet_actions
        if rules is not None and domain.output is domains.Output.CONTINUOUS_ACTIONS:  # what MultiNet scored against
            stats = domains.transformed_stats(stats, lambda values: rules.ground_truth(domain.name, values))
        return stats

    def _action_options(self, domain: domains.Domain, norm: domains.ActionNorm | None) -> InferenceOptions:
        """One domain's prediction settings: its decoding budget (token-decoded actions), then whatever MultiNet's
        rules for the family's actions set (`Model.multinet_actions`; checked before any model time)."""
        # Actions are greedy unless the protocol sampled them (Magma's Open-X).
        options = dataclasses.replace(self.inference_options, max_decoding_steps=self._decoding_steps(domain),
                                      temperature=domain.protocol.temperature or 0.0)
        rules = self.model.multinet_actions
        if rules is None or norm is None:
            return options
        return rules.options(domain.name, domain.output is domains.Output.CONTINUOUS_ACTIONS, norm.stats, options)

    def _checkpoint_stats(self, user: str) -> dict[str, Any]:
        """The checkpoint's action statistics (`Model.checkpoint_action_stats`, with `--unnorm_key` where it applies)."""
        stats = self.model.checkpoint_action_stats(self.config.unnorm_key)
        if stats is None:
            raise ValueError(f"{user} unnormalizes with the checkpoint's action norm stats, but {self.config.checkpoint} "
                             "has none (openpi's: assets/<asset id>/norm_stats.json; LeRobot's: the statistics of "
                             "policy_postprocessor.json's unnormalizer)")
        return stats

    # -- model -------------------------------------------------------------------------------------

    def _observation(self, domain: domains.Domain, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Host arrays of the model inputs; the models place them on the mesh (batch over "data")."""
        observation = data.model_inputs(batch)
        if self._prompt_holds_state(domain):
            observation.update(self.action_prompts(batch))
        if domain.output is domains.Output.KNOWLEDGE_PROBES:
            max_len = domain.protocol.truncation_length(self.config.max_token_len)
            observation.update(act2answer_probes.text_probe_inputs(batch, self.text_tokenizer, max_len, bundled=self.bundled_tokenizer))
        if self.bundled_tokenizer:
            observation["prompt"] = [prompt or "" for prompt in batch["prompt"]]
        chat = domain.protocol.chat
        if chat is not None and self.bundled_tokenizer and not domain.protocol.turn_by_turn:
            # The conversation MultiNet built around each prompt (padding rows: an empty question).
            observation["chat"] = [chat.messages(question if valid else chat.question_after)
                                   for question, valid in zip(batch[chat.question_field], np.asarray(batch["_mask"], bool))]
            observation["chat_tokenizer_bos"], observation["chat_max_tokens"] = chat.tokenizer_bos, chat.max_tokens
        return observation

    def _prompt_lengths(self, domain: domains.Domain, batch: Mapping[str, Any],
                        observation: Mapping[str, Any]) -> dict[str, PromptLengths | None]:
        """Each prompt's lengths and cuts by the prefix of its record fields (`runners.prompt_fields`): the prompt the
        prediction answers (""; on Act2Answer the text probe's question) and Act2Answer's action probe prompt
        (`runners.ACTION_PROBE`; None where that probe did not run)."""
        if domain.output is not domains.Output.KNOWLEDGE_PROBES:
            return {"": self._action_or_text_prompt_lengths(domain, batch, observation)}
        if self.bundled_tokenizer:  # the model formats and tokenizes the questions itself
            questions = self.model.prompt_lengths(act2answer_probes.text_probe_observation(observation), for_actions=False)
        else:
            questions = PromptLengths(observation[act2answer_probes.TEXT_PROMPT_TOKENS],
                                      domain.protocol.truncation_length(self.config.max_token_len))
        action = self._action_or_text_prompt_lengths(domain, batch, observation) if self._predicts_actions(domain) else None
        return {"": questions, runners.ACTION_PROBE: action}

    def _action_or_text_prompt_lengths(self, domain: domains.Domain, batch: Mapping[str, Any],
                                       observation: Mapping[str, Any]) -> PromptLengths:
        """The model's prompt (actions or text) as whoever tokenized it counted it: the model (a bundled tokenizer),
        the action prompts holding the state (`Model.action_prompts`, built and cut per batch) or the pipeline
        (`prompt_tokens`, cut at the protocol's length)."""
        if self.bundled_tokenizer:
            return self.model.prompt_lengths(observation, for_actions=domain.uses_actions)
        if self._prompt_holds_state(domain):
            return PromptLengths(observation["prompt_tokens"], self.action_prompts.limit)
        return PromptLengths(np.asarray(batch["prompt_tokens"]), domain.protocol.truncation_length(self.config.max_token_len))

    def _decoding_steps(self, domain: domains.Domain) -> int:
        return domain.protocol.decoding_budget(self.config.max_decoding_steps)

    def _temperature(self, domain: domains.Domain) -> float:
        """The protocol's sampling temperature where MultiNet sampled, else `--temperature`."""
        return self.config.temperature if domain.protocol.temperature is None else domain.protocol.temperature

    def _predicts_actions(self, domain: domains.Domain) -> bool:
        """Whether the model predicts actions on `domain` (on Act2Answer: whether its action probe applies)."""
        if domain.output is domains.Output.KNOWLEDGE_PROBES:
            return self.action_probe_unavailable is None
        return domain.uses_actions and self.predicts_actions

    def _sample_actions(self, observation: dict[str, np.ndarray], rng: jax.Array) -> Any:
        return self.model.predict_actions(observation, rng=rng, options=self.action_options)

    def _run_model(self, domain: domains.Domain, observation: dict[str, np.ndarray], rng: jax.Array) -> Any:
        """One model call on a batch, its randomness drawn from `rng` (per row, folded with the row's `sample_index`)."""
        if domain.output is domains.Output.KNOWLEDGE_PROBES:
            return act2answer_probes.run(self.model, observation, lambda inputs: self._sample_actions(inputs, rng),
                                         self.action_probe_unavailable)
        if domain.uses_actions:
            out = self._sample_actions(observation, rng)
        else:
            padded_vocabulary = self.manifest["domains"][domain.name]["protocol"]["logits_vocab_size"]
            out = self.model.sample_tokens(
                observation, rng=rng, max_decoding_steps=self._decoding_steps(domain), temperature=self._temperature(domain),
                openpi_exact=self.config.openpi_exact_decoding,
                **({"logits_vocab_size": padded_vocabulary} if padded_vocabulary else {}),
            )
        return np.asarray(jax.block_until_ready(out))

    # -- output mapping ----------------------------------------------------------------------------

    def _check_labeled(self, domain: domains.Domain, batch: Mapping[str, Any]) -> None:
        """Fails before any model time is spent when the split has no answers to score against."""
        for row in np.flatnonzero(np.asarray(batch["_mask"], bool)):
            preflight.check_labeled(self._domain_dir(domain), runners.plain(batch["id"][row]), batch["ground_truth"][row])

    # -- one domain --------------------------------------------------------------------------------

    def evaluate_domain(self, name: str) -> dict[str, Any]:
        domain = domain_for(self.config.model, name)
        is_writer = jax.process_index() == 0
        predictions_path = self._predictions_path(name)
        completed = (self.completed.pop(name) if name in self.completed else self._completed(predictions_path)) if is_writer else []
        completed = _resumed_on_every_process(completed)  # each process checks its own shard's written samples
        start_index = len(completed)
        timing = Timing()
        wall_start = time.perf_counter()
        dataset = self._dataset(domain)
        norm = None
        stats = None
        if self._predicts_actions(domain):
            norm, stats = self._action_norm(domain)
        elif domain.metric_kind == "continuous":  # actions answered in text: scored against MultiNet's statistics, which
            stats = data.source_action_stats(self.sources[domain.name], kind="multinet")  # its prompt printed too
        self.action_options = self._action_options(domain, norm)
        ordered = results.OrderedRecords(start_index)
        writer = results.PredictionWriter(predictions_path, next_index=start_index) if is_writer else None
        total = self._num_samples(domain)
        earlier = None
        if is_writer and start_index >= total:  # a finished domain resumed: only its metrics and plot are rewritten
            print(f"{name}: all {total} predictions are in {predictions_path}: nothing to recompute")
            earlier = summary.read_metrics(summary.metrics_path(self.output_dir, name))  # the throughput it measured
        if is_writer:  # earlier scores (of fewer samples, or ones a failed re-scoring would leave standing) are not shown
            summary.forget_scores(self.output_dir, name)
        progress = tqdm.tqdm(desc=name, unit="sample", initial=start_index, total=total,
                             disable=not is_writer or start_index >= total, dynamic_ncols=True)
        # A process's error (its shard's data, its model call, process 0's writing) is raised on every process by the
        # next gather, the one collective of a step (each process runs the model on its own devices): none is left
        # waiting in a gather the failing process never joins.
        failure: Exception | None = None
        try:
            batches = iter(dataset)
            has_more = True
            while has_more:
                batch, records = None, []
                try:
                    if failure is None:
                        with timing.clock("data"):
                            batch = next(batches, None)
                        if batch is not None and _has_pending(domain, self.model.multinet_actions, batch, start_index,
                                                              completed, predictions_path):
                            self._check_labeled(domain, batch)
                            batch_records = runners.runner_for(domain).records(self, domain, batch, norm, timing)
                            records = [r for r in batch_records if r["sample_index"] >= start_index]
                except Exception as error:  # raised by the gather below, on every process
                    failure = error
                with timing.clock("output"):
                    gathered, has_more = results.gather_records(records, has_more=batch is not None, failure=failure)
                    try:
                        ready = ordered.add(gathered)
                        if writer is not None:
                            writer.write(ready)
                    except Exception as error:  # raised by the next gather, on every process, or below
                        failure = error
                progress.update(len(gathered))
            if failure is not None:
                raise failure
        finally:
            progress.close()
            if writer is not None:
                writer.close()
        if ordered.leftover():
            raise results.ResultsError(
                f"{predictions_path}: samples {ordered.leftover()[:5]}... arrived without their predecessors; "
                "a data shard is missing samples"
            )
        if ordered.next_index != total:  # the last samples missing: no successor shows the gap
            raise results.ResultsError(f"{predictions_path}: holds samples 0..{ordered.next_index - 1} of {total}; the "
                                       "data yielded fewer samples than it counts")
        if not is_writer:
            return {}
        return self._finish_domain(domain, predictions_path, stats, timing, wall_start, start_index, earlier)

    def _predictions_path(self, name: str) -> pathlib.Path:
        return self.output_dir / "predictions" / f"{name}.jsonl"

    def _completed(self, path: pathlib.Path) -> list[results.Record]:
        if not path.exists():
            return []
        if not self.config.resume:
            raise FileExistsError(f"{path} exists; pass --resume to continue it or choose another --output_dir")
        completed = results.read_completed(path)
        if self.config.limit is not None and len(completed) > self.config.limit:
            raise results.ResultsError(
                f"{path}: holds {len(completed)} predictions, more than --limit={self.config.limit}; a resume only "
                f"continues a run: pass --limit={len(completed)} or more (or none), or choose another --output_dir"
            )
        return completed

    def _finish_domain(self, domain: domains.Domain, path: pathlib.Path, stats: dict | None, timing: Timing,
                       wall_start: float, resumed_from: int, earlier: Mapping[str, Any] | None) -> dict[str, Any]:
        """Scores the whole predictions file and writes the metrics file; `earlier`: the metrics file a finished
        domain had before this re-scoring (its throughput is the one measured then)."""
        with timing.clock("metrics"):
            records = results.read_completed(path)
            if not records:
                raise ValueError(f"{domain.name}: the dataset in {self.config.data_dir} yielded no samples")
            scored = metrics.score(domain.score_domain, records, **self._score_options(domain, stats))
            summary.plot_domain(summary.plot_path(self.output_dir, domain.name), domain, summary.json_safe(scored), records)
        wall_seconds = time.perf_counter() - wall_start
        evaluated = len(records) - resumed_from
        # None: no sample was predicted in this session and no earlier measurement survives (never a 0 samples/s)
        samples_per_second = evaluated / wall_seconds if evaluated else None
        metrics_path = summary.metrics_path(self.output_dir, domain.name)
        if evaluated == 0 and earlier is not None:  # a finished run re-scored: its throughput is the one it was measured at
            timing_seconds, shares = earlier["timing_seconds"], earlier["timing_shares"]
            samples_per_second, wall_seconds, resumed_from = (
                earlier["samples_per_second"], timing_seconds["wall"], earlier["resumed_from_sample"])
        else:
            timing_seconds, shares = {**dataclasses.asdict(timing), "wall": wall_seconds}, timing.shares()
        summary.write_json(metrics_path, {
            "domain": domain.name,
            "metric_kind": domain.metric_kind,
            "config": dataclasses.asdict(self.config),
            "protocol": domain.protocol.name,
            "protocol_settings": self.manifest["domains"][domain.name]["protocol"],
            "action_horizon": self.model.config.action_horizon if self._predicts_actions(domain) else None,
            # the Euler steps the actions were sampled with (--num_flow_steps or the checkpoint's own); None: no flow
            "num_flow_steps": self.num_flow_steps if self._predicts_actions(domain) else None,
            **self._actions_note(domain),
            **self._probe_note(domain),
            "inputs": {  # content fingerprints of what produced these numbers (see run_manifest.json)
                "checkpoint": self.manifest["checkpoint"],
                "tokenizers": self.manifest["tokenizers"],
                "data": self.manifest["domains"][domain.name]["data"],
            },
            "prompt_truncation": self._prompt_truncation(domain, records),
            **({"action_prompt_truncation": self._prompt_truncation(domain, records, runners.ACTION_PROBE)}
               if domain.output is domains.Output.KNOWLEDGE_PROBES else {}),
            "num_samples": len(records),
            **({metrics.SCORING_STATS_KEY: {key: stats[key] for key in ("min", "max", "mean")}}  # `score` reads it back
               if domain.metric_kind == "continuous" else {}),
            "resumed_from_sample": resumed_from,
            "timing_seconds": timing_seconds,
            "timing_shares": shares,
            "samples_per_second": samples_per_second,
            "metrics": scored,
        })
        return summary.row(domain, len(records), samples_per_second, wall_seconds, scored)

    def _actions_note(self, domain: domains.Domain) -> dict[str, Any]:
        """On Open-X, how the family's actions were decoded and converted where MultiNet's rules for it differ from
        the default (`Model.multinet_actions`), for the metrics JSON."""
        rules = self.model.multinet_actions
        if rules is None or domain.output is not domains.Output.CONTINUOUS_ACTIONS:
            return {}
        return rules.note(domain.name, self.action_options)

    def _probe_note(self, domain: domains.Domain) -> dict[str, Any]:
        """On Act2Answer, the frame the model's actions are read in (`preflight.action_frame`: its kind and where that
        was read; None without an action head): what the action probe took the displacement as, or why it did not run."""
        if domain.output is not domains.Output.KNOWLEDGE_PROBES:
            return {}
        return {"action_frame": None if self.action_frame is None else dataclasses.asdict(self.action_frame)}

    def _prompt_truncation(self, domain: domains.Domain, records: list[results.Record], prefix: str = "") -> dict[str, Any] | None:
        """How many prompts were cut, and at what length, from the records' own counts (`runners.prompt_fields`, the
        fields named with `prefix`): reported, and warned about on stderr, never refused (MultiNet cut some
        protocols' prompts silently)."""
        tokens, limit, cut = (prefix + name for name in (runners.PROMPT_TOKENS, runners.PROMPT_LIMIT, runners.PROMPT_CUT))
        counted = [record for record in records if record.get(cut) is not None]
        if not counted:
            return None
        limits = sorted({record[limit] for record in counted}, key=str)
        if len(limits) > 1:
            raise results.ResultsError(f"{self._predictions_path(domain.name)}: {limit} holds several lengths {limits} "
                                       "in one run; the file mixes runs")
        protocol = self.manifest["domains"][domain.name]["protocol"]
        recorded = protocol.get("action_max_prompt_tokens", protocol["max_prompt_tokens"]) if prefix else protocol["max_prompt_tokens"]
        if limits[0] != recorded:  # the manifest and metrics would state a cut the prompts never had
            raise results.ResultsError(f"{self._predictions_path(domain.name)}: {limit} is {limits[0]}, but the run "
                                       f"manifest records {what_prompts(prefix)} cut at {recorded} "
                                       f"({manifest.FILENAME}: domains.{domain.name}.protocol)")
        cuts = [record[cut] for record in counted]
        truncated = sum(value > 0 for value in cuts)
        longest = max(record[tokens] for record in counted)
        if truncated:
            print(f"warning: {domain.name}: {truncated} of {len(counted)} {what_prompts(prefix)} truncated to {limits[0]} tokens "
                  f"(longest {longest}, up to {max(cuts)} tokens cut)", file=sys.stderr)
        return {"max_prompt_tokens": limits[0], "truncated": truncated, "counted": len(counted),
                "longest_prompt_tokens": longest, "most_tokens_cut": max(cuts)}

    def _score_options(self, domain: domains.Domain, stats: dict | None) -> dict[str, Any]:
        if domain.metric_kind == "continuous":
            return {"action_stats": stats}
        if domain.metric_kind in metrics.SIMILARITY_KINDS:
            return {"embedder": self.embedder, "skip_similarity": self.config.skip_similarity}
        return {}


def check_split_std(name: str, stats: Mapping[str, Any]) -> None:
    """Actions are unnormalized with a std in every dim: MultiNet's float32 split statistics have none (NaN) where
    `E[x^2] - E[x]^2` cancels below zero, and MultiNet then counted every prediction invalid."""
    std = np.asarray(stats["std"], np.float64)
    if not np.isfinite(std).all():
        raise ValueError(f"{name}: MultiNet's split statistics have no std in dims {np.flatnonzero(~np.isfinite(std)).tolist()} "
                         "(its float32 E[x^2] - E[x]^2 falls below zero there: a small spread about a large mean), with "
                         "which MultiNet counted every prediction invalid; --unnormalize=split_exact unnormalizes with "
                         "the float64 statistics")


def _check_prompt_cut(config: EvalConfig, own_prompts: registry.OwnPrompts | None) -> None:
    """`--max_token_len` cuts the prompts the pipeline tokenizes; where every requested prompt is one the model builds
    itself (`registry.own_prompts`: Pi0.5's and Pi0-FAST's action prompts holding the state; a bundled tokenizer's
    are refused by the flags' own check), it would be recorded as applied to a run it never changed."""
    if config.max_token_len is None or own_prompts is None:
        return
    cut = [name for name in config.domains if not own_prompts.applies_to(domain := domain_for(config.model, name))
           or domain.output is domains.Output.KNOWLEDGE_PROBES]  # Act2Answer's questions are the pipeline's
    if not cut:
        raise ValueError(f"--max_token_len cuts text prompts and Act2Answer's questions; --domains {list(config.domains)} "
                         f"have none under --model={config.model}, whose action prompts hold the state and are cut at "
                         f"{config.checkpoint}'s max_token_len ({own_prompts.max_tokens})")


def _check_state_prompts(config: EvalConfig, own_prompts: registry.OwnPrompts | None) -> None:
    """`--nonormalize_state` changes the state written into action prompts (Pi0.5's, Pi0-FAST's); where no requested
    domain's prompts hold the state it would be recorded as applied to a run it never changed."""
    holds_state = own_prompts is not None and not own_prompts.every_prompt
    if config.normalize_state or (holds_state and any(domain_for(config.model, name).uses_actions for name in config.domains)):
        return
    raise ValueError(f"--nonormalize_state changes the state action prompts hold; --domains {list(config.domains)} under "
                     f"--model={config.model} ({config.checkpoint}) prompt with no state")


def what_prompts(prefix: str) -> str:
    """The prompts record fields named with `prefix` count (`runners.prompt_fields`), in words."""
    return f"{prefix.replace('_', ' ')}prompts"


def domain_for(model: str, name: str) -> domains.Domain:
    """Domain `name`'s table entry under the protocol MultiNet ran family `model` with: the family's own where the
    registry names one (`registry.Family.protocol`), MultiNet's Pi0 protocol otherwise."""
    domain = domains.lookup(name)
    family = registry.family(model)
    return domain if family.protocol is None else domain.under(family.protocol(domain.name))


def protocol_settings(config: EvalConfig, name: str, own_prompts: registry.OwnPrompts | None,
                      image_size: int = transforms.IMAGE_SIZE) -> dict[str, Any]:
    """Domain `name`'s MultiNet protocol as `config` applies it (`domains.Protocol.applied`): recorded in the run
    manifest, so a resume under another protocol is refused, and in the domain's metrics file. Families with their
    own tokenizer always decode as Hugging Face does, over their own vocabulary; the others read the prompt
    tokenizer's (PaliGemma's) and decode as openpi does. `own_prompts`: the prompts the model cuts itself and where
    (`registry.own_prompts`), recorded as their cut: on Act2Answer, whose text probe reads the pipeline's prompts,
    as the action probe's (`action_max_prompt_tokens`). `image_size`: the size the PaliGemma processor's resize
    targets (`registry.Family.processor_image_size`), recorded as `image_size` where it is not MultiNet's 224."""
    family = registry.family(config.model)
    domain = domain_for(config.model, name)
    decodes_tokens = family.decodes_tokens(domain)
    prompt_vocabulary = not family.bundles_tokenizer
    decoding = "openpi_window" if config.openpi_exact_decoding and prompt_vocabulary else "contiguous"
    applied = domain.protocol.applied(config.max_token_len, config.max_decoding_steps, decodes_tokens=decodes_tokens,
                                      decoding=decoding, pads_vocabulary=prompt_vocabulary)
    if domain.uses_actions and family.one_token_per_action_dim:
        applied["max_new_tokens"] = None  # as many tokens as action dims, whatever the budget
    if own_prompts is not None and own_prompts.applies_to(domain):
        probe = domain.output is domains.Output.KNOWLEDGE_PROBES and not own_prompts.every_prompt
        applied["action_max_prompt_tokens" if probe else "max_prompt_tokens"] = own_prompts.max_tokens
    # Actions unnormalized with openpi's quantile rule (Pi0.5, Pi0-FAST): recorded, as earlier versions used the
    # z-score rule for them (`manifest.ADDED_PROTOCOL_ENTRIES` reads an older run as False).
    quantiles = domain.uses_actions and family.action_normalization == "openpi_quantiles"
    # Actions unnormalized with LeRobot's z-score rule (SmolVLA): recorded, as earlier versions used openpi's, whose
    # epsilon moved them by 1e-6 x |action| (`manifest.ADDED_PROTOCOL_ENTRIES` reads an older run so).
    lerobot = {"lerobot_unnormalize": True} if domain.uses_actions and family.action_normalization == "lerobot_mean_std" \
        else {}
    # Act2Answer's action probe reads displacements in the robot's base frame (`act2answer_probes.action_choice`).
    probe_frame = {"action_probe_frame": "robot_base"} if domain.output is domains.Output.KNOWLEDGE_PROBES else {}
    # Overcooked's actions unnormalized with MultiNet's float32 running statistics (`data.source_action_stats`):
    # recorded, as earlier versions used the exact ones (`manifest.ADDED_PROTOCOL_ENTRIES` reads an older run so).
    running = domain.name == "overcooked_ai" and domain.uses_actions and not domain.protocol.answers_in_text \
        and family.action_normalization in registry.MEAN_STD_NORMALIZATIONS and config.unnormalize == "split"
    statistics = {"split_statistics": "openpi_running_float32"} if running else {}
    # Text-domain images resized to a checkpoint's own size (pt_448's): recorded, as earlier versions resized them to
    # 224 (`manifest.ADDED_PROTOCOL_ENTRIES` reads an older run so).
    size = {"image_size": image_size} if domain.protocol.resizes_on_host and image_size != transforms.IMAGE_SIZE else {}
    # Sampling through Hugging Face's top-k / top-p filters (Magma's): recorded where the domain samples, as earlier
    # versions sampled from the whole vocabulary (`manifest.ADDED_PROTOCOL_ENTRIES` reads an older run so).
    filters = {"sampling_filters": "hf_generate"} if family.samples_as_hf and _samples(config, domain) else {}
    return {**applied, "openpi_quantile_actions": quantiles, **lerobot, **probe_frame, **statistics, **size, **filters}


def _samples(config: EvalConfig, domain: domains.Domain) -> bool:
    """Whether `domain`'s outputs are sampled: at the protocol's temperature where MultiNet sampled, else text at
    `--temperature` (actions and option scores are greedy)."""
    if domain.protocol.temperature is not None:
        return domain.protocol.temperature > 0
    return domain.output is domains.Output.TEXT and config.temperature > 0


def _has_pending(domain: domains.Domain, rules: MultiNetActions | None, batch: Mapping[str, Any], start_index: int,
                 completed: list[results.Record], path: pathlib.Path) -> bool:
    """Whether a batch holds samples not yet written; checks the written ones still match the data (their ground truth
    as the records hold it: `runners.scored_ground_truth` with the family's `rules`, `Model.multinet_actions`)."""
    valid = np.asarray(batch["_mask"], bool)
    pending = False
    for row in np.flatnonzero(valid):
        index = int(batch["sample_index"][row])
        if index >= start_index:
            pending = True
        elif index < len(completed):
            data_fields = {field: runners.plain(batch[field][row]) for field in results.DATA_FIELDS if field in batch}
            results.check_resumed_sample(path, completed, index, str(runners.plain(batch["id"][row])),
                                         runners.scored_ground_truth(rules, domain, batch, row), data_fields)
    return pending


def _on_writer(step: Callable[[], Any]) -> Any:
    """Runs `step` on process 0 only and returns its result there (None elsewhere); if it raises, every process
    raises (no host is left waiting in a collective)."""
    failure, result = None, None
    if jax.process_index() == 0:
        try:
            result = step()
        except Exception as error:  # re-raised below, once every process knows
            failure = error
    if _broadcast_int(int(failure is not None)):
        raise failure if failure is not None else RuntimeError("process 0 refused the run; see its output")
    return result


def _check_same_run_everywhere(described: Mapping[str, Any], sample_counts: Mapping[str, int], limit: int | None) -> None:
    """Every process runs what process 0 records: the same checkpoint, tokenizers and data (by content, as the manifest
    fingerprints them), the same sample counts and `--limit`, the same domains in the same order, and the same
    prediction settings, protocols, attention, device layout and runtime. Each host reads its own disks and command
    line, and only process 0's are recorded: a host that differs would add predictions of another model, dataset or
    setting to the file process 0 writes, or (domains in another order, gathered step by step) another domain's."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    parts = {
        "checkpoint": (described["checkpoint"] or {}).get("sha256"),
        "tokenizers": {name: entry["sha256"] for name, entry in described["tokenizers"].items()},
        "data": {name: [entry["data"]["sha256"], sample_counts[name]] for name, entry in described["domains"].items()},
        "domain order": list(described["domains"]),
        "--limit": limit,
        "settings": described["settings"],
        "protocols": {name: entry["protocol"] for name, entry in described["domains"].items()},
        **{key: described[key] for key in ("attention", "layout", "runtime", "checkpoint_settings")},
    }
    digests = np.stack([np.frombuffer(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest(), np.uint8)
                        for value in parts.values()])
    gathered = np.asarray(multihost_utils.process_allgather(digests)).reshape(jax.process_count(), len(parts), -1)
    differing = [name for index, name in enumerate(parts) if (gathered[:, index] != gathered[0, index]).any()]
    if differing:
        others = [process for process in range(jax.process_count()) if not np.array_equal(gathered[process], gathered[0])]
        raise manifest.RunChangedError(
            f"processes {others} run otherwise than process 0: {', '.join(differing)} differ (every host must run the "
            "same command on the same files); this host's data: "
            + ", ".join(f"{name} {entry['data']['path']} ({sample_counts[name]} samples)" for name, entry in described["domains"].items()))


def _resumed_on_every_process(completed: list[results.Record]) -> list[results.Record]:
    """Process 0's written records (what a resume compares of them: id, ground truth, `results.DATA_FIELDS`) on every
    process: each checks the resumed samples of its own data shard (`_has_pending`), so a record edited in another
    host's shard is refused as one in process 0's is."""
    if jax.process_count() == 1:
        return completed
    from jax.experimental import multihost_utils

    compared = ("id", "ground_truth", *results.DATA_FIELDS)
    text = json.dumps([{key: record[key] for key in compared if key in record} for record in completed]).encode() \
        if jax.process_index() == 0 else b""
    buffer = np.zeros(_broadcast_int(len(text)), np.uint8)
    buffer[:len(text)] = np.frombuffer(text, np.uint8)
    shared = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return completed if jax.process_index() == 0 else json.loads(shared.tobytes())


def _broadcast_int(value: int) -> int:
    """Process 0's value on every process (how many samples the predictions file already holds)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


class EvaluationFailed(Exception):
    """Some domains failed mid-run; the others finished and the summary marks the failed ones."""

    def __init__(self, failures: Mapping[str, Exception], output_dir: pathlib.Path):
        self.failures = dict(failures)
        listed = "; ".join(f"{name}: {type(error).__name__}: {error}" for name, error in failures.items())
        super().__init__(f"{output_dir}: {len(failures)} domain(s) failed, the summary marks them: {listed}")


def evaluate(config: EvalConfig) -> dict[str, dict[str, Any]]:
    """Evaluates `config.checkpoint` on every domain in `config.domains`; returns the summary rows.

    Writes `predictions/<domain>.jsonl`, `<domain>_metrics.json`, `plots/<domain>.png`, `summary.json`
    and `summary.csv` under `config.output_dir` (process 0 only), which it holds alone for the whole run: another
    `evaluate` into the same folder is refused (`preflight.lock_output_dir`). Inputs are checked before the first batch;
    a domain that fails mid-run anyway does not stop the others: the summary marks it failed (with the error),
    and `EvaluationFailed` is raised once the summary is written.
    """
    output_dir = pathlib.Path(config.output_dir)
    lock = _on_writer(lambda: preflight.lock_output_dir(output_dir))  # for the whole run, before anything is read
    try:
        return _evaluate_locked(config, output_dir)
    finally:
        if lock is not None:
            lock.release()


def _evaluate_locked(config: EvalConfig, output_dir: pathlib.Path) -> dict[str, dict[str, Any]]:
    """`evaluate` once process 0 owns `output_dir` (the other processes write nothing)."""
    evaluator = Evaluator(config)
    rows: dict[str, dict[str, Any]] = {}
    failures: dict[str, Exception] = {}
    for name in config.domains:
        logging.info("evaluating %s", name)
        try:
            rows[name] = evaluator.evaluate_domain(name)
        except Exception as error:  # recorded, reported after the other domains (see the docstring)
            logging.error("%s failed: %s: %s", name, type(error).__name__, error)
            failures[name] = error
            rows[name] = summary.failed_row(error)
    if jax.process_index() == 0:
        earlier = [name for name in evaluator.recorded_domains if name not in rows]
        rows = {**summary.read_rows(output_dir, earlier), **rows}  # domains an earlier run of this folder added
        summary.write_summary(output_dir, rows)
        print(summary.format_table(rows))
        if config.skip_similarity and config.similarity_domains():
            print(f"similarity metrics skipped (--skip_similarity): {', '.join(config.similarity_domains())}")
        print(f"results: {output_dir.resolve()}")
        print(f"next: multinet-jax report {output_dir}  (tables and plots of this run; more run folders side by side)")
    if failures:
        raise EvaluationFailed(failures, output_dir)
    return rows
