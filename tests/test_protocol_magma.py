"""MultiNet's Magma protocol (`models/magma_protocol.py`) against what MultiNet's own Magma scripts built when run.

`fixtures/multinet_magma_generated.json` was written by running those scripts (ManifoldRG/MultiNet d6fe80e,
`src/v1/modules/Magma/scripts/`) unmodified on `../shared/data/multinet_sample` with a scripted stand-in model
(`fixtures/README.md`): the conversations, the text Magma's chat template made of them, the `generate` arguments,
the scripted outputs and what the scripts made of them. Every expected value below is read from it; the project's
side is built from the same data by the project's own sources, protocol and model code.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

import eval_helpers
from conftest import shared_path
from magma_helpers import magma_dir, magma_model
from multinet_jax import data, domains, metrics
from multinet_jax.eval import loop, preflight, runners
from multinet_jax.models import magma_protocol, registry
from multinet_jax.models.interface import InferenceOptions
from multinet_jax.models.magma_inputs import MagmaTokenizer, chat_text

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "multinet_magma_generated.json"


@functools.cache
def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


@functools.cache
def bos() -> str:
    return MagmaTokenizer(magma_dir()).bos_token


def samples(domain: str, directory: pathlib.Path, cache_dir: pathlib.Path, split: str = "public") -> list[dict]:
    source = data.make_source(domain, directory, split=split, cache_dir=cache_dir)
    return [source[index] for index in range(len(source))]


def rendered(domain: str, prompt: str, image_start_end: bool) -> str:
    """The text Magma's chat template makes of the protocol's conversation around a domain's prompt."""
    return chat_text(magma_protocol.domain_protocol(domain).chat.messages(prompt), bos(), image_start_end)


def check_generation(domain: str, reference: dict) -> None:
    """Budget, sampling and how the chat was tokenized, as the script's `generate` and template calls had them."""
    protocol, kwargs = magma_protocol.domain_protocol(domain), reference["generate_kwargs"][0]
    assert all(call == kwargs for call in reference["generate_kwargs"]), domain
    assert protocol.max_new_tokens == kwargs["max_new_tokens"], domain
    assert protocol.temperature == (kwargs["temperature"] if kwargs["do_sample"] else None), domain
    # apply_chat_template(tokenize=True) adds no BOS of the tokenizer's; the processor's call on the text does
    assert protocol.chat.tokenizer_bos == (not reference["chat_template_kwargs"][0]["tokenize"]), domain
    template = reference["chat_template_kwargs"][0]
    assert protocol.chat.max_tokens == (template["max_length"] if template.get("truncation") else None), domain


def check_text_domain(domain: str, ours: list[dict], reference: dict) -> None:
    """Our samples' conversations rendered as MultiNet's (as multisets: the scripts' order may differ) and each
    image reaching the processor at its own size."""
    texts = [rendered(domain, sample["prompt"], image_start_end=True) for sample in ours]
    assert sorted(texts) == sorted(reference["chat_template_text"]), domain
    if "image_sizes" in reference:
        sizes = [[list(sample["image"].shape[1::-1])] for sample in ours]
        assert sorted(zip(texts, sizes)) == sorted(zip(reference["chat_template_text"], reference["image_sizes"])), domain
    check_generation(domain, reference)


# ---------------------------------------------------------------------------------------------------- Open-X


@pytest.fixture(scope="module")
def bimanual(tmp_path_factory) -> tuple[list[dict], dict]:
    directory = shared_path("data", "multinet_sample", "openx_bimanual")
    cache_dir = tmp_path_factory.mktemp("cache")
    return (samples("openx_bimanual", directory, cache_dir),
            data.action_stats("openx_bimanual", directory, split="public", cache_dir=cache_dir, kind="multinet"))


def test_openx_conversation_budget_and_sampling_are_multinets(bimanual):
    ours, _ = bimanual
    for reference in fixture()["openx"].values():
        assert len(ours) == len(reference["chat_template_text"])
        for sample, template_text, processor_text, sizes in zip(ours, reference["chat_template_text"],
                                                                 reference["processor_texts"], reference["image_sizes"]):
            assert rendered("openx_bimanual", sample["prompt"], image_start_end=False) == template_text
            assert rendered("openx_bimanual", sample["prompt"], image_start_end=True) == processor_text
            assert [list(sample["image"].shape[1::-1])] == sizes  # the frame at its own size
        check_generation("openx_bimanual", reference)


