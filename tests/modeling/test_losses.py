"""Losses against values computed by hand (derivations in the comments), plus gradients and invariants."""

from __future__ import annotations

import math

import pytest
import torch

import vireid  # noqa: F401
from vireid.errors import ConfigError
from vireid.modeling import LOSSES
from vireid.modeling.losses import (
    BatchHardTripletLoss,
    CenterLoss,
    CrossEntropyLabelSmooth,
    HeteroCenterTripletLoss,
    WeightedRegularizedTripletLoss,
    pairwise_euclidean,
)

# 1-D features on a line: identities 0 {0, 1} and 1 {3, 5}.
LINE_X = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
LINE_Y = torch.tensor([0, 0, 1, 1])


def test_registry_names() -> None:
    assert {"cross_entropy", "triplet", "wrt", "hetero_center_triplet", "center"} <= set(LOSSES.names())
    assert isinstance(LOSSES.build("triplet", margin=0.3), BatchHardTripletLoss)
    assert LOSSES.get("cross_entropy").input_key == "logits"
    assert LOSSES.get("hetero_center_triplet").needs_modalities


def test_pairwise_euclidean_3_4_5() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = pairwise_euclidean(x)
    assert d[0, 1].item() == pytest.approx(5.0, abs=1e-5)
    assert d[0, 0].item() == pytest.approx(0.0, abs=1e-5)


def test_cross_entropy_label_smoothing_by_hand() -> None:
    # logits (0, ln 3) -> p = (1/4, 3/4); label 1.
    logits = torch.tensor([[0.0, math.log(3.0)]])
    labels = torch.tensor([1])
    plain = CrossEntropyLabelSmooth(num_classes=2, epsilon=0.0)(logits, labels)
    assert plain.item() == pytest.approx(-math.log(0.75), abs=1e-6)  # 0.287682
    # eps 0.1: targets (0.05, 0.95): -(0.05 ln 1/4 + 0.95 ln 3/4) = 0.342613
    smooth = CrossEntropyLabelSmooth(num_classes=2, epsilon=0.1)(logits, labels)
    assert smooth.item() == pytest.approx(-(0.05 * math.log(0.25) + 0.95 * math.log(0.75)), abs=1e-6)
    assert smooth.item() == pytest.approx(0.342613, abs=1e-6)


def test_cross_entropy_matches_torch_when_no_smoothing_and_rejects_bad_config() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    labels = torch.tensor([0, 3, 6, 2, 2])
    ours = CrossEntropyLabelSmooth(num_classes=7, epsilon=0.0)(logits, labels)
    assert ours.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), abs=1e-6)
    with pytest.raises(ConfigError, match="epsilon"):
        CrossEntropyLabelSmooth(num_classes=7, epsilon=1.5)
    with pytest.raises(ValueError, match="classes"):
        CrossEntropyLabelSmooth(num_classes=3)(logits, labels)


def test_batch_hard_triplet_by_hand() -> None:
    # anchor at 0: d_ap 1, d_an 3 -> [1 - 3 + 0.3]+ = 0;  anchor at 1: d_ap 1, d_an 2 -> 0
    # anchor at 3: d_ap 2, d_an |3-1| = 2 -> 0.3;          anchor at 5: d_ap 2, d_an 4 -> 0
    loss = BatchHardTripletLoss(margin=0.3)(LINE_X, LINE_Y)
    assert loss.item() == pytest.approx(0.3 / 4, abs=1e-5)


