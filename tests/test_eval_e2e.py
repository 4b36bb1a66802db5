"""`multinet-jax eval` end to end with the tiny checkpoints on every domain's (generated) real-format data.

Expectations come from outside the evaluator: the generator's own arrays and files, the model called
directly, numpy re-computations of MultiNet's rules, the PNG signature.
"""

from __future__ import annotations

import collections
import csv
import json
import pathlib

import jax
import numpy as np
import pytest

import eval_helpers
from conftest import shared_path
from multinet_jax import assets, data, domains, metrics
from multinet_jax.eval import summary
from multinet_jax.demo import datasets

ACTION_AND_CHOICE_DOMAINS = ("openx_bimanual", "overcooked_ai", "piqa", "odinw")
SIMILARITY_DOMAINS = ("openx_multi_embodiment", "sqa3d", "bfcl")
LIMIT = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def source_opens() -> collections.Counter:
    """How many times `pi0_run` opened each domain's data source (`data.make_source` calls, by canonical domain)."""
    return collections.Counter()


@pytest.fixture(scope="module")
def pi0_run(tmp_path_factory, source_opens) -> pathlib.Path:
    output_dir = tmp_path_factory.mktemp("pi0_run")
    make_source = data.make_source

    def counted(domain, *args, **kwargs):
        source_opens[domains.canonical(domain)] += 1
        return make_source(domain, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "make_source", counted)  # also what `data.load` and `data.action_stats` call
        # float32 (not eval's bfloat16 default) so the model called directly below, at another batch size, agrees to 1e-4.
        eval_helpers.evaluate(output_dir, ACTION_AND_CHOICE_DOMAINS, limit=LIMIT, dtype="float32")
    return output_dir


def test_each_domains_data_source_is_opened_once(pi0_run, source_opens):
    """Preflight, the sample count, the split's action statistics and the dataset share one source per domain
    (the Open-X and Overcooked domains here unnormalize with the split's statistics, which preflight also checks)."""
    assert dict(source_opens) == {domain: 1 for domain in ACTION_AND_CHOICE_DOMAINS}


def _records(output_dir: pathlib.Path, domain: str) -> list[dict]:
    return eval_helpers.read_jsonl(output_dir / "predictions" / f"{domain}.jsonl")


def _metrics(output_dir: pathlib.Path, domain: str) -> dict:
    return json.loads((output_dir / f"{domain}_metrics.json").read_text())


@pytest.mark.parametrize("domain", ACTION_AND_CHOICE_DOMAINS)
def test_every_sample_written_once_in_order_with_metrics_plot_and_config(pi0_run, domain):
    records = _records(pi0_run, domain)
    assert [r["sample_index"] for r in records] == list(range(LIMIT))
    assert len({r["id"] for r in records}) == LIMIT
    metrics_file = _metrics(pi0_run, domain)
    assert metrics_file["num_samples"] == LIMIT
    assert metrics_file["config"]["checkpoint"] == eval_helpers.assets()["checkpoint"]
    assert metrics_file["action_horizon"] == (50 if domains.lookup(domain).uses_actions else None)  # the tiny Pi0's
    assert set(domains.lookup(domain).headline_metrics) <= set(metrics_file["metrics"])
    assert set(metrics_file["timing_seconds"]) == {"data", "model", "output", "metrics", "wall"}
    assert (pi0_run / "plots" / f"{domain}.png").read_bytes().startswith(PNG_SIGNATURE)


def test_openx_predictions_are_the_models_first_step_unnormalized_with_split_stats(pi0_run):
    from multinet_jax import models, tokenizers

    records = _records(pi0_run, "openx_bimanual")
    actions = datasets.openx_actions()  # what the generator wrote, independent of the reader
    np.testing.assert_allclose([r["ground_truth"] for r in records], actions[:LIMIT], rtol=1e-6)

    paths = eval_helpers.assets()
    model = models.load_model(paths["checkpoint"])
    tokenizer = tokenizers.PaliGemmaTokenizer(paths["tokenizer"])
    batch = next(iter(data.load("openx_bimanual", pathlib.Path(paths["data_dir"]) / "openx_bimanual", split="public",
                                tokenizer=tokenizer, batch_size=LIMIT, limit=LIMIT, cache_dir=paths["cache_dir"])))
    observation = {k: v for k, v in batch.items() if k.startswith(("image", "state", "tokenized"))}
    observation["sample_index"] = np.asarray(batch["sample_index"], np.int32)
    raw = np.asarray(model.sample_actions(observation, rng=jax.random.key(0)))
    mean, std = actions.astype(np.float64).mean(axis=0), actions.astype(np.float64).std(axis=0)
    expected = raw[:, 0, :14] * (std + 1e-6) + mean  # openpi's Unnormalize with the split's z-score stats
    np.testing.assert_allclose([r["prediction"] for r in records], expected, rtol=1e-4, atol=1e-5)

    errors = np.abs(np.asarray([r["prediction"] for r in records]) - actions[:LIMIT]).mean(axis=1)
    assert _metrics(pi0_run, "openx_bimanual")["metrics"]["avg_dataset_amae"] == pytest.approx(errors.mean(), rel=1e-6)


