"""``gan_translate``: online cross-modality augmentation with a frozen visible <-> infrared translator.

AlignGAN (Wang et al., ICCV 2019) and JSIA-ReID (Wang et al., AAAI 2020) train the ReID model on images
generated in the other modality as they are produced; here the generator is a finished ``vireid gan
train`` run, frozen, and this step translates a fraction of every training batch:

* ``p``: the share of the batch translated, ``round(p * B)`` images chosen at random (the batch's
  seeded generator, so training stays reproducible and resumable);
* ``direction``: ``both`` (a chosen visible image becomes infrared and a chosen infrared image
  visible), ``visible->infrared`` or ``infrared->visible`` (only images of that source modality are
  candidates);
* ``relabel``: a translated image gets the modality code of what it now shows (true, the default), so
  a two-stream model routes it through the other modality's stem; false keeps the source's code.
  The codes are rewritten in the batch's own modality tensor (a per-batch copy made by the loader),
  so the model and the later steps see them.

The identity label never changes: translations keep identity (the GAN's identity-preserving term). The
step runs first (``default_position = "first"``), on the uint8 batch before crop, flip and
normalisation, like the modality patch exchange; a batch of another size than the GAN's is resized to
it and back (bilinear). Config: ``augment.steps: [{type: gan_translate, run: runs/gan_synth, p: 0.25}]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vireid.data.records import MODALITY_CODE
from vireid.data.transforms import TRANSFORM_STEPS, BatchContext, _probability
from vireid.errors import ConfigError

_DIRECTIONS = ("both", "visible->infrared", "infrared->visible")


@TRANSFORM_STEPS.register("gan_translate")
class GANTranslate:
    """Translate ``round(p * B)`` images of each batch to the other modality with a GAN run's generators."""

    name = "gan_translate"
    uses_context = True
    default_position = "first"

    def __init__(self, run: str, p: float = 0.25, direction: str = "both", relabel: bool = True) -> None:
        from vireid.modeling.gan.io import load_generator

        if not run:
            raise ConfigError("augment step gan_translate needs run: the folder of a vireid gan train run")
        self.p = _probability("gan_translate", p)
        if direction not in _DIRECTIONS:
            raise ConfigError(f"augment step gan_translate direction {direction!r} is unknown; use {', '.join(_DIRECTIONS)}")
        self.direction, self.relabel, self.run = direction, bool(relabel), str(run)
        self.vis2ir, ckpt = load_generator(run, "visible->infrared")
        self.ir2vis, _ = load_generator(run, "infrared->visible")
        self.size = tuple(int(v) for v in ckpt["image_size"])
        self.last_rows: torch.Tensor | None = None

    def _translate(self, net: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        net.to(pixels.device)
        size = tuple(pixels.shape[-2:])
        x = pixels.float() / 127.5 - 1.0
        if size != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            y = net(x)
        if size != self.size:
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return ((y.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator,
                 context: BatchContext | None = None) -> torch.Tensor:
        if modalities is None:
            raise ConfigError("augment step gan_translate needs the batch's modalities; use it in a training transform "
                              "fed by the cross-modality loader")
        if images.dtype != torch.uint8:
            raise ConfigError("augment step gan_translate works on the uint8 batch; place it first (no before/after)")
        codes = torch.as_tensor(modalities).to("cpu").reshape(-1)
        batch = images.shape[0]
        if self.direction == "both":
            candidates = torch.arange(batch)
        else:
            source = MODALITY_CODE[self.direction.split("->")[0]]
            candidates = torch.nonzero(codes == source).flatten()
        count = min(int(round(self.p * batch)), len(candidates))
        rows = candidates[torch.randperm(len(candidates), generator=generator)[:count]].sort().values
        self.last_rows = rows
        if count == 0:
            return images
        out = images.clone()
        for code, net in ((MODALITY_CODE["visible"], self.vis2ir), (MODALITY_CODE["infrared"], self.ir2vis)):
            chosen = rows[codes[rows] == code]
            if len(chosen):
                index = chosen.to(images.device)
                out[index] = self._translate(net, images[index])
        if self.relabel:
            flipped = 1 - codes[rows]
            targets = [modalities] if context is None or context.modalities is None else [modalities, context.modalities]
            for tensor in targets:
                if isinstance(tensor, torch.Tensor):
                    tensor[rows.to(tensor.device)] = flipped.to(tensor.device, tensor.dtype)
        return out


__all__ = ["GANTranslate"]
