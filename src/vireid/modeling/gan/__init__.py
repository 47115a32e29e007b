"""Cross-modality image generation: a CycleGAN-style visible <-> infrared translator.

:mod:`~vireid.modeling.gan.networks` (ResNet-block generators, PatchGAN discriminators),
:mod:`~vireid.modeling.gan.losses` (LSGAN, cycle, identity mapping, identity preservation from a frozen
ReID model), :mod:`~vireid.modeling.gan.pool` (the history of translated images) and
:mod:`~vireid.modeling.gan.io` (a trained generator from a run). Training and translation live in
:mod:`vireid.workflows.gan`; the commands are ``vireid gan train`` and ``vireid gan translate``.
"""

from vireid.modeling.gan.io import DIRECTIONS, load_gan_checkpoint, load_generator
from vireid.modeling.gan.losses import (
    IdentityPreservingLoss,
    discriminator_loss,
    embedding_distance,
    l1_loss,
    lsgan_loss,
    to_reid_input,
)
from vireid.modeling.gan.networks import CycleGAN, PatchDiscriminator, ResnetGenerator, init_weights
from vireid.modeling.gan.pool import ImagePool

__all__ = ["DIRECTIONS", "CycleGAN", "IdentityPreservingLoss", "ImagePool", "PatchDiscriminator", "ResnetGenerator",
           "discriminator_loss", "embedding_distance", "init_weights", "l1_loss", "load_gan_checkpoint",
           "load_generator", "lsgan_loss", "to_reid_input"]
