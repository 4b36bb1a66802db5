"""ODinW (Object Detection in the Wild) as MultiNet's classification task.

Per subset directory: `categories.json` (`categories`: id, name, supercategory), the crops in
`bbox_images/`, and `test_object_caption_pairs.json` (preferred) or `object_caption_pairs.json`
(`bbox_image`: a path inside `bbox_images/`, neither absolute nor hidden nor climbing out, as the data fingerprint
covers only those; `category_name`, ...). `data_dir` is one subset or a folder of subsets (taken in
sorted order); as MultiNet, only the subsets of its `SUB_DATASET_CATEGORIES` are evaluated
(`domains.ODINW_SUBSET_CLASSES`; others are skipped with a warning). The options are the names of the
subset's `categories` in file order without the root category (`supercategory == "none"`), as MultiNet's
`odinw_dataloader.py` (d6fe80e, `_load_categories`, lines 41-47) builds them; the ground truth is the index of
the crop's category among them, and their count is the class count MultiNet's table gives the subset.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import numpy as np

from multinet_jax import fingerprints
from multinet_jax.data import prompts
from multinet_jax.domains import ODINW_SUBSET_CLASSES
from multinet_jax.data.bad_records import BadRecordError, check_unique_ids
from multinet_jax.data.jsonl import read_json
from multinet_jax.data.transforms import decode_image

PAIR_FILES = ("test_object_caption_pairs.json", "object_caption_pairs.json")


def subset_dirs(directory: pathlib.Path) -> list[pathlib.Path]:
    """The subset folders MultiNet evaluated, sorted; others are skipped with a warning."""
    found = [directory] if (directory / "categories.json").exists() else sorted(
        path for path in directory.iterdir() if (path / "categories.json").exists())
    subsets = [path for path in found if path.name in ODINW_SUBSET_CLASSES]
    skipped = [path.name for path in found if path.name not in ODINW_SUBSET_CLASSES]
    if skipped:
        logging.warning("odinw: skipping subsets MultiNet v1.0 did not evaluate: %s", ", ".join(skipped))
    if not subsets:
        raise FileNotFoundError(f"{directory}: no ODinW subset of MultiNet's {len(ODINW_SUBSET_CLASSES)} (a folder named "
                                f"like AerialMaritimeDrone with categories.json); found {[path.name for path in found]}")
    return subsets


def subset_options(categories: Any, path: pathlib.Path) -> list[str]:
    """The options MultiNet listed: the names of `categories` whose `supercategory` is not "none", in file order.

    Their count must be the subset's in MultiNet's table (`ODINW_SUBSET_CLASSES`), which bounds a valid answer.
    """
    if not isinstance(categories, dict):
        raise ValueError(f"{path}: expected a JSON object with categories, got a {type(categories).__name__}")
    entries = categories.get("categories")
    if not isinstance(entries, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("name"), str) and "supercategory" in entry for entry in entries):
        raise ValueError(f"{path}: categories: expected a list of {{name, supercategory}} objects, got {entries!r}"[:300])
    names = [entry["name"] for entry in entries if entry["supercategory"] != "none"]
    expected = ODINW_SUBSET_CLASSES[path.parent.name]
    if len(names) != expected:
        raise ValueError(f"{path}: {len(names)} categories under the root ({names}), but MultiNet's table gives "
                         f"{path.parent.name} {expected} classes")
    return names


def _sample_id(subset: pathlib.Path, pair: dict) -> str:
    return f"{subset.name}/{pair.get('bbox_image')}"


class OdinwSource:
    def __init__(self, directory: pathlib.Path, dataset: str = "odinw"):
        self.dataset = dataset
        self._samples: list[tuple[pathlib.Path, list[str], str, dict]] = []
        for subset in subset_dirs(pathlib.Path(directory)):
            pairs_path = next((subset / name for name in PAIR_FILES if (subset / name).exists()), None)
            if pairs_path is None:
                raise FileNotFoundError(f"{subset}: none of {PAIR_FILES}")
            options = subset_options(read_json(subset / "categories.json"), subset / "categories.json")
            pairs = read_json(pairs_path)
            if not isinstance(pairs, list) or not all(isinstance(pair, dict) for pair in pairs):
                raise ValueError(f"{pairs_path}: expected a JSON list of objects (bbox_image, category_name, ...)")
            self._samples += [(subset, options, f"{subset.name}/{pairs_path.name}[{i}]", pair) for i, pair in enumerate(pairs)]
        check_unique_ids(dataset, ((record, _sample_id(subset, pair)) for subset, _, record, pair in self._samples))

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        subset, options, record, pair = self._samples[index]
        for name in ("bbox_image", "category_name"):
            if not isinstance(pair.get(name), str):
                raise BadRecordError(self.dataset, record, name, f"expected text, got {pair.get(name)!r}")
        if pair["category_name"] not in options:
            raise BadRecordError(self.dataset, record, "category_name", f"{pair['category_name']!r} not among {options}")
        relative = pathlib.PurePosixPath(pair["bbox_image"])
        if relative.is_absolute() or fingerprints.hidden(relative):  # `..` too: the fingerprint covers neither
            raise BadRecordError(self.dataset, record, "bbox_image", f"{pair['bbox_image']!r}: not a file inside "
                                 f"{subset.name}/bbox_images (absolute, hidden or climbing out of it)")
        image_path = subset / "bbox_images" / relative
        try:
            image = decode_image(image_path.read_bytes())
        except (OSError, ValueError) as error:
            raise BadRecordError(self.dataset, record, "bbox_image", f"{image_path}: {error}") from None
        return {
            "id": _sample_id(subset, pair),
            "image": image,
            "state": None,
            "prompt": prompts.odinw_prompt(subset.name, options),
            "ground_truth": options.index(pair["category_name"]),
            "options": list(options),
            "num_options": np.int32(len(options)),
            "subset": subset.name,
        }
