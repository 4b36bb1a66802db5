"""Act2Answer items, scenes and the `act2answer` data domain on a generated item set and harness-layout assets."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from act2answer_helpers import item_set, png_bytes, write_glb
from conftest import REPO_ROOT
from multinet_jax import data
from multinet_jax.act2answer import generated, items, render_scene
from multinet_jax.data import BadRecordError


def _solid(colour) -> np.ndarray:
    return np.full((64, 64, 3), colour, np.uint8)


def _colour_mass(image: np.ndarray, colour) -> tuple[int, int]:
    """Pixels close to `colour` in the left and right halves."""
    close = np.abs(image.astype(int) - np.array(colour)).sum(-1) < 60
    half = image.shape[1] // 2
    return int(close[:, :half].sum()), int(close[:, half:].sum())


def test_generated_set_has_the_harness_fields_and_is_deterministic(tmp_path):
    first, second = item_set(tmp_path / "a"), item_set(tmp_path / "b")
    assert (first / "pairs.json").read_bytes() == (second / "pairs.json").read_bytes()
    pairs = json.loads((first / "pairs.json").read_text())
    assert len(pairs) == 2 * len(generated.CATEGORIES)
    for pair in pairs:
        assert {"index", "left", "right", "question", "knowledge_instruction", "answer", "semantic_answer",
                "left_label", "right_label", "knowledge_category"} <= set(pair)
        correct = pair["left_label"] if pair["answer"] == "Left" else pair["right_label"]
        assert correct == pair["semantic_answer"]
        for side in ("left", "right"):
            assert (first / "images" / f"{pair[side]}.png").read_bytes() == (second / "images" / f"{pair[side]}.png").read_bytes()


def test_colour_items_show_the_named_colour_on_the_answer_tile(tmp_path):
    directory = item_set(tmp_path)
    for pair in json.loads((directory / "pairs.json").read_text()):
        if pair["knowledge_category"] != "color":
            continue
        asset = pair[pair["answer"].lower()]
        centre = np.asarray(Image.open(directory / "images" / f"{asset}.png"))[64, 64]
        assert tuple(centre) == generated._COLOURS[pair["semantic_answer"]]


def test_composite_puts_the_left_picture_on_the_left():
    red, blue = (220, 30, 30), (30, 30, 220)
    scene = render_scene(_solid(red), _solid(blue))
    assert scene.shape == (224, 224, 3) and scene.dtype == np.uint8
    red_left, red_right = _colour_mass(scene, red)
    blue_left, blue_right = _colour_mass(scene, blue)
    assert red_left > 300 and red_right == 0 and blue_right > 300 and blue_left == 0


def test_source_episodes_both_layouts_with_flipped_targets(tmp_path):
    directory = item_set(tmp_path)
    pairs = json.loads((directory / "pairs.json").read_text())
    source = data.make_source("act2answer", directory)
    assert len(source) == 2 * len(pairs)
    for position, pair in enumerate(pairs):
        original, swapped = source[2 * position], source[2 * position + 1]
        answer = 0 if pair["answer"] == "Left" else 1
        assert (original["id"], swapped["id"]) == (f"{pair['index']}/original", f"{pair['index']}/swapped")
        assert (original["ground_truth"], swapped["ground_truth"]) == (answer, 1 - answer)
        assert original["option_labels"] == [pair["left_label"], pair["right_label"]] == swapped["option_labels"][::-1]
        assert original["option_labels"][answer] == swapped["option_labels"][1 - answer] == pair["semantic_answer"]
        assert original["prompt"] == pair["knowledge_instruction"] and original["question"] == pair["question"]
        assert original["category"] == pair["knowledge_category"] and original["scene"] == "composite"
        if pair["knowledge_category"] == "color":  # the swapped scene shows the answer's colour on the other side
            colour = generated._COLOURS[pair["semantic_answer"]]
            left, right = _colour_mass(original["image"], colour)
            assert (left > right) == (answer == 0)
            left, right = _colour_mass(swapped["image"], colour)
            assert (left > right) == (answer == 1)


def test_candidates_from_harness_glb_meshes(tmp_path):
    directory = item_set(tmp_path / "set")
    pairs = json.loads((directory / "pairs.json").read_text())
    embedded, beside = pairs[0]["left"], pairs[0]["right"]
    pictures = {asset: np.asarray(Image.open(directory / "images" / f"{asset}.png")) for asset in (embedded, beside)}
    write_glb(directory / "shapes" / embedded / "textured.glb", pictures[embedded][::-1].copy())
    write_glb(directory / "shapes" / beside / "textured.glb", pictures[beside][:, ::-1].copy(), embedded=False)
    np.testing.assert_array_equal(items.candidate_image(directory, embedded, "t", "r", "left"), pictures[embedded][::-1])
    np.testing.assert_array_equal(items.candidate_image(directory, beside, "t", "r", "right"), pictures[beside][:, ::-1])


def test_simulator_first_frames_replace_the_composite(tmp_path):
    directory = item_set(tmp_path / "set", items_per_category=1)
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    expected = {}
    for pair in json.loads((directory / "pairs.json").read_text()):
        for layout in ("original", "swapped"):
            frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            (frames / f"{pair['index']}_{layout}.png").write_bytes(png_bytes(frame))
            expected[f"{pair['index']}/{layout}"] = frame
    source = data.make_source("act2answer", directory, frames_dir=frames)
    for index in range(len(source)):
        sample = source[index]
        assert sample["scene"] == "simulator"
        np.testing.assert_array_equal(sample["image"], expected[sample["id"]])
    batch = next(iter(data.load("act2answer", directory, frames_dir=frames, batch_size=2, shard_index=0, shard_count=1)))
    # the frames at their own size, uint8: the model resizes them as openpi does (models.observation.resize_with_pad)
    assert batch["image/base_0_rgb"].shape == (2, 48, 64, 3) and batch["scene"] == ["simulator", "simulator"]
    # An item set's own first_frames/ folder is used without the option.
    shutil.copytree(frames, directory / "first_frames")
    assert data.make_source("act2answer", directory)[0]["scene"] == "simulator"


def test_missing_frame_is_a_bad_record_not_a_composite(tmp_path):
    directory = item_set(tmp_path / "set", items_per_category=1)
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0_original.png").write_bytes(png_bytes(_solid((1, 2, 3))))
    source = data.make_source("act2answer", directory, frames_dir=frames)
    assert source[0]["scene"] == "simulator"
    with pytest.raises(BadRecordError, match=r"pairs.json\[0\] \(swapped\): field 'first_frame': no 0_swapped"):
        source[1]
    batch = next(iter(data.load("act2answer", directory, frames_dir=frames, batch_size=2, on_bad_record="skip",
                                shard_index=0, shard_count=1)))
    assert batch["_mask"].tolist() == [True, False] and "first_frame" in batch["bad_record"][1]
    with pytest.raises(FileNotFoundError, match="frames_dir is not a directory"):
        data.make_source("act2answer", directory, frames_dir=tmp_path / "nowhere")


@pytest.mark.parametrize("field, value, message", [
    ("answer", "Up", "field 'answer': expected 'Left' or 'Right', got 'Up'"),
    ("answer", None, "field 'answer': expected 'Left' or 'Right', got None"),
    ("question", "", "field 'question': expected non-empty text"),
    ("knowledge_category", 3, "field 'knowledge_category': expected non-empty text, got 3"),
    ("left", None, "field 'left': expected non-empty text, got None"),
    ("index", [1], "field 'index': expected an integer or text id"),
    ("left_label", 7, "field 'left_label': expected text, got 7"),
    # the episode's instruction is the placement command, never the plain question in its place
    ("knowledge_instruction", None, "field 'knowledge_instruction': expected non-empty text, got None"),
])
def test_bad_items_name_the_item_and_field(tmp_path, field, value, message):
    directory = item_set(tmp_path, items_per_category=1)
    pairs = json.loads((directory / "pairs.json").read_text())
    pairs[1][field] = value
    (directory / "pairs.json").write_text(json.dumps(pairs))
    source = data.make_source("act2answer", directory)
    source[0]
    with pytest.raises(BadRecordError, match=re.escape(f"act2answer: record pairs.json[1]: {message}")):
        source[2]


def _opposite(answer: str) -> str:
    return {"Left": "Right", "Right": "Left"}[answer]


def _same_asset(directory, pairs):
    pairs[1]["right"] = pairs[1]["left"]
    return 1, "right", f"'{pairs[1]['left']}', the left tile's asset too"


def _answer_against_labels(directory, pairs):
    assert pairs[1]["semantic_answer"] in (pairs[1]["left_label"], pairs[1]["right_label"])
    pairs[1]["answer"] = _opposite(pairs[1]["answer"])
    return 1, "answer", f"'{pairs[1]['answer']}', but semantic_answer '{pairs[1]['semantic_answer']}' is"


def _same_picture(directory, pairs):
    shutil.copyfile(directory / "images" / f"{pairs[2]['left']}.png", directory / "images" / f"{pairs[2]['right']}.png")
    return 2, "right", f"'{pairs[2]['right']}' shows the same picture as left"


def _duplicate_flipped(directory, pairs):
    for raw in pairs[:2]:  # without labels, which would refuse the flipped answer on their own
        for key in ("semantic_answer", "left_label", "right_label"):
            del raw[key]
    pairs[1].update({key: pairs[0][key] for key in ("left", "right", "knowledge_instruction", "question")})
    pairs[1]["answer"] = _opposite(pairs[0]["answer"])
    return 1, "answer", f"'{pairs[1]['answer']}' picks the other picture than pairs.json[0]"


def _category_spelled(spelling):
    def edit(directory, pairs):
        assert pairs[0]["knowledge_category"] == "color"
        pairs[1]["knowledge_category"] = spelling
        return 1, "knowledge_category", f"{spelling!r}, but pairs.json[0] spells it 'color'"
    return edit


@pytest.mark.parametrize("edit, refused_when", [
    # both tiles one asset, or the answer on the tile whose label is not the semantic answer: a model right about the
    # picture is scored wrong; refused when the item is read, as any malformed item
    (_same_asset, "read"), (_answer_against_labels, "read"),
    # one picture under two asset names; one instruction over the same two pictures with opposite answers; one
    # category spelled two ways (scored as two): refused with the set
    (_same_picture, "set"), (_duplicate_flipped, "set"), (_category_spelled("Color"), "set"),
    (_category_spelled("color "), "set"),
])
def test_item_sets_no_model_could_answer_are_refused(tmp_path, edit, refused_when):
    directory = item_set(tmp_path, items_per_category=1)
    pairs = json.loads((directory / "pairs.json").read_text())
    position, field, message = edit(directory, pairs)
    (directory / "pairs.json").write_text(json.dumps(pairs))
    expected = pytest.raises(BadRecordError, match=re.escape(f"record pairs.json[{position}]: field '{field}': {message}"))
    if refused_when == "set":
        with expected:
            data.make_source("act2answer", directory)
        return
    source = data.make_source("act2answer", directory)
    source[0]  # the others read
    with expected:
        source[2 * position]


def test_an_item_given_twice_under_another_id_shares_its_content_group(tmp_path):
    """One item's swapped layout under another id is the same episodes again: a probe's folds would train on one copy
    and test on the other, so `content_groups` gives both one key (eval scores them as the items they are)."""
    directory = item_set(tmp_path, items_per_category=1)
    pairs = json.loads((directory / "pairs.json").read_text())
    first = pairs[0]
    pairs.append({**first, "index": 99, "left": first["right"], "right": first["left"], "left_label": first["right_label"],
                  "right_label": first["left_label"], "answer": _opposite(first["answer"])})
    (directory / "pairs.json").write_text(json.dumps(pairs))
    groups = data.make_source("act2answer", directory).content_groups()
    assert groups["99"] == groups[str(first["index"])]
    assert len(set(groups.values())) == len(pairs) - 1


def test_the_generated_set_has_distinct_items_only(tmp_path):
    with pytest.raises(ValueError, match="items_per_category=21: the shape category has 20 distinct items"):
        item_set(tmp_path, items_per_category=21)


def test_an_item_id_given_twice_is_refused(tmp_path):
    """Ids name the episodes, their records and their simulator first frames: a set numbered per category would
    score one item on another's frame."""
    directory = item_set(tmp_path, items_per_category=1)
    pairs = json.loads((directory / "pairs.json").read_text())
    pairs[2]["index"] = pairs[0]["index"]
    (directory / "pairs.json").write_text(json.dumps(pairs))
    with pytest.raises(BadRecordError, match=re.escape(f"act2answer: record pairs.json[2]: field 'index': item id "
                                                       f"'{pairs[0]['index']}' is also pairs.json[0]'s; each item needs its own")):
        data.make_source("act2answer", directory)