def fixture_predictions(reference: dict, stats: dict, domain: str) -> list[list[float] | None]:
    """The project's predictions from the fixture's generated ids: Magma's action ids and decoding, then the rules on
    `domain`, unnormalized with the statistics they take from the split's raw `stats`."""
    model = magma_model()
    width = max(len(row) for row in reference["generated_ids"])
    generated = np.array([row + [model.tokenizer.pad_id] * (width - len(row)) for row in reference["generated_ids"]])
    rules = magma_protocol.MultiNetActions()
    norm = domains.ActionNorm(registry.family(model.family).action_normalization, rules.split_statistics(domain, stats))
    return rules.predictions(model.decoded_actions(generated)[:, None, :], norm, domain)


def test_a_14_dim_split_gets_multinets_zero_padded_predictions(bimanual):
    """Under the script's default dataset name nothing transforms the 14-dim ground truth: the 7 decoded dims are
    zero-padded to 14 and unnormalized with the split's q01 / q99."""
    ours, stats = bimanual
    reference = fixture()["openx"]["openx"]
    for key in ("q01", "q99"):
        np.testing.assert_allclose(stats[key], reference["action_stats"][key], rtol=1e-6, atol=0, err_msg=key)
    np.testing.assert_array_equal([sample["ground_truth"] for sample in ours], reference["ground_truth"])
    predictions = fixture_predictions(reference, stats, "openx")
    early = [index for index, row in enumerate(reference["generated_ids"]) if len(row) < magma_protocol.ACTION_DIM + 1]
    assert early == [3]
    for index, (prediction, expected) in enumerate(zip(predictions, reference["predictions"])):
        if index in early:  # MultiNet's slice read prompt ids as actions there; here the row is invalid
            assert prediction is None and np.all(np.isfinite(expected))
        else:
            assert len(prediction) == 14 and prediction[7:] == pytest.approx(np.asarray(stats["q01"][7:]) / 2 + np.asarray(stats["q99"][7:]) / 2)
            np.testing.assert_allclose(prediction, expected, rtol=1e-6, atol=1e-9)


def test_bimanual_is_scored_on_multinets_last_seven_dims(bimanual):
    """As MultiNet named the dataset, its script scored the ground truth's last 7 dims with statistics recomputed over
    them: the project's rule gives the same ground truth, statistics and predictions from the same generated ids."""
    ours, stats = bimanual
    reference = fixture()["openx"]["openx_bimanual"]
    rules = magma_protocol.MultiNetActions()
    scored = domains.transformed_stats(stats, lambda values: rules.ground_truth("openx_bimanual", values))
    for key in ("q01", "q99", "min", "max", "mean"):
        np.testing.assert_allclose(scored[key], reference["action_stats"][key], rtol=1e-6, atol=1e-12, err_msg=key)
    truth = [rules.ground_truth("openx_bimanual", np.asarray(sample["ground_truth"])).tolist() for sample in ours]
    np.testing.assert_array_equal(truth, reference["ground_truth"])
    predictions = fixture_predictions(reference, stats, "openx_bimanual")
    for index, (prediction, expected) in enumerate(zip(predictions, reference["predictions"])):
        if index == 3:  # MultiNet's slice read prompt ids as actions there; here the row is invalid
            assert prediction is None
        else:
            np.testing.assert_allclose(prediction, expected, rtol=1e-6, atol=1e-9)
    assert "last 7 of 14 dims" in magma_protocol.ground_truth_note("openx_bimanual")


def test_wheeled_robot_ground_truth_is_multinets_transform():
    reference = fixture()["openx_wheeled_robot_transform"]
    ours = magma_protocol.MultiNetActions().ground_truth("openx_wheeled_robot", np.asarray(reference["actions"], np.float32))
    np.testing.assert_array_equal(ours, reference["transformed"])


