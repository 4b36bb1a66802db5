"""The PaliGemma backbone (SigLIP + the multi-expert Gemma) that Pi0, Pi0.5, Pi0-FAST and PaliGemma share.

`PaliGemma` is a namespace module, so parameter paths read `PaliGemma/img/...` and `PaliGemma/llm/...` as in openpi;
Pi0 adds its action head beside it (`models/pi0.py`), the prefix-LM decoder runs its expert 0 (`models/decoding.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from multinet_jax.models.configs import ModelConfig
from multinet_jax.models.gemma import Gemma
from multinet_jax.models.observation import resize_with_pad
from multinet_jax.models.vit import ViT


class PaliGemma(nn.Module):
    """SigLIP (`img`) and the Gemma experts (`llm`); `embed_prefix` is the image-then-prompt prefix every user runs."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        self.llm = Gemma(cfg.experts, cfg.vocab_size, cfg.dtype, cfg.adaptive_norms)
        self.img = ViT(cfg.siglip, cfg.paligemma.width, cfg.dtype)

    def embed_prefix(
        self, images: Sequence[jax.Array], image_masks: Sequence[jax.Array], tokens: jax.Array, token_mask: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Image tokens of each camera (one SigLIP pass per camera, as openpi), then prompt tokens -> (tokens, mask).

        `images`: per camera `[b, h, w, 3]` in [-1, 1] at any size (resized as openpi does, `observation.resize_with_pad`);
        `image_masks`: per camera bool `[b]`. Returns `[b, n, width]` in the model dtype and bool `[b, n]`.
        """
        size = self.config.siglip.image_size
        parts, masks = [], []
        for image, camera_mask in zip(images, image_masks, strict=True):
            camera_tokens = self.img(resize_with_pad(image, size, size))
            parts.append(camera_tokens)
            masks.append(jnp.broadcast_to(camera_mask[:, None], camera_tokens.shape[:2]))
        parts.append(self.llm.embed(tokens))
        masks.append(token_mask)
        return jnp.concatenate(parts, axis=1), jnp.concatenate(masks, axis=1)

    def init_all(self, image_size: int) -> None:
        self.img(jnp.zeros((1, image_size, image_size, 3), jnp.float32))
        self.llm.init_all()