def test_bad_item_sets_and_assets(tmp_path):
    with pytest.raises(FileNotFoundError, match="no pairs.json"):
        data.make_source("act2answer", tmp_path)
    (tmp_path / "pairs.json").write_text('{"left": "a"}')
    with pytest.raises(ValueError, match="pairs.json: expected a JSON list of items, got dict"):
        data.make_source("act2answer", tmp_path)
    (tmp_path / "pairs.json").write_text("[{")
    with pytest.raises(ValueError, match="pairs.json: not valid JSON"):
        data.make_source("act2answer", tmp_path)
    directory = item_set(tmp_path / "set", items_per_category=1)
    pairs = json.loads((directory / "pairs.json").read_text())
    (directory / "images" / f"{pairs[0]['right']}.png").unlink()
    source = data.make_source("act2answer", directory)
    with pytest.raises(BadRecordError, match=rf"field 'right': no image for asset '{pairs[0]['right']}'"):
        source[0]
    mesh = directory / "shapes" / pairs[1]["left"] / "textured.glb"
    mesh.parent.mkdir(parents=True)
    mesh.write_bytes(b"not a mesh at all, just bytes")
    with pytest.raises(BadRecordError, match=r"field 'left': .*textured.glb: not a glTF binary"):
        source[2]


def test_data_command_reports_the_item_set(tmp_path):
    directory = item_set(tmp_path, items_per_category=1)
    command = [sys.executable, "-c", "from multinet_jax.cli import main; main()", "data", "--domain=act2answer",
               f"--data_dir={directory}", "--json"]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    assert report["num_samples"] == 6 and report["num_bad_records"] == 0 and report["action_stats"] is None
    assert report["sample"]["id"] == "0/original" and report["sample"]["scene"] == "composite"
    assert report["fields"]["image/base_0_rgb"] == {"dtype": "uint8", "shape": [224, 224, 3]}  # uint8 until the model


def test_the_readme_item_set_folder_is_ignored_by_git():
    """The README writes a generated item set to data/act2answer/public: git must not see it as untracked."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "data/act2answer/public/pairs.json"], cwd=REPO_ROOT, timeout=60)
    assert ignored.returncode == 0