def test_openx_predictions_rescore_to_the_runs_numbers_with_its_metrics_file(pi0_run):
    """The metrics file records the split statistics it scored with (MultiNet's, over the whole split): `score`
    given that file re-scores the predictions to the same numbers; from the 8 records' own ground truth it would
    not (the run scored 8 of the split's samples)."""
    metrics_path = pi0_run / "openx_bimanual_metrics.json"
    recorded = _metrics(pi0_run, "openx_bimanual")
    split = data.action_stats("openx_bimanual", pathlib.Path(eval_helpers.assets()["data_dir"]) / "openx_bimanual",
                              split="public", cache_dir=eval_helpers.assets()["cache_dir"], kind="multinet")
    assert recorded[metrics.SCORING_STATS_KEY] == {key: split[key] for key in ("min", "max", "mean")}
    records = _records(pi0_run, "openx_bimanual")
    rescored = metrics.score("openx_bimanual", records, action_stats=metrics.load_action_stats(metrics_path))
    assert summary.json_safe(rescored) == recorded["metrics"]
    assert summary.json_safe(metrics.score("openx_bimanual", records))["avg_baseline_relative_mae"] != recorded["metrics"]["avg_baseline_relative_mae"]
    assert metrics.SCORING_STATS_KEY not in _metrics(pi0_run, "piqa")
    with pytest.raises(ValueError, match="piqa_metrics.json: a metrics file without 'scoring_action_stats'"):
        metrics.load_action_stats(pi0_run / "piqa_metrics.json")
    # Named for the domain scored, another dataset's statistics are refused (many share a width); `openx` takes any.
    assert metrics.load_action_stats(metrics_path, "openx") == metrics.load_action_stats(metrics_path, "openx_bimanual")
    with pytest.raises(ValueError, match="field 'domain': the statistics of 'openx_bimanual', not of the domain scored"):
        metrics.load_action_stats(metrics_path, "openx_aloha_mobile")


def test_split_exact_unnormalizes_with_exact_statistics_and_scores_with_multinets(tmp_path):
    """--unnormalize=split_exact changes how actions are unnormalized, not the statistics MultiNet's metrics use."""
    paths = eval_helpers.assets()
    eval_helpers.evaluate(tmp_path, ("openx_bimanual",), limit=4, unnormalize="split_exact")
    directory = pathlib.Path(paths["data_dir"]) / "openx_bimanual"
    multinet, exact = (data.action_stats("openx_bimanual", directory, split="public", cache_dir=paths["cache_dir"], kind=kind)
                       for kind in ("multinet", "exact"))
    assert multinet["mean"] != exact["mean"]  # float32 sums against float64
    assert _metrics(tmp_path, "openx_bimanual")[metrics.SCORING_STATS_KEY]["mean"] == multinet["mean"]


def test_piqa_ground_truth_is_the_files_label_and_accuracy_counts_invalid_as_wrong(pi0_run):
    labels = [json.loads(line)["label"] for line in (pathlib.Path(eval_helpers.assets()["data_dir"]) / "piqa/public/piqa.jsonl").read_text().splitlines()]
    records = _records(pi0_run, "piqa")
    assert [r["ground_truth"] for r in records] == labels[:LIMIT]
    for record in records:  # MultiNet's rule, re-applied to the raw text
        assert record["prediction"] == ({"0": 0, "1": 1}.get(record["raw_output"].strip()))
    accuracy = np.mean([r["prediction"] == r["ground_truth"] for r in records])
    assert _metrics(pi0_run, "piqa")["metrics"]["overall_accuracy"] == pytest.approx(accuracy)


def test_overcooked_predictions_are_valid_joint_actions_or_invalid(pi0_run):
    records = _records(pi0_run, "overcooked_ai")
    assert all(r["prediction"] is None or 0 <= r["prediction"] < 36 for r in records)
    invalid = sum(r["prediction"] is None for r in records)
    assert _metrics(pi0_run, "overcooked_ai")["metrics"]["total_invalid_preds"] == invalid


