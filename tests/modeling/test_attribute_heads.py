"""Attribute heads, the attribute loss, the co-occurrence statistics and the attribute GCN (ML-GCN)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vireid.data.attribute_table import ATTRIBUTE_NAMES, ATTRIBUTES, NUM_VALUES
from vireid.errors import ConfigError
from vireid.modeling.losses.attribute import AttributeLoss
from vireid.modeling.methods.attributes import AttributeReID
from vireid.modeling.modules.attributes import (
    NUM_NODES,
    OFFSETS,
    conditional_probabilities,
    correlation_matrix,
    pack_attribute_output,
)

A = len(ATTRIBUTES)


def _labels(rows: list[dict[str, int]]) -> np.ndarray:
    out = np.full((len(rows), A), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        for name, value in row.items():
            out[i, ATTRIBUTE_NAMES.index(name)] = value
    return out


def test_attribute_loss_is_the_mean_cross_entropy_of_known_labels_only():
    torch.manual_seed(0)
    logits = torch.randn(4, NUM_NODES, requires_grad=True)
    targets = torch.full((4, A), -1, dtype=torch.long)
    backpack, colour = ATTRIBUTE_NAMES.index("backpack"), ATTRIBUTE_NAMES.index("top_colour")
    targets[:, backpack] = torch.tensor([1, 0, -1, 1])
    targets[0, colour] = 3  # one visible image with a known colour, the rest unknown
    loss = AttributeLoss()(pack_attribute_output(logits, targets), torch.zeros(4), None)
    b0, c0 = OFFSETS[backpack], OFFSETS[colour]
    expected_backpack = F.cross_entropy(logits[[0, 1, 3], b0:b0 + 2], torch.tensor([1, 0, 1]))
    expected_colour = F.cross_entropy(logits[[0], c0:c0 + NUM_VALUES[colour]], torch.tensor([3]))
    assert torch.allclose(loss, (expected_backpack + expected_colour) / 2)
    loss.backward()
    assert logits.grad[2].abs().sum() == 0  # the image with every label unknown teaches nothing
    assert logits.grad[1, c0:c0 + NUM_VALUES[colour]].abs().sum() == 0  # nor does an unknown colour
    everything_unknown = AttributeLoss()(pack_attribute_output(logits, None), torch.zeros(4), None)
    assert float(everything_unknown.detach()) == 0.0 and everything_unknown.requires_grad


def test_cooccurrence_matches_a_loop_reference_with_unknown_labels():
    labels = _labels([
        {"gender": 0, "backpack": 1, "top_colour": 3},
        {"gender": 0, "backpack": 1},  # infrared: colour unknown
        {"gender": 1, "backpack": 0, "top_colour": 3},
        {"gender": 0, "backpack": 0, "top_colour": 4},
        {"gender": 1, "backpack": 1},
    ])
    got = conditional_probabilities(labels)
    node_of = [(a, v) for a, n in enumerate(NUM_VALUES) for v in range(n)]
    reference = np.zeros((NUM_NODES, NUM_NODES))
    for i, (ai, vi) in enumerate(node_of):
        for j, (aj, vj) in enumerate(node_of):
            both = seen = 0
            for row in labels:
                if row[ai] == vi and row[aj] >= 0:
                    seen += 1
                    both += int(row[aj] == vj)
            reference[i, j] = both / seen if seen else 0.0
    assert np.allclose(got, reference)
    male, yes = OFFSETS[0], OFFSETS[ATTRIBUTE_NAMES.index("backpack")] + 1
    red = OFFSETS[ATTRIBUTE_NAMES.index("top_colour")] + 3
    assert got[male, yes] == pytest.approx(2 / 3) and got[yes, red] == pytest.approx(1.0)  # colour on visible only
    # ML-GCN's matrix: binarise at 0.4, spread p = 0.25 over the neighbours by column, add I, D^-1/2 A D^-1/2
    adjacency = correlation_matrix(got, threshold=0.4, reweight=0.25)
    binary = (reference >= 0.4).astype(float)
    np.fill_diagonal(binary, 0)
    a = np.eye(NUM_NODES)
    for i in range(NUM_NODES):
        for j in range(NUM_NODES):
            column = binary[:, j].sum()
            a[i, j] += binary[i, j] * 0.25 / (column + 1e-6)
    d = a.sum(1) ** -0.5
    expected = np.array([[d[j] * a[i, j] * d[i] for i in range(NUM_NODES)] for j in range(NUM_NODES)])
    assert np.allclose(adjacency, expected)


def _model(fusion: str) -> AttributeReID:
    torch.manual_seed(0)
    return AttributeReID(num_classes=4, fusion=fusion, img_size=(64, 32),
                         base_params={"backbone": "resnet10t", "non_local": None})


def _trainer(labels: np.ndarray | None) -> SimpleNamespace:
    extras = {} if labels is None else {"attributes": torch.as_tensor(labels)}
    return SimpleNamespace(data=SimpleNamespace(train_loader=SimpleNamespace(extras=extras)))


def test_gcn_shapes_and_the_graph_changes_the_embedding():
    images = torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    modalities = torch.tensor([0, 1, 0, 1])
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, n, 64) for n in NUM_VALUES], axis=1)
    labels[:, ATTRIBUTE_NAMES.index("bag")] = labels[:, ATTRIBUTE_NAMES.index("backpack")]  # correlated pair
    for fusion in ("attention", "concat"):  # add: the same path as attention, another formula
        model = _model(fusion)
        dim = model.feature_dim
        width = 2 * dim if fusion == "concat" else dim
        assert model.fusion.gcn().shape == (NUM_NODES, dim)
        model.train()
        outputs = model(images, modalities, attributes=torch.as_tensor(labels[:4]))
        assert outputs["fused_features"].shape == (4, width) and outputs["fused_logits"].shape == (4, 4)
        assert outputs["attributes"].shape == (4, NUM_NODES + A)
        model.eval()
        with torch.no_grad():
            identity_graph = model(images, modalities)
            model.on_train_epoch_start(_trainer(labels), 0)
            learned_graph = model(images, modalities)
            plain_feature = model.inner(images, modalities)
        assert identity_graph.shape == learned_graph.shape == (4, width)
        assert not torch.allclose(identity_graph, learned_graph)  # the statistics reach the embedding
        if fusion == "concat":  # [f, c]: the feature, then the graph context
            assert torch.equal(learned_graph[:, :dim], plain_feature) and learned_graph[:, dim:].abs().sum() > 0
        else:
            assert not torch.allclose(learned_graph, plain_feature)
    # the statistics are stored in the model (hence in every checkpoint) and computed once
    state = model.state_dict()
    assert bool(state["fusion.gcn.ready"]) and state["fusion.gcn.adjacency"].shape == (NUM_NODES, NUM_NODES)
    again = _model("concat")
    again.load_state_dict(state)
    again.on_train_epoch_start(_trainer(labels[:3]), 1)  # already computed: not recomputed from other labels
    assert torch.equal(again.fusion.gcn.adjacency, state["fusion.gcn.adjacency"])
    again.fusion.gcn.ready.fill_(False)
    with pytest.raises(ConfigError, match=r"add data.extras: \{attributes: dataset\}"):
        again.on_train_epoch_start(_trainer(None), 0)
    with pytest.raises(ConfigError, match=r"'model.params.fusion' is 'sum'; use one of none, attention, add, concat"):
        _model("sum")


def test_predicted_attributes_have_no_colour_on_infrared_images():
    model = _model("none")
    images = torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():  # heads only: the embedding is the base method's
        assert torch.equal(model(images, torch.tensor([0, 1, 0, 1])), model.inner(images, torch.tensor([0, 1, 0, 1])))
    model.train()
    predicted = model.predict_attributes(images, torch.tensor([0, 1, 0, 1]))
    colours = [ATTRIBUTE_NAMES.index("top_colour"), ATTRIBUTE_NAMES.index("bottom_colour")]
    assert predicted.shape == (4, A) and model.training
    assert (predicted[1::2][:, colours] == -1).all() and (predicted[0::2][:, colours] >= 0).all()
    others = [i for i in range(A) if i not in colours]
    assert (predicted[:, others] >= 0).all()


def test_augmented_grey_images_lose_their_colour_labels():
    from vireid.modeling.modules.attributes import colourless, unpack_attribute_output

    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    raw = torch.rand(4, 3, 64, 32, generator=torch.Generator().manual_seed(2))
    raw[1] = raw[1, :1].expand(3, -1, -1)  # grey-scale (or one channel repeated: channel augmentation)
    raw[2] = raw[2, 1:2].expand(3, -1, -1)
    raw[2, :, :20, :16] = torch.tensor((0.9, 0.1, 0.2)).view(3, 1, 1)  # a coloured random-erasing patch
    images = (raw - mean) / std
    assert colourless(images).tolist() == [False, True, True, False]
    model = _model("none").train()
    labels = torch.as_tensor(np.tile(np.arange(A) % 2, (4, 1)))
    _, targets = unpack_attribute_output(model(images, torch.zeros(4, dtype=torch.long), attributes=labels)["attributes"])
    colours = [ATTRIBUTE_NAMES.index("top_colour"), ATTRIBUTE_NAMES.index("bottom_colour")]
    others = [i for i in range(A) if i not in colours]
    assert (targets[[1, 2]][:, colours] == -1).all() and torch.equal(targets[[0, 3]], labels[[0, 3]])
    assert torch.equal(targets[:, others], labels[:, others])