def test_an_early_eos_row_is_an_invalid_prediction_and_counted(bimanual):
    ours, stats = bimanual
    reference = fixture()["openx"]["openx"]
    model = magma_model()
    width = max(len(row) for row in reference["generated_ids"])
    generated = np.array([row + [model.tokenizer.pad_id] * (width - len(row)) for row in reference["generated_ids"]])
    domain = loop.domain_for("magma", "openx_bimanual")
    rules = magma_protocol.MultiNetActions()
    batch = {"_mask": np.ones(len(ours), bool), "id": [sample["id"] for sample in ours],
             "sample_index": np.arange(len(ours)), "ground_truth": [sample["ground_truth"] for sample in ours]}
    norm = domains.ActionNorm("quantiles", rules.split_statistics("openx_bimanual", stats))
    stats = domains.transformed_stats(stats, lambda values: rules.ground_truth("openx_bimanual", values))
    records = runners.SingleCall.output_records(model.tokenizer, rules, domain, batch, model.decoded_actions(generated)[:, None, :],
                                                norm)
    assert [record["prediction"] is None for record in records] == [index == 3 for index in range(len(ours))]
    assert all(len(record["ground_truth"]) == len(record["prediction"] or range(7)) == 7 for record in records)
    scored = metrics.score("openx_bimanual", records, action_stats=stats)
    assert scored["total_invalid_preds"] == 1
    assert scored["action_slices_not_scored"] == "['arm1', 'arm2'] span 14 dims, the ground truth has 7"


def test_a_chat_longer_than_its_max_tokens_is_cut_on_the_right():
    model = magma_model()
    text = chat_text([{"role": "user", "content": "move the cup " * 40}], model.tokenizer.bos_token, False)
    ids = model.tokenizer.encode_continuation(text)
    batch = model.batch([text], [[]], tokenizer_bos=False, max_tokens=16)
    assert len(ids) > 16 and batch.mask.sum() == 16 and batch.tokens[0, :16].tolist() == ids[:16]


@pytest.mark.parametrize("name", ["openx_bimanual", "act2answer"])
def test_a_budget_without_room_for_the_action_ids_is_refused_at_preflight(name):
    """Both action rules (MultiNet's Open-X one and SimplerEnv's step) read 7 ids and the token after them: a smaller
    budget fails from the flags, before the model loads; 8 runs."""
    with pytest.raises(ValueError, match=rf"^--max_decoding_steps=7: --model=magma on {name} reads 7 action ids and the "
                                         r"token after them \((protocol magma_simplerenv_step|protocol multinet_v1_magma)\): pass at least 8$"):
        preflight.check_protocols("magma", (name,), 7)
    preflight.check_protocols("magma", (name,), 8)
    preflight.check_protocols("magma", ("piqa",), 1)  # a text answer reads what it gets


def test_sampled_actions_are_reproducible_from_the_seed():
    """MultiNet's temperature 0.7 from one key folded with each row's sample index: the same key gives the same
    actions, another key other ones."""
    model = magma_model()
    image = np.asarray(Image.new("RGB", (64, 48), (120, 30, 200)))
    observation = {"image/base_0_rgb": np.stack([image, image]), "prompt": ["pick up the cup", "open the drawer"],
                   "sample_index": np.array([0, 1])}
    options = InferenceOptions(max_decoding_steps=24, temperature=magma_protocol.OPENX_TEMPERATURE)
    first, again = (model.predict_actions(observation, rng=jax.random.key(5), options=options) for _ in range(2))
    other = model.predict_actions(observation, rng=jax.random.key(6), options=options)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(np.nan_to_num(first, nan=9.0), np.nan_to_num(other, nan=9.0))


# ---------------------------------------------------------------------------------------------------- text


def test_piqa_is_multinets(tmp_path):
    reference = fixture()["piqa"]
    ours = samples("piqa", shared_path("data", "multinet_sample", "piqa"), tmp_path)
    assert [rendered("piqa", s["prompt"], True) for s in ours] == reference["chat_template_text"]  # batched in order
    assert [magma_protocol.domain_protocol("piqa").chat.messages(s["prompt"]) for s in ours] == reference["chats"]
    check_text_domain("piqa", ours, reference)
    parsed = [domains.parse_text_magma("multiple_choice", answer, {}) for answer in reference["answers"]]
    assert parsed == [None if value == -1 else value for value in reference["parsed"]]