def test_odinw_records_carry_the_number_of_options(pi0_run):
    records = _records(pi0_run, "odinw")
    assert {r["num_options"] for r in records} == {5, 2}  # the generator's two subsets, root categories left out
    assert all(0 <= r["ground_truth"] < r["num_options"] for r in records)
    scored = _metrics(pi0_run, "odinw")["metrics"]  # MultiNet scored ODinW subset by subset
    assert set(scored["per_subset"]) == {r["subset"] for r in records} == {"AerialMaritimeDrone", "NorthAmericaMushrooms"}
    for subset, subset_metrics in scored["per_subset"].items():
        subset_records = [r for r in records if r["subset"] == subset]
        assert subset_metrics["total_samples"] == len(subset_records)
        accuracy = np.mean([r["prediction"] == r["ground_truth"] for r in subset_records])
        assert subset_metrics["overall_accuracy"] == pytest.approx(accuracy)
    # the headline is the subsets' mean, as MultiNet reported ODinW, in the metrics file and in the summary
    for metric in ("overall_accuracy", "macro_f1", "invalid_percentage"):
        mean = np.mean([m[metric] for m in scored["per_subset"].values()])
        assert scored[metric] == pytest.approx(mean)
        assert json.loads((pi0_run / "summary.json").read_text())["odinw"][metric] == pytest.approx(mean)


def test_summary_json_and_csv_cover_every_domain(pi0_run):
    summary = json.loads((pi0_run / "summary.json").read_text())
    assert list(summary) == list(ACTION_AND_CHOICE_DOMAINS)
    with open(pi0_run / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["domain"] for row in rows} == set(ACTION_AND_CHOICE_DOMAINS)
    for domain in ACTION_AND_CHOICE_DOMAINS:
        assert summary[domain]["num_samples"] == LIMIT
        assert summary[domain]["samples_per_second"] > 0


def test_similarity_domains_end_to_end(tmp_path):
    embedder = shared_path("models", "all-MiniLM-L6-v2")
    eval_helpers.evaluate(tmp_path, SIMILARITY_DOMAINS, limit=4, embedder_dir=str(embedder))
    for domain in SIMILARITY_DOMAINS:
        records = _records(tmp_path, domain)
        assert [r["sample_index"] for r in records] == list(range(len(records)))
        assert 0 < len(records) <= 4
        metrics = _metrics(tmp_path, domain)["metrics"]
        assert set(domains.lookup(domain).headline_metrics) <= set(metrics)
    for record in _records(tmp_path, "bfcl"):  # one model answer per turn, the turn's calls parsed from it
        assert len(record["prediction"]) == len(record["ground_truth"]) == len(record["responses"])
        assert record["prediction"] == [domains.parse_function_calls(response) for response in record["responses"]]
    for domain in SIMILARITY_DOMAINS:  # untruncated prompts, reported as such
        truncation = _metrics(tmp_path, domain)["prompt_truncation"]
        assert truncation["max_prompt_tokens"] is None and truncation["truncated"] == 0 and truncation["longest_prompt_tokens"] > 0


def test_similarity_domains_with_skip_similarity_score_the_rest_and_say_so(tmp_path, capsys):
    eval_helpers.evaluate(tmp_path, SIMILARITY_DOMAINS, limit=4, skip_similarity=True)
    assert f"similarity metrics skipped (--skip_similarity): {', '.join(SIMILARITY_DOMAINS)}" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    for domain in SIMILARITY_DOMAINS:
        records, metrics_file = _records(tmp_path, domain), _metrics(tmp_path, domain)
        assert metrics_file["config"]["skip_similarity"] is True
        scored = metrics_file["metrics"]
        assert scored["similarity_metrics"] == "skipped (no sentence embedder given)"
        assert [name for name in scored if "similarity" in name] == ["similarity_metrics"]
        assert scored["total_samples"] == len(records) and "exact_match_accuracy" in summary[domain]
    for domain in ("openx_multi_embodiment", "sqa3d"):
        invalid = sum(r["prediction"] is None for r in _records(tmp_path, domain))
        assert _metrics(tmp_path, domain)["metrics"]["total_invalid_preds"] == invalid
    predicted_calls = sum(len(turn) for r in _records(tmp_path, "bfcl") for turn in r["prediction"])
    assert _metrics(tmp_path, "bfcl")["metrics"]["total_predicted_functions"] == predicted_calls


