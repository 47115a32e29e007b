"""The history of translated images the discriminators are shown (CycleGAN's ``util/image_pool.py``).

Shrivastava et al. (CVPR 2017) update the discriminator with a history of generated images rather than
only the latest ones, to damp oscillation; CycleGAN keeps ``pool_size = 50`` images: while the pool is
not full every new image is stored and returned; afterwards each new image, with probability 0.5,
replaces a random stored one, which is returned instead, and is otherwise returned itself.

Here the coin flips and choices come from a ``torch.Generator`` the caller seeds (per training step),
and :meth:`state_dict` holds the stored images, so a resumed run draws exactly what an uninterrupted
one would.
"""

from __future__ import annotations

import torch


class ImagePool:
    """A buffer of up to ``size`` translated images (``size = 0``: the pool is off, images pass through)."""

    def __init__(self, size: int = 50) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            from vireid.errors import ConfigError

            raise ConfigError(f"config key 'gan.pool_size' is {size!r}; use 0 (off) or a positive whole number such as 50")
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch to show the discriminator for the new (detached) ``images`` [B, C, H, W]."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
                continue
            if float(torch.rand((), generator=generator)) > 0.5:
                slot = int(torch.randint(0, self.size, (), generator=generator))
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": torch.stack(self.images).cpu() if self.images else torch.zeros(0)}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        images = state.get("images")
        self.images = [] if images is None or images.numel() == 0 else [i.to(device) for i in images]


__all__ = ["ImagePool"]