def test_piqa_is_scored_as_multinets_magma_script(tmp_path):
    """MultiNet's Magma PIQA script counted any number valid (a number naming no choice is wrong, not invalid): the
    project's records of its answers, decoded and parsed by the runner, score to the script's own metrics."""
    reference = fixture()["piqa"]
    tokenizer = MagmaTokenizer(magma_dir())
    rows = [tokenizer.encode_continuation(answer) + [tokenizer.eos_id] for answer in reference["answers"]]
    raw = np.array([row + [tokenizer.pad_id] * (max(map(len, rows)) - len(row)) for row in rows])
    count = len(rows)
    batch = {"_mask": np.ones(count, bool), "id": [str(index) for index in range(count)], "sample_index": np.arange(count),
             "ground_truth": reference["ground_truth"]}
    records = runners.SingleCall.output_records(tokenizer, None, loop.domain_for("magma", "piqa"), batch, raw, None)
    assert [record["prediction"] for record in records] == [None if value == -1 else value for value in reference["parsed"]]
    scored, expected = metrics.score("piqa", records), reference["metrics"]
    assert scored["valid_predictions"] == expected["valid_predictions"] and scored["total_invalid_preds"] == expected["invalid_predictions"]
    assert scored["valid_accuracy"] == pytest.approx(expected["exact_match_rate"])
    assert scored["overall_accuracy"] == pytest.approx(expected["exact_match_rate_with_invalids"])
    assert scored["invalid_percentage"] == pytest.approx(expected["percentage_invalids"])
    pi0_rule = [{key: value for key, value in record.items() if key != metrics.ANSWER_RULE_FIELD} for record in records]
    assert metrics.score("piqa", pi0_rule)["valid_predictions"] < expected["valid_predictions"]  # 2 is invalid there
    with pytest.raises(ValueError, match="records mix answer rules"):
        metrics.score("piqa", records[:1] + pi0_rule[1:])


def test_odinw_is_multinets(tmp_path):
    reference = fixture()["odinw"]
    check_text_domain("odinw", samples("odinw", shared_path("data", "multinet_sample", "odinw"), tmp_path), reference)
    for subset, result in reference["subsets"].items():
        sample = {"num_options": domains.ODINW_SUBSET_CLASSES[subset]}
        parsed = [domains.parse_text_magma("classification", answer, sample) for answer in result["answers"]]
        assert parsed == [None if value == -1 else value for value in result["parsed"]], subset


def test_sqa3d_is_multinets(tmp_path):
    reference = fixture()["sqa3d"]
    constructed = json.loads((FIXTURE.parent / "multinet_generated.json").read_text())["sqa3d"]
    (tmp_path / "v1_balanced_questions_test_scannetv2.json").write_text(json.dumps({"questions": constructed["questions"]}))
    (tmp_path / "v1_balanced_sqa_annotations_test_scannetv2.json").write_text(json.dumps({"annotations": constructed["annotations"]}))
    for scene in constructed["scenes_with_image"]:
        Image.new("RGB", (4, 4)).save(tmp_path / f"{scene}_vh_clean_top_down.png")
    check_text_domain("sqa3d", samples("sqa3d", tmp_path, tmp_path / "cache", split="test"), reference)
    parsed = [domains.parse_text_magma("vqa", answer, {}) for answer in reference["answers"]]
    assert parsed == reference["parsed"]


def test_robovqa_is_multinets(tmp_path):
    reference = fixture()["robovqa"]
    ours = samples("openx_multi_embodiment", shared_path("data", "multinet_sample", "openx_multi_embodiment"), tmp_path)
    check_text_domain("openx_multi_embodiment", ours, reference)
    assert [domains.parse_text_magma("vqa", answer, {}) for answer in reference["answers"]] == reference["parsed"]


class RecordingEmbedder(metrics.SentenceEmbedder):
    """Keeps the (text, reference) pairs `score` asks the similarity of; every similarity 0."""

    def __init__(self):
        self.pairs = []

    def similarity(self, texts, references):
        self.pairs += [[text, reference] for text, reference in zip(texts, references)]
        return np.zeros(len(texts))