def test_similarity_domains_resolve_the_public_embedder_before_any_work(tmp_path):
    # Tests run offline with an empty hub cache: the default embedder is named, with the command that fetches it.
    with pytest.raises(assets.AssetError, match="sentence-transformers/all-MiniLM-L6-v2: not in the Hugging Face "
                       "cache .*`multinet-jax fetch sentence-transformers/all-MiniLM-L6-v2`"):
        eval_helpers.evaluate(tmp_path, ("piqa", "bfcl"))
    with pytest.raises(ValueError, match="contradict"):
        eval_helpers.evaluate(tmp_path, ("sqa3d",), skip_similarity=True, embedder_dir="unused")
    assert not any(tmp_path.iterdir())


def test_pi0_fast_on_actions_and_text(tmp_path):
    paths = eval_helpers.assets()
    eval_helpers.evaluate(tmp_path, ("openx_bimanual", "piqa"), limit=4, model="pi0_fast",
                          checkpoint=paths["fast_checkpoint"], fast_tokenizer=paths["fast_tokenizer"])
    for record in _records(tmp_path, "openx_bimanual"):  # random FAST tokens rarely form a chunk: invalid is fine
        assert record["prediction"] is None or len(record["prediction"]) == 14
    assert len(_records(tmp_path, "piqa")) == 4


def test_model_family_mismatch_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match="holds a pi0 model .*, but --model=pi0_fast"):
        eval_helpers.evaluate(tmp_path, ("piqa",), model="pi0_fast", fast_tokenizer=eval_helpers.assets()["fast_tokenizer"])
    assert not any(tmp_path.iterdir())


def test_pi05_on_actions_with_its_state_prompt_and_on_text(tmp_path):
    """Pi0.5 (openpi's tiny fixture checkpoint) end to end: Open-X actions from the prompt with the discretized
    state, recomputed here by calling the model directly; PIQA text from its PaliGemma backbone."""
    from multinet_jax import models, tokenizers

    paths = eval_helpers.assets()
    checkpoint = str(shared_path("openpi_reference", "pi05", "ckpt", "0"))
    eval_helpers.evaluate(tmp_path, ("openx_bimanual", "piqa"), limit=4, model=None, checkpoint=checkpoint)
    config = _metrics(tmp_path, "openx_bimanual")["config"]
    assert config["model"] == "pi05"  # no --model: inferred from the checkpoint's parameters
    assert config["dtype"] == "bfloat16"  # eval's default: openpi's policy dtype
    assert len(_records(tmp_path, "piqa")) == 4

    model = models.load_model(checkpoint, dtype="bfloat16")
    assert model.config.max_token_len == 200
    tokenizer = tokenizers.PaliGemmaTokenizer(paths["tokenizer"])
    batch = next(iter(data.load("openx_bimanual", pathlib.Path(paths["data_dir"]) / "openx_bimanual", split="public",
                                tokenizer=None, batch_size=4, limit=4, cache_dir=paths["cache_dir"])))
    # openpi's order: the unpadded state, quantile-normalized with the checkpoint's state q01/q99, then 256 bins
    source = data.make_source("openx_bimanual", pathlib.Path(paths["data_dir"]) / "openx_bimanual", split="public",
                              cache_dir=paths["cache_dir"])
    states = [np.asarray(source[i]["state"], np.float64).reshape(-1) for i in range(4)]
    assert [len(state) for state in states] == batch["state_dim"].tolist() and len(states[0]) < 32
    q01, q99 = (np.asarray(model.norm_stats["state"][key], np.float64) for key in ("q01", "q99"))
    normalized = [(state - q01[:len(state)]) / (q99[:len(state)] - q01[:len(state)] + 1e-6) * 2 - 1 for state in states]
    prompts = [tokenizer.tokenize_prompt(p, 200, state=s) for p, s in zip(batch["prompt"], normalized)]
    observation = {k: v for k, v in batch.items() if k.startswith(("image", "state"))}
    observation["tokenized_prompt"] = np.stack([ids for ids, _ in prompts])
    observation["tokenized_prompt_mask"] = np.stack([mask for _, mask in prompts])
    observation["sample_index"] = np.asarray(batch["sample_index"], np.int32)
    raw = np.asarray(model.sample_actions(observation, rng=jax.random.key(0)), np.float64)
    records = _records(tmp_path, "openx_bimanual")
    np.testing.assert_allclose([r["raw_output"] for r in records], raw[:, 0], rtol=1e-5, atol=1e-5)
    # unnormalized as openpi's Pi0.5 policy does (its quantile rule), with the split's q01 / q99
    actions = datasets.openx_actions()
    q01, q99 = (np.quantile(actions, q, axis=0).astype(np.float64) for q in (0.01, 0.99))
    outputs = np.asarray([r["raw_output"] for r in records], np.float64)[:, :14]
    expected = (outputs + 1.0) / 2.0 * (q99 - q01 + 1e-6) + q01
    np.testing.assert_allclose([r["prediction"] for r in records], expected, rtol=1e-6, atol=1e-6)
    assert _metrics(tmp_path, "openx_bimanual")["protocol_settings"]["openpi_quantile_actions"] is True