def test_soft_margin_triplet_by_hand() -> None:
    # d_ap - d_an per anchor: -2, -1, 0, -2 ; mean of log(1 + e^z)
    expected = (2 * math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2)) / 4  # 0.315066
    loss = BatchHardTripletLoss(margin=None)(LINE_X, LINE_Y)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_triplet_zero_for_separated_clusters_and_no_negatives() -> None:
    x = torch.tensor([[0.0], [0.1], [10.0], [10.1]])
    assert BatchHardTripletLoss(margin=0.3)(x, LINE_Y).item() == pytest.approx(0.0, abs=1e-6)
    one_id = torch.randn(4, 3, requires_grad=True)
    loss = BatchHardTripletLoss()(one_id, torch.zeros(4, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()  # stays in the graph
    assert one_id.grad is not None


def test_triplet_gradient_pulls_positive_and_pushes_negative() -> None:
    x = LINE_X.clone().requires_grad_(True)
    BatchHardTripletLoss(margin=0.3)(x, LINE_Y).backward()
    g = x.grad.squeeze(1)
    # only anchor 3 (at 3.0) is active: d_ap = |3-5|, d_an = |3-1|.
    # dL/dx = 1/4 * (d d_ap - d d_an): anchor gets (-1 - 1)/4, positive 5 gets +1/4, negative 1 gets +1/4
    assert g.tolist() == pytest.approx([0.0, 0.25, -0.5, 0.25], abs=1e-5)


def test_wrt_by_hand() -> None:
    e = math.e
    # positives of each anchor {0, 1} or {0, 2} (the anchor counts), softmax-weighted:
    pos_01 = e / (1 + e)  # (0*1 + 1*e) / (1 + e) = 0.731059
    pos_02 = 2 * e**2 / (1 + e**2)  # 1.761594
    # negatives, softmin-weighted: {3,5}, {2,4}, {3,2}, {5,4}
    def softmin_mean(a: float, b: float) -> float:
        return (a * math.exp(-a) + b * math.exp(-b)) / (math.exp(-a) + math.exp(-b))

    terms = [
        pos_01 - softmin_mean(3, 5),
        pos_01 - softmin_mean(2, 4),
        pos_02 - softmin_mean(3, 2),
        pos_02 - softmin_mean(5, 4),
    ]
    expected = sum(math.log1p(math.exp(t)) for t in terms) / 4
    assert expected == pytest.approx(0.2070137, abs=1e-6)
    loss = WeightedRegularizedTripletLoss()(LINE_X, LINE_Y)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_wrt_gradient_finite_with_single_identity_rows() -> None:
    x = torch.tensor([[0.0, 1.0], [0.5, 1.0], [3.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    loss = WeightedRegularizedTripletLoss()(x, labels)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    only_one = torch.randn(3, 2, requires_grad=True)
    zero = WeightedRegularizedTripletLoss()(only_one, torch.zeros(3, dtype=torch.long))
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(only_one.grad).all()


# Hetero-center: id 0 visible {0, 2} -> c=1, infrared {3, 5} -> c=4; id 1 visible {10, 12} -> 11, infrared {6, 8} -> 7.
HC_X = torch.tensor([[0.0], [2.0], [3.0], [5.0], [10.0], [12.0], [6.0], [8.0]])
HC_Y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
HC_M = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])


def test_hetero_center_triplet_by_hand() -> None:
    # anchor v0=1: pos |1-4|=3, neg min(10, 6)=6 -> [0.3+3-6]+ = 0
    # anchor i0=4: pos 3, neg min(|4-11|, |4-7|)=3 -> 0.3
    # anchor v1=11: pos |11-7|=4, neg min(10, 7)=7 -> 0
    # anchor i1=7: pos 4, neg min(6, 3)=3 -> 1.3
    mean = HeteroCenterTripletLoss(margin=0.3)(HC_X, HC_Y, HC_M)
    assert mean.item() == pytest.approx(1.6 / 4, abs=1e-5)
    total = HeteroCenterTripletLoss(margin=0.3, reduction="sum")(HC_X, HC_Y, HC_M)
    assert total.item() == pytest.approx(1.6, abs=1e-5)


def test_hetero_center_triplet_ignores_batch_order_and_uses_centres() -> None:
    perm = torch.tensor([5, 2, 7, 0, 4, 1, 6, 3])
    shuffled = HeteroCenterTripletLoss()(HC_X[perm], HC_Y[perm], HC_M[perm])
    assert shuffled.item() == pytest.approx(0.4, abs=1e-5)
    # moving samples symmetrically about their centre changes nothing
    spread = HC_X.clone()
    spread[0], spread[1] = -4.0, 6.0  # visible id 0 still centred at 1
    assert HeteroCenterTripletLoss()(spread, HC_Y, HC_M).item() == pytest.approx(0.4, abs=1e-5)


def test_hetero_center_identity_with_one_modality_is_only_a_negative() -> None:
    # add id 2, visible only, at 4.5: it is no anchor, but it is now the nearest negative of i0 (d 0.5)
    x = torch.cat([HC_X, torch.tensor([[4.5]])])
    y = torch.cat([HC_Y, torch.tensor([2])])
    m = torch.cat([HC_M, torch.tensor([0])])
    # anchors: v0: pos 3, neg min(6, 3.5)=3.5 -> 0; i0: pos 3, neg 0.5 -> 2.8; v1: pos 4, neg 6.5 -> 0; i1: pos 4, neg 2.5 -> 1.8
    loss = HeteroCenterTripletLoss(margin=0.3)(x, y, m)
    assert loss.item() == pytest.approx((2.8 + 1.8) / 4, abs=1e-5)


def test_hetero_center_gradient_and_errors() -> None:
    x = HC_X.clone().requires_grad_(True)
    HeteroCenterTripletLoss()(x, HC_Y, HC_M).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="modalit"):
        HeteroCenterTripletLoss()(HC_X, HC_Y)
    with pytest.raises(ConfigError, match="reduction"):
        HeteroCenterTripletLoss(reduction="max")
    separated = HC_X.clone()
    separated[4:] += 100.0
    assert HeteroCenterTripletLoss()(separated, HC_Y, HC_M).item() == 0.0


def test_center_loss_by_hand_and_gradients() -> None:
    loss_fn = CenterLoss(num_classes=2, feat_dim=2)
    with torch.no_grad():
        loss_fn.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], requires_grad=True)
    # squared distances 1 and 1 -> (1 + 1) / (2 * B=2) = 0.5
    loss = loss_fn(x, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    loss.backward()
    # dL/dx_i = (x_i - c_yi) / B ; dL/dc_j = -(x_i - c_j) / B
    torch.testing.assert_close(x.grad, torch.tensor([[0.5, 0.0], [0.0, 0.5]]))
    torch.testing.assert_close(loss_fn.centers.grad, torch.tensor([[-0.5, 0.0], [0.0, -0.5]]))
    with pytest.raises(ValueError, match="dims"):
        loss_fn(torch.zeros(2, 3), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- autocast


def _clustered_batch(dtype: torch.dtype = torch.float32):
    """16 identities x 4 samples (2 visible, 2 infrared), far-apart centres with small spreads: the hardest
    positive / negative of an anchor is decided by distance gaps much smaller than ||x||², where the
    ``||x||² + ||y||² - 2 x·y`` form loses everything a bf16 matmul rounds off."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(16, 256, generator=gen) * 0.3 + 1.0
    x = centres.repeat_interleave(4, dim=0) + 0.05 * torch.randn(64, 256, generator=gen)
    labels = torch.arange(16).repeat_interleave(4)
    modalities = torch.tensor([0, 0, 1, 1]).repeat(16)
    return x.to(dtype), labels, modalities


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_metric_losses_compute_distances_in_fp32_under_autocast(dtype) -> None:
    from vireid.modeling.losses.cmce import CenterContrastLoss
    from vireid.modeling.losses.multi_masking import MultiMaskingTripletLoss

    x, labels, modalities = _clustered_batch()
    reference = pairwise_euclidean(x)
    with torch.autocast("cpu", dtype=dtype):
        under = pairwise_euclidean(x)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, reference)
    # the same hardest positives and negatives as fp32 (bf16 changed several of the 64 before the fix)
    same = labels.view(-1, 1) == labels.view(1, -1)
    for fill, pick, mask in ((-1.0, torch.argmax, same), (1e9, torch.argmin, ~same)):
        assert torch.equal(pick(under.masked_fill(~mask, fill), dim=1), pick(reference.masked_fill(~mask, fill), dim=1))
    losses = [BatchHardTripletLoss(0.3), WeightedRegularizedTripletLoss(), HeteroCenterTripletLoss(0.3),
              MultiMaskingTripletLoss(), CenterContrastLoss(margin=0.3)]
    for loss_fn in losses:
        expected = loss_fn(x, labels, modalities)
        with torch.autocast("cpu", dtype=dtype):
            got = loss_fn(x, labels, modalities)
            got_low = loss_fn(x.to(dtype), labels, modalities)  # features the autocast model produced
        assert got.dtype == torch.float32, type(loss_fn).__name__
        torch.testing.assert_close(got, expected, msg=type(loss_fn).__name__)
        torch.testing.assert_close(got_low, loss_fn(x.to(dtype).float(), labels, modalities), msg=type(loss_fn).__name__)