@pytest.mark.parametrize("domain, script", [("sqa3d", "sqa3d"), ("openx_multi_embodiment", "robovqa")])
def test_vqa_is_scored_as_multinets_magma_scripts(domain, script):
    """MultiNet's Magma SQA3D and RoboVQA scripts compared their normalized answer with the label as written
    (`fixtures/multinet_magma_vqa.json`, their parsing and `_calculate_final_metrics` run on constructed answers): the
    project's records of those answers, decoded and parsed by the runner, score to the scripts' own exact-match and
    validity counts, and the similarity compares the texts the script compared."""
    reference = json.loads((FIXTURE.parent / "multinet_magma_vqa.json").read_text())[script]
    answered = [row for row, answer in enumerate(reference["answers"]) if answer is not None]  # the model writes text
    assert [domains.parse_text_magma("vqa", reference["answers"][row], {}) for row in answered] == [
        reference["parsed"][row] for row in answered]
    tokenizer = MagmaTokenizer(magma_dir())
    rows = [tokenizer.encode_continuation(reference["answers"][row]) + [tokenizer.eos_id] for row in answered]
    raw = np.array([row + [tokenizer.pad_id] * (max(map(len, rows)) - len(row)) for row in rows])
    batch = {"_mask": np.ones(len(rows), bool), "id": [str(row) for row in answered], "sample_index": np.arange(len(rows)),
             "ground_truth": [reference["labels"][row] for row in answered]}
    records = runners.SingleCall.output_records(tokenizer, None, loop.domain_for("magma", domain), batch, raw, None)
    assert [record["prediction"] for record in records] == [reference["parsed"][row] for row in answered]
    unanswered = [{"id": str(row), "prediction": None, "ground_truth": reference["labels"][row],
                   metrics.ANSWER_RULE_FIELD: metrics.MAGMA_SCRIPTS_RULE}
                  for row, answer in enumerate(reference["answers"]) if answer is None]
    embedder = RecordingEmbedder()
    scored, expected = metrics.score(domain, records + unanswered, embedder=embedder), reference["metrics"]
    assert scored["exact_match_accuracy"] == pytest.approx(expected["exact_match_rate_with_invalids"], rel=1e-12)
    assert scored["total_invalid_preds"] == expected["invalid_predictions"]
    assert scored["invalid_percentage"] == pytest.approx(expected["percentage_invalids"], rel=1e-12)
    assert sorted(embedder.pairs) == sorted(reference["similarity_pairs"])
    closing = next(record for record in records if record["raw_output"] == "Close the drawer.")  # label "Close the drawer"
    assert metrics.score(domain, [closing], skip_similarity=True)["exact_match_accuracy"] == 0.0
    pi0_rule = {key: value for key, value in closing.items() if key != metrics.ANSWER_RULE_FIELD}
    assert metrics.score(domain, [pi0_rule], skip_similarity=True)["exact_match_accuracy"] == 1.0  # both normalized


class ScriptedEvaluator:
    """What `TurnByTurn` reads of the evaluator, answering each conversation's turn with MultiNet's scripted answer
    for it and keeping the conversations it was given."""

    bundled_tokenizer = True
    rng = jax.random.key(0)

    def __init__(self, responses: list[list[str]], ids: list[str]):
        self.model = magma_model()  # the runner counts each turn's prompt with the model's own tokenizer
        self.tokenizer = MagmaTokenizer(magma_dir())
        self.text_tokenizer = self.tokenizer
        self.responses, self.ids, self.turn, self.chats = responses, ids, 0, []

    def _observation(self, domain, batch):
        self.batch_ids = [str(value) for value in batch["id"]]
        self.turn = 0
        return data.model_inputs(batch)  # as `loop.Evaluator` gives it, for the prompt count

    def _run_model(self, domain, observation, rng):
        rows = []
        for row, chat in enumerate(observation["chat"]):
            conversation = self.ids.index(self.batch_ids[row]) if self.batch_ids[row] in self.ids else None
            answers = self.responses[conversation] if conversation is not None else []
            if self.turn < len(answers):
                self.chats.append(chat_text(chat, self.tokenizer.bos_token, False))
            answer = answers[self.turn] if self.turn < len(answers) else ""
            rows.append(self.tokenizer.encode_continuation(answer) + [self.tokenizer.eos_id])
        self.turn += 1
        width = max(len(row) for row in rows)
        return np.array([row + [self.tokenizer.pad_id] * (width - len(row)) for row in rows])