def test_pi05_libero_acts_from_pi0s_prompt_without_the_state(tmp_path, capsys):
    """openpi's pi05_libero (Pi0.5 with `discrete_state_input=False`; here openpi's tiny Pi0.5 in a folder of that
    name) end to end: Open-X actions from the pipeline's Pi0 prompt, no state anywhere, in 10-step chunks; recomputed
    by calling the model directly on the batch the pipeline builds for Pi0."""
    from multinet_jax import models, tokenizers

    paths = eval_helpers.assets()
    checkpoint = tmp_path / "pi05_libero"
    checkpoint.symlink_to(shared_path("openpi_reference", "pi05", "ckpt", "0"))
    eval_helpers.evaluate(tmp_path / "run", ("openx_bimanual",), limit=4, model=None, checkpoint=str(checkpoint))
    assert _metrics(tmp_path / "run", "openx_bimanual")["action_horizon"] == 10
    assert (f"eval: {checkpoint} is named for an openpi training config, which sets action_horizon=10, discrete_state_input=False"
            in capsys.readouterr().out)

    model = models.load_model(checkpoint, dtype="bfloat16")
    batch = next(iter(data.load("openx_bimanual", pathlib.Path(paths["data_dir"]) / "openx_bimanual", split="public",
                                tokenizer=tokenizers.PaliGemmaTokenizer(paths["tokenizer"]), batch_size=4, limit=4,
                                cache_dir=paths["cache_dir"])))
    observation = data.model_inputs(batch)
    observation["state"] = np.full_like(observation["state"], 1e3)  # never read: a Pi0.5 has no state projection
    raw = np.asarray(model.sample_actions(observation, rng=jax.random.key(0)), np.float64)
    assert raw.shape[1] == 10
    records = _records(tmp_path / "run", "openx_bimanual")
    np.testing.assert_allclose([r["raw_output"] for r in records], raw[:, 0], rtol=1e-5, atol=1e-5)


def test_decoding_switch_is_recorded_and_changes_the_tokens(tmp_path):
    """--noopenpi_exact_decoding (corrected masking, contiguous positions) is a setting that changes predictions:
    the metrics file records it, and on PIQA (every camera masked) the positions alone change the decoded text of
    openpi's tiny Pi0 fixture (a chaotic random model; the demo's Pi0 repeats one token whatever the positions)."""
    checkpoint = str(shared_path("openpi_reference", "pi0", "ckpt", "0"))
    runs = {}
    for exact in (True, False):
        output_dir = tmp_path / str(exact)
        eval_helpers.evaluate(output_dir, ("piqa",), limit=4, checkpoint=checkpoint, openpi_exact_decoding=exact)
        assert _metrics(output_dir, "piqa")["config"]["openpi_exact_decoding"] is exact
        runs[exact] = [r["raw_output"] for r in _records(output_dir, "piqa")]
    assert runs[True] != runs[False]


def test_prompt_truncation_is_counted_reported_and_warned(tmp_path, capsys):
    eval_helpers.evaluate(tmp_path, ("piqa",), limit=4, max_token_len=16, max_decoding_steps=None)
    records, metrics_file = _records(tmp_path, "piqa"), _metrics(tmp_path, "piqa")
    assert all(r["prompt_tokens"] > 16 for r in records)  # the full lengths, not the truncated ones
    assert all(r["prompt_token_limit"] == 16 and r["prompt_tokens_cut"] == r["prompt_tokens"] - 16 for r in records)
    assert metrics_file["prompt_truncation"] == {
        "max_prompt_tokens": 16, "truncated": 4, "counted": 4, "longest_prompt_tokens": max(r["prompt_tokens"] for r in records),
        "most_tokens_cut": max(r["prompt_tokens"] for r in records) - 16}
    assert metrics_file["protocol"] == "multinet_v1" and metrics_file["protocol_settings"]["max_new_tokens"] == 10  # PIQA's budget
    assert metrics_file["protocol_settings"]["max_prompt_tokens"] == 16  # the override, recorded
    assert "warning: piqa: 4 of 4 prompts truncated to 16 tokens" in capsys.readouterr().err
