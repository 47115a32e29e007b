"""Plugin for tests/workflows/test_federated.py: ``fed_tiny_cnn``, a two-convolution model with the trainer's
interface, small enough that a federated round of several client processes takes seconds on CPU."""

import torch
from torch import nn

from vireid.modeling import METHODS


@METHODS.register("fed_tiny_cnn")
class FedTinyCNN(nn.Module):
    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.neck = nn.BatchNorm1d(2 * width)
        self.classifier = nn.Linear(2 * width, num_classes, bias=False)
        self.embed_dim = 2 * width

    def forward(self, images, modalities, **extras):
        features = self.body(images).float().mean(dim=(2, 3))
        bn = self.neck(features)
        if not self.training:
            return bn
        return {"features": features, "bn_features": bn, "logits": self.classifier(bn)}
