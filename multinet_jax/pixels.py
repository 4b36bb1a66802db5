"""The pixel convention every model input follows: images as float32 in [-1, 1], converted from uint8 one way.

Its own module (numpy only) because both sides of the model boundary need it: the data pipelines convert batches
(`data.transforms`), and the models convert uint8 observations given to them directly (`models.observation`).
"""

from __future__ import annotations

import numpy as np


def to_model_range(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1] as openpi's `Observation.from_dict` computes it (`x / 255 * 2 - 1` in
    float32), any shape. For every uint8 value this equals the Hugging Face SigLIP processor's rescale (float64
    `x * (1/255)` cast to float32) followed by its normalize (`(x - 0.5) / 0.5` in float32), bit for bit."""
    return np.asarray(image).astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
