"""Every domain's prompt, ground truth, options and prompt tokens against what MultiNet's own code built.

`../shared/multinet_reference/multinet_built_prompts.json` was written by MultiNet's dataloaders and prompt code
(ManifoldRG/MultiNet d6fe80e; ManifoldRG/openpi f3c69f2, BFCL d88fd33) on `../shared/data/multinet_sample`, with the
token ids Hugging Face's `PaliGemmaProcessor` gave each text prompt after its image tokens; its generator is beside
it. What the sample lacks (SQA3D, conversations without a configuration or a path, Overcooked's fallbacks) comes
from `fixtures/multinet_generated.json`, written the same way on small constructed inputs (`fixtures/README.md`).
Tokens come from the project's pipeline with PaliGemma's tokenizer rebuilt from the Gemma vocabulary.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re

import pytest
from PIL import Image

from conftest import shared_path
from multinet_jax import data, domains
from multinet_jax.data.overcooked import parse_joint_action
from tokenizers_helpers import build_test_paligemma

SAMPLE = ("data", "multinet_sample")
GENERATED = pathlib.Path(__file__).parent / "fixtures" / "multinet_generated.json"


@functools.cache
def built() -> dict:
    return json.loads(shared_path("multinet_reference", "multinet_built_prompts.json").read_text())


@functools.cache
def generated() -> dict:
    return json.loads(GENERATED.read_text())


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_test_paligemma(tmp_path_factory.mktemp("paligemma"))


def tokenized(domain: str, directory: pathlib.Path, tokenizer, **options) -> list[dict]:
    """The pipeline's samples (prompt tokens included), in order."""
    dataset = data.load(domain, directory, tokenizer=tokenizer, shard_index=0, shard_count=1, **options)
    return [dict(sample) for sample in dataset]


def prompt_ids(sample: dict) -> list[int]:
    return sample["tokenized_prompt"][sample["tokenized_prompt_mask"]].tolist()


def test_piqa_is_multinets(tokenizer):
    samples = tokenized("piqa", shared_path(*SAMPLE, "piqa"), tokenizer, split="public")
    assert len(samples) == len(built()["piqa"])
    for sample, reference in zip(samples, built()["piqa"]):
        assert sample["prompt"] == reference["prompt"]
        assert prompt_ids(sample) == reference["token_ids"]
        # The public sample has no labels: MultiNet's 0 is its dataloader's default, which the project never scores.
        assert sample["ground_truth"] is None and reference["ground_truth"] == 0


def test_odinw_is_multinets(tokenizer):
    samples = tokenized("odinw", shared_path(*SAMPLE, "odinw"), tokenizer, split="public")
    assert [sample["id"] for sample in samples] == [f"{ref['subset']}/{ref['file']}" for ref in built()["odinw"]]
    for sample, reference in zip(samples, built()["odinw"]):
        assert sample["prompt"] == reference["prompt"]
        assert sample["ground_truth"] == reference["ground_truth"]
        assert sample["options"] == reference["options"]
        assert prompt_ids(sample) == reference["token_ids"]
        # MultiNet's valid answers: its table's class count, which is the number of options.
        assert int(sample["num_options"]) == len(reference["options"]) == domains.ODINW_SUBSET_CLASSES[reference["subset"]]


def test_odinw_refuses_categories_that_disagree_with_multinets_table(tmp_path):
    subset = tmp_path / "odinw" / "NorthAmericaMushrooms"
    original = shared_path(*SAMPLE, "odinw", "public", "NorthAmericaMushrooms")
    subset.mkdir(parents=True)
    categories = json.loads((original / "categories.json").read_text())
    categories["categories"].append({"id": 9, "name": "morel", "supercategory": "mushroom"})
    (subset / "categories.json").write_text(json.dumps(categories))
    (subset / "object_caption_pairs.json").write_text((original / "object_caption_pairs.json").read_text())
    with pytest.raises(ValueError, match=r"categories.json: 3 categories under the root .* gives NorthAmericaMushrooms 2"):
        data.make_source("odinw", tmp_path / "odinw")


