"""CycleGAN networks: the ResNet-block generator and the PatchGAN discriminator.

The structure follows CycleGAN (Zhu et al., ICCV 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks"), as its reference repository builds it
(junyanz/pytorch-CycleGAN-and-pix2pix, ``models/networks.py``: ``ResnetGenerator``, ``ResnetBlock``,
``NLayerDiscriminator``, ``init_weights``):

* generator: reflection pad 3 + 7x7 convolution to ``channels`` + norm + ReLU; ``downsampling``
  stride-2 3x3 convolutions doubling the channels (2 in CycleGAN); ``blocks`` residual blocks of
  (reflection pad 1, 3x3 conv, norm, ReLU, reflection pad 1, 3x3 conv, norm) (9 blocks for 256x256
  images, 6 for 128x128); as many stride-2 3x3 transposed convolutions (padding 1, output padding 1)
  halving the channels; reflection pad 3 + 7x7 convolution to 3 channels + tanh, so images live in
  ``[-1, 1]``. Instance norm without affine parameters, no dropout (CycleGAN's defaults);
* discriminator (70x70 PatchGAN for ``layers=3``): 4x4 stride-2 convolution to ``channels`` + LeakyReLU
  0.2 (no norm), then ``layers - 1`` stride-2 and one stride-1 4x4 convolutions with the channel
  multiplier ``min(2**n, 8)`` + norm + LeakyReLU 0.2, and a final 4x4 stride-1 convolution to one
  channel: a map of real/fake scores, one per overlapping patch;
* initialisation: convolution weights ~ N(0, 0.02), biases 0 (``init_type='normal'``, ``init_gain=0.02``).

Every size is a constructor argument so that tests and the synthetic recipe use tiny networks.
"""

from __future__ import annotations

import torch
from torch import nn

from vireid.errors import ConfigError

NORMS = ("instance", "batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    return nn.Identity()


def _check(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"GAN network setting {name}={value!r} is invalid; use a whole number of at least {low}")
    return value


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ConfigError(f"GAN network norm {norm!r} is unknown; use one of {', '.join(NORMS)}")
    return norm


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with a skip connection (CycleGAN's ``ResnetBlock``)."""

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        bias = norm == "instance"  # CycleGAN: use_bias when the norm is InstanceNorm (no affine shift)
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), _norm(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), _norm(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Image-to-image generator ``[B,3,H,W]`` in ``[-1,1]`` -> the same shape (module docstring).

    ``H`` and ``W`` must be multiples of ``2**downsampling`` (checked at call time).
    """

    def __init__(self, channels: int = 64, blocks: int = 9, downsampling: int = 2, norm: str = "instance",
                 in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        _check("channels", channels, 1)
        _check("blocks", blocks, 0)
        _check("downsampling", downsampling, 0)
        norm = _check_norm(norm)
        self.settings = {"channels": channels, "blocks": blocks, "downsampling": downsampling, "norm": norm}
        self.downsampling = downsampling
        bias = norm == "instance"
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, channels, 7, bias=bias),
                                   _norm(norm, channels), nn.ReLU(True)]
        width = channels
        for _ in range(downsampling):
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=bias), _norm(norm, 2 * width), nn.ReLU(True)]
            width *= 2
        layers += [ResidualBlock(width, norm) for _ in range(blocks)]
        for _ in range(downsampling):
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       _norm(norm, width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = 2 ** self.downsampling
        if x.shape[-2] % step or x.shape[-1] % step:
            raise ConfigError(f"the generator halves the image {self.downsampling} time(s), so images must be multiples "
                              f"of {step} pixels high and wide; got {x.shape[-2]}x{x.shape[-1]}, change data.height/width")
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: ``[B,3,H,W]`` -> ``[B,1,h,w]`` scores of overlapping patches (module docstring)."""

    def __init__(self, channels: int = 64, layers: int = 3, norm: str = "instance", in_channels: int = 3) -> None:
        super().__init__()
        _check("channels", channels, 1)
        _check("layers", layers, 1)
        norm = _check_norm(norm)
        self.settings = {"channels": channels, "layers": layers, "norm": norm}
        bias = norm == "instance"
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn.Conv2d(channels * prev, channels * mult, 4, stride=2, padding=1, bias=bias),
                    _norm(norm, channels * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** layers, 8)
        seq += [nn.Conv2d(channels * prev, channels * mult, 4, stride=1, padding=1, bias=bias),
                _norm(norm, channels * mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(channels * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's ``init_type='normal'``: conv weights ~ N(0, gain), biases 0, BatchNorm weights ~ N(1, gain)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


class CycleGAN(nn.Module):
    """The four networks of a visible <-> infrared translator.

    ``vis2ir`` translates visible to infrared (CycleGAN's ``G_A`` with A = visible, B = infrared),
    ``ir2vis`` the other way (``G_B``); ``d_ir`` tells real from translated infrared (``D_A``) and
    ``d_vis`` real from translated visible (``D_B``).
    """

    def __init__(self, generator: dict | None = None, discriminator: dict | None = None) -> None:
        super().__init__()
        generator, discriminator = dict(generator or {}), dict(discriminator or {})
        for what, given, cls in (("generator", generator, ResnetGenerator), ("discriminator", discriminator, PatchDiscriminator)):
            from vireid.registry import check_kwargs

            check_kwargs(cls, given, f"gan.{what}", skip=("in_channels", "out_channels"))
        self.vis2ir = ResnetGenerator(**generator)
        self.ir2vis = ResnetGenerator(**generator)
        self.d_ir = PatchDiscriminator(**discriminator)
        self.d_vis = PatchDiscriminator(**discriminator)
        init_weights(self)

    def generators(self) -> list[nn.Module]:
        return [self.vis2ir, self.ir2vis]

    def discriminators(self) -> list[nn.Module]:
        return [self.d_ir, self.d_vis]


__all__ = ["CycleGAN", "NORMS", "PatchDiscriminator", "ResidualBlock", "ResnetGenerator", "init_weights"]
