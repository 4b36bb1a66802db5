"""Act2Answer episodes as a data domain: one sample per item and layout, in the order (item 0 original, item 0
swapped, item 1 original, ...), so any even `limit` keeps both layouts of every item it covers.

`data_dir` is an item set (`multinet_jax.act2answer.items`). The image is the episode's first frame: a simulator's
own when `frames_dir` holds `<item id>_<layout>.png|.jpg` (every episode must have one; a missing frame is a bad
record, never replaced by a composite), else the rendered composite of `act2answer.scene` (recorded per sample as
`scene`: "simulator" or "composite"). The prompt is the episode's instruction; the state is zeros (a composite has
no robot state). The ground truth is the target tile in this layout, 0 = left, 1 = right; `options` are
["left", "right"] and `option_labels` what each tile shows.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from multinet_jax.act2answer import items, scene
from multinet_jax.act2answer.geometry import LAYOUTS, TILE_NAMES
from multinet_jax.data.bad_records import BadRecordError
from multinet_jax.data.transforms import decode_image

FRAMES_DIR = "first_frames"  # the default simulator-frames folder inside an item set


def frame_path(frames_dir: pathlib.Path, episode: items.Episode) -> pathlib.Path | None:
    stem = f"{episode.item.item_id}_{episode.layout}"
    return next((path for suffix in items.IMAGE_SUFFIXES if (path := frames_dir / f"{stem}{suffix}").is_file()), None)


class Act2AnswerSource:
    """Random access to an item set's episodes (2 per item)."""

    def __init__(self, directory: pathlib.Path, dataset: str = "act2answer", frames_dir: str | pathlib.Path | None = None):
        self.directory = pathlib.Path(directory)
        self.dataset = dataset
        self._pairs = items.read_pairs(self.directory, dataset)
        default_frames = self.directory / FRAMES_DIR
        self.frames_dir = pathlib.Path(frames_dir) if frames_dir else (default_frames if default_frames.is_dir() else None)
        if self.frames_dir is not None and not self.frames_dir.is_dir():
            raise FileNotFoundError(f"{self.frames_dir}: frames_dir is not a directory")

    def __len__(self) -> int:
        return len(LAYOUTS) * len(self._pairs)

    def content_groups(self) -> dict[str, str]:
        """Item id -> its content's key (`items.content_groups`): the folds a probe keeps together."""
        return items.content_groups(self.directory, self._pairs, self.dataset)

    def episode(self, index: int) -> items.Episode:
        position, layout = divmod(index, len(LAYOUTS))
        return items.Episode(items.parse_item(self._pairs[position], position, self.dataset), LAYOUTS[layout])

    def _first_frame(self, episode: items.Episode, record: str) -> tuple[np.ndarray, str]:
        if self.frames_dir is not None:
            path = frame_path(self.frames_dir, episode)
            if path is None:
                raise BadRecordError(self.dataset, record, "first_frame",
                                     f"no {episode.item.item_id}_{episode.layout}.png|.jpg in {self.frames_dir}")
            try:
                return decode_image(path.read_bytes()), "simulator"
            except (OSError, ValueError) as error:
                raise BadRecordError(self.dataset, record, "first_frame", f"{path}: {error}") from None
        pictures = [items.candidate_image(self.directory, asset, self.dataset, record, name)
                    for asset, name in zip(episode.assets, TILE_NAMES)]
        return scene.render_scene(*pictures), "composite"

    def __getitem__(self, index: int) -> dict[str, Any]:
        episode = self.episode(index)
        record = f"{items.PAIRS_FILE}[{index // len(LAYOUTS)}] ({episode.layout})"
        image, source = self._first_frame(episode, record)
        return {
            "id": episode.episode_id,
            "item_id": episode.item.item_id,
            "layout": episode.layout,
            "category": episode.item.category,
            "image": image,
            "scene": source,
            "state": None,
            "prompt": episode.item.instruction,
            "question": episode.item.question,
            "options": list(TILE_NAMES),
            "option_labels": list(episode.labels),
            "ground_truth": episode.target,
            "num_options": np.int32(len(TILE_NAMES)),
        }