def test_bfcl_first_turn_is_multinets(tokenizer):
    samples = tokenized("bfcl", shared_path(*SAMPLE, "bfcl_v3"), tokenizer, split="public")
    assert [sample["id"] for sample in samples] == [reference["id"] for reference in built()["bfcl"]]
    for sample, reference in zip(samples, built()["bfcl"]):
        assert sample["prompt"] == reference["first_turn_prompt"]
        assert sample["ground_truth"] == reference["ground_truth"]
        assert prompt_ids(sample) == reference["token_ids"]


def test_robovqa_is_multinets(tokenizer, tmp_path):
    pytest.importorskip("tensorflow")
    samples = tokenized("openx_multi_embodiment", shared_path(*SAMPLE, "openx_multi_embodiment"), tokenizer, split="public",
                        cache_dir=tmp_path)
    assert len(samples) == len(built()["robovqa"])
    for sample, reference in zip(samples, built()["robovqa"]):
        assert sample["prompt"] == reference["prompt"]
        assert sample["ground_truth"] == reference["answer"]
        assert prompt_ids(sample) == reference["token_ids"]


def test_overcooked_is_multinets():
    source = data.make_source("overcooked_ai", shared_path(*SAMPLE, "overcooked_ai", "public"))
    for reference in built()["overcooked"]:
        sample = source[reference["index"]]
        assert sample["prompt"] == reference["prompt"]
        assert sample["ground_truth"] == reference["ground_truth"]


@pytest.mark.parametrize("case", generated()["overcooked"], ids=lambda case: case["joint_action"])
def test_overcooked_joint_actions_map_as_multinets(case):
    """MultiNet's fallbacks: a player's move that is not a list is STAY for that player only; a joint action that is
    not a two-item list, or holds a move outside the six, is (STAY, STAY)."""
    joint, (p0, p1), _ = parse_joint_action(case["joint_action"])
    assert joint == case["multinet_index"] == 6 * p0 + p1


def test_overcooked_refuses_a_joint_action_that_is_no_literal():
    with pytest.raises(ValueError, match="not a joint action literal"):  # MultiNet's dataloader raised as well
        parse_joint_action("[[0, 1], north]")


def test_sqa3d_is_multinets(tmp_path):
    """SQA3D's published format written from the generated fixture's questions; MultiNet's dataloader skipped the
    question without an annotation, its script the one whose scene has no image, and wrote "Situation:" only when
    there is one."""
    reference = generated()["sqa3d"]
    (tmp_path / "v1_balanced_questions_test_scannetv2.json").write_text(json.dumps({"questions": reference["questions"]}))
    (tmp_path / "v1_balanced_sqa_annotations_test_scannetv2.json").write_text(json.dumps({"annotations": reference["annotations"]}))
    for scene in reference["scenes_with_image"]:
        Image.new("RGB", (4, 4)).save(tmp_path / f"{scene}_vh_clean_top_down.png")
    source = data.make_source("sqa3d", tmp_path, split="test")
    assert [source[i]["id"] for i in range(len(source))] == [str(sample["question_id"]) for sample in reference["multinet"]]
    for index, expected in enumerate(reference["multinet"]):
        assert source[index]["prompt"] == expected["prompt"]
        assert source[index]["ground_truth"] == expected["answer"]
    assert source.skipped_without_annotation == 1 and source.skipped_without_image == 1


def test_decoding_budgets_are_the_documents():
    rows = {row.split("|")[1].strip(): row for row in
            shared_path("multinet_reference", "pi0_text_protocol.md").read_text().splitlines() if row.startswith("| ")}
    for domain, row_name in (("piqa", "PIQA"), ("odinw", "ODinW"), ("sqa3d", "SQA3D"), ("openx_multi_embodiment", "RoboVQA"), ("bfcl", "BFCL")):
        decoding = rows[row_name].split("|")[3]
        assert domains.lookup(domain).protocol.max_new_tokens == int(re.search(r"\d+", decoding).group()), domain
    assert "max_token_len=256" in rows["Overcooked"] and domains.lookup("overcooked_ai").protocol.max_prompt_tokens == 256
    assert "48 tokens" in rows["Open-X"] and domains.OPENX_PROTOCOL.max_prompt_tokens == 48
