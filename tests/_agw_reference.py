"""An independent re-implementation, for tests, of the network the AGW / CAJ reference code saves.

Written from the documented structure of ``embed_net`` in ``model.py`` / ``resnet.py`` of
mangye16/Cross-Modal-Re-ID-baseline (see :mod:`vireid.workflows.import_agw` for the facts), not
from vireid's modules, so that a mapping mistake in the importer cannot be mirrored here:

* three whole ResNet-50s (``visible_module.visible``, ``thermal_module.thermal``,
  ``base_resnet.base``; conv1/bn1/layer1..4, bottleneck stride on the 3x3 conv, last stride 1);
* ``NL_1..NL_4`` module lists (0, 2, 3, 0 non-local blocks after the last blocks of each layer),
  each block with ``g`` (a 1x1 conv inside a Sequential), ``theta``, ``phi`` (1x1 convs to ONE
  channel) and ``W`` (1x1 conv back + BatchNorm2d); ``y = (theta^T phi / N) g``, ``z = W(y) + x``;
* GeM ``(mean(x^3) + 1e-12)^(1/3)`` (or average pooling without non-local blocks), ``bottleneck``
  BatchNorm1d, ``classifier`` Linear without bias;
* evaluation output ``(l2norm(pool), l2norm(bottleneck(pool)))`` -- POOL and FC.

:func:`randomise` gives every parameter random values and every BatchNorm random running
statistics (including the output BNs of the non-local blocks, which the reference zero-initialises:
left at zero, the blocks would be identities and a wrong mapping of them would go unnoticed).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

LAYERS = (3, 4, 6, 3)
NON_LAYERS = (0, 2, 3, 0)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Block(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
            if downsample else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class ResNet50(nn.Module):
    """conv1, bn1, (relu, maxpool), layer1..layer4 with last stride 1; no fc (``remove_fc``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(zip((64, 128, 256, 512), LAYERS, (1, 2, 2, 1)), start=1):
            layer = [Block(inplanes, planes, stride, True)]
            layer += [Block(planes * 4, planes, 1, False) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
            inplanes = planes * 4

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)


class NonLocal(nn.Module):
    def __init__(self, channels: int, inner: int = 1) -> None:
        super().__init__()
        self.inner = inner
        self.g = nn.Sequential(nn.Conv2d(channels, inner, 1))
        self.W = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g = self.g(x).reshape(b, self.inner, h * w).transpose(1, 2)
        theta = self.theta(x).reshape(b, self.inner, h * w).transpose(1, 2)
        phi = self.phi(x).reshape(b, self.inner, h * w)
        attention = theta @ phi
        y = (attention / attention.shape[-1]) @ g
        return self.W(y.transpose(1, 2).reshape(b, self.inner, h, w)) + x


class _Holder(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        setattr(self, name, ResNet50())


class EmbedNet(nn.Module):
    """The reference ``embed_net(class_num, no_local, gm_pool)`` key for key; eval forward only."""

    def __init__(self, class_num: int, non_local: bool = True, inner: int = 1) -> None:
        super().__init__()
        self.thermal_module = _Holder("thermal")
        self.visible_module = _Holder("visible")
        self.base_resnet = _Holder("base")
        self.non_local = non_local
        if non_local:
            for index, (count, channels) in enumerate(zip(NON_LAYERS, (256, 512, 1024, 2048)), start=1):
                setattr(self, f"NL_{index}", nn.ModuleList([NonLocal(channels, inner) for _ in range(count)]))
        self.bottleneck = nn.BatchNorm1d(2048)
        self.classifier = nn.Linear(2048, class_num, bias=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, modal: int) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D401
        """``modal`` 1 = visible stem, 2 = thermal stem (the reference's test_mode codes)."""
        return self._head(self._shared(self._stem(x, modal)))

    def _stem(self, x: torch.Tensor, modal: int) -> torch.Tensor:
        stream = self.visible_module.visible if modal == 1 else self.thermal_module.thermal
        return stream.stem(x)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_resnet.base
        for index in range(1, 5):
            blocks = getattr(base, f"layer{index}")
            after = sorted(len(blocks) - 1 - i for i in range(NON_LAYERS[index - 1])) if self.non_local else []
            for i, block in enumerate(blocks):
                x = block(x)
                if i in after:
                    x = getattr(self, f"NL_{index}")[after.index(i)](x)
        return x

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.non_local:
            pooled = (x.pow(3).flatten(2).mean(-1) + 1e-12).pow(1.0 / 3.0)
        else:
            pooled = x.mean(dim=(2, 3))
        feat = self.bottleneck(pooled)
        return F.normalize(pooled, dim=1), F.normalize(feat, dim=1)


def randomise(net: EmbedNet, seed: int = 0, calibration: dict[int, torch.Tensor] | None = None) -> EmbedNet:
    """Random weights everywhere; BatchNorms with random affine parameters and random running statistics.

    Statistics unrelated to the activations let a few channel means dominate every embedding, and
    the products inside a non-local block are cubic in its input, so five of them overflow float32.
    So every BN the forward uses gets running statistics measured in one evaluation-mode pass over
    ``calibration`` (``{modal: images}``, e.g. the crops a test embeds; random images when None),
    layer after layer, then perturbed per channel (means shifted by 0.1 std, variances scaled by
    0.7..1.4). The non-local blocks' output BNs (``W[1]``, zero-initialised by the reference) get
    random weights too: left at zero the blocks would be identities and a wrong mapping of them
    would go unnoticed.
    """
    generator = torch.Generator().manual_seed(seed)

    def perturb(module: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> None:
        n = module.num_features
        module.running_mean.copy_(mean + 0.1 * var.sqrt() * torch.randn(n, generator=generator))
        module.running_var.copy_(var * (0.7 + 0.7 * torch.rand(n, generator=generator)))

    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                perturb(module, torch.zeros(n), torch.ones(n))
                module.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=generator)))
        net.eval()
        if calibration is None:
            calibration = {modal: torch.randn(2, 3, 96, 48, generator=generator) for modal in (1, 2)}

        def measure(module: nn.Module, inputs: tuple[torch.Tensor]) -> None:
            y = inputs[0]
            dims = (0, 2, 3) if y.dim() == 4 else (0,)
            perturb(module, y.mean(dim=dims), y.var(dim=dims) + 1e-5)

        norms = [m for m in net.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        hooks = [norm.register_forward_pre_hook(measure) for norm in norms]
        try:  # both modalities in one pass through the shared layers (eval-mode BN is per sample)
            net._head(net._shared(torch.cat([net._stem(images, modal) for modal, images in calibration.items()])))
        finally:
            for hook in hooks:
                hook.remove()
    return net


def preprocess(path) -> torch.Tensor:
    """The reference's test preprocessing: PIL resize to 144x288 with ANTIALIAS (Lanczos), ToTensor, ImageNet mean/std."""
    img = Image.open(path).resize((144, 288), Image.LANCZOS)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0
    return ((x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)).unsqueeze(0)