def test_bfcl_conversations_are_multinets(tmp_path):
    """The runner's chat history, turn by turn, with MultiNet's answers scripted back: every conversation it builds is
    one MultiNet's script built (which also re-sent finished ones while its batch went on), one per turn."""
    reference = fixture()["bfcl"]
    directory = shared_path("data", "multinet_sample", "bfcl_v3")
    ours = samples("bfcl", directory, tmp_path)
    evaluator = ScriptedEvaluator(reference["responses"], [sample["id"] for sample in ours])
    domain = loop.domain_for("magma", "bfcl")
    source = data.make_source("bfcl", directory, split="public", cache_dir=tmp_path)
    for batch in data.load_source(source, batch_size=2, shard_index=0, shard_count=1, protocol=domain.protocol):
        records = runners.TurnByTurn().records(evaluator, domain, batch, None, loop.Timing())
        for record in records:
            assert record["responses"] == reference["responses"][evaluator.ids.index(record["id"])]
            # the longest turn's prompt, counted as the chat MultiNet's script sent, cut at its 1024 tokens
            assert record["prompt_token_limit"] == domain.protocol.chat.max_tokens
            assert record["prompt_tokens_cut"] == max(0, record["prompt_tokens"] - domain.protocol.chat.max_tokens)
            assert record["prompt_tokens"] > 0
    assert len(evaluator.chats) == sum(len(turns) for turns in reference["responses"])
    assert set(evaluator.chats) <= set(reference["chat_template_text"])
    check_generation("bfcl", reference)


# ---------------------------------------------------------------------------------------------------- eval


@pytest.mark.parametrize("flagfile, domains_run", [("magma_openx.flags", "openx_bimanual"),
                                                   ("magma_text.flags", "piqa,odinw,openx_multi_embodiment,bfcl"),
                                                   ("magma_games.flags", "overcooked_ai")])
def test_magma_flagfiles_run_the_protocol_on_the_demo(tmp_path, flagfile, domains_run):
    paths = eval_helpers.assets()
    result = eval_helpers.run_eval([f"--flagfile=flags/{flagfile}", f"--checkpoint={magma_dir()}", f"--data_dir={paths['data_dir']}",
                                    f"--cache_dir={paths['cache_dir']}", "--split=public", f"--domains={domains_run}", "--limit=2",
                                    "--batch_size=2", "--skip_similarity", "--seed=3", f"--output_dir={tmp_path}"], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    for name in domains_run.split(","):
        written = json.loads((tmp_path / f"{name}_metrics.json").read_text())
        assert written["protocol"] == written["protocol_settings"]["name"] == magma_protocol.PROTOCOL_NAME
        assert written["config"]["seed"] == 3
        assert written["protocol_settings"]["max_new_tokens"] == magma_protocol.domain_protocol(name).max_new_tokens
        records = eval_helpers.read_jsonl(tmp_path / "predictions" / f"{name}.jsonl")
        assert len(records) == 2
    if flagfile == "magma_openx.flags":
        assert written["protocol_settings"]["temperature"] == magma_protocol.OPENX_TEMPERATURE
        assert written["magma_actions"]["temperature"] == magma_protocol.OPENX_TEMPERATURE
        dims = len(records[0]["ground_truth"])
        assert all(record["prediction"] is None or len(record["prediction"]) == dims for record in records)


def test_answers_end_at_any_of_the_generation_configs_stop_ids():
    """A `generation_config.json` listing several `eos_token_id`s (Llama-3-Instruct's end-of-text and end-of-turn):
    generation stops at each, and what `sample_tokens` writes after it (0, "!" in Llama-3's vocabulary) is padding,
    which HF's generate + decode never shows."""
    plain = MagmaTokenizer(magma_dir())
    answer = plain.encode_continuation("pick up the block")
    second_stop = plain.encode_continuation(" bowl")[-1]
    tokenizer = MagmaTokenizer(magma_dir(), [plain.eos_id, second_stop])
    assert plain.decode([0]) != ""
    generated = [*answer, second_stop, 0, 0, 0]
    assert runners.decode_text(tokenizer, generated) == plain.decode(answer).strip() == "pick up the block"
