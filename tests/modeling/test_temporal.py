"""Temporal models (``model.method: temporal``): grouping frames into tracklets, each head's shapes and
gradients, test-time frame choice, still images, and the one-sentence refusals."""

from __future__ import annotations

import pytest
import torch

import vireid.builtins  # noqa: F401
from vireid.errors import ConfigError, VireidError
from vireid.modeling.methods.temporal import clip_frames, evenly_spaced, split_repeated_clips
from vireid.modeling.modules.temporal import TEMPORAL_HEADS, tracklet_segments
from vireid.modeling.registries import METHODS

HEADS = tuple(TEMPORAL_HEADS)


def build(temporal: str, **params):
    torch.manual_seed(0)
    values = {"backbone": "resnet10t", "temporal": temporal, "seq_len": 3, "img_size": (32, 16), **params}
    return METHODS.build_checked("temporal", values, key="model.params", num_classes=4)


def batch(ids: list[int]):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(len(ids), 3, 32, 16, generator=generator)
    modalities = torch.tensor([0 if i % 2 == 0 else 1 for i in range(len(ids))])
    return images, modalities, torch.tensor(ids)


def test_segments_group_runs_of_equal_ids_in_order_and_still_images_alone():
    segment, starts, lengths = tracklet_segments(torch.tensor([7, 7, 7, 3, 3, -1, -1, 7, 7]), 9)
    assert segment.tolist() == [0, 0, 0, 1, 1, 2, 3, 4, 4]
    assert starts.tolist() == [0, 3, 5, 6, 7] and lengths.tolist() == [3, 2, 1, 1, 2]
    segment, _, lengths = tracklet_segments(None, 4)
    assert segment.tolist() == [0, 1, 2, 3] and lengths.tolist() == [1, 1, 1, 1]
    with pytest.raises(VireidError, match="one tracklet id per frame"):
        tracklet_segments(torch.zeros(3, 2, dtype=torch.long), 3)


@pytest.mark.parametrize("temporal", HEADS)
def test_each_head_gives_one_row_per_tracklet_repeated_over_its_frames_and_trains(temporal):
    model = build(temporal)
    # tracklets 0 (3 frames), 1 (3), 2 (3), 3 (3): frames of a tracklet share a modality
    ids = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    images, _, tracklets = batch(ids)
    modalities = torch.tensor([0] * 3 + [1] * 3 + [0] * 3 + [1] * 3)
    model.train()
    out = model(images, modalities, tracklets=tracklets)
    assert out["features"].shape == (12, model.embed_dim) and out["logits"].shape == (12, 4)
    for start in (0, 3, 6, 9):  # every frame carries its tracklet's row, tracklets in batch order
        assert torch.equal(out["features"][start], out["features"][start + 2])
    assert not torch.allclose(out["features"][0], out["features"][3])
    (out["logits"].logsumexp(1).mean() + out["features"].pow(2).mean()).backward()
    head_grads = [p.grad for p in model.temporal.parameters()]
    if head_grads:  # the parameter-free average has none
        assert any(g is not None and float(g.abs().sum()) > 0 for g in head_grads)
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.backbone.parameters())

    model.eval()
    with torch.no_grad():
        embedding = model(images, modalities, tracklets=tracklets)
        alone = model(images[3:6], modalities[3:6], tracklets=tracklets[3:6])
    assert embedding.shape == (12, model.embed_dim)
    assert torch.allclose(embedding[3:6], alone, atol=1e-5)  # a tracklet's embedding does not depend on its neighbours


def test_training_output_equals_the_per_tracklet_forward():
    """Broadcasting is only a repetition: the rows equal a forward of one frame-stack per tracklet."""
    model = build("gru").eval()
    images, modalities, _ = batch([0] * 6)
    modalities = torch.zeros(6, dtype=torch.long)
    with torch.no_grad():
        two = model(images, modalities, tracklets=torch.tensor([4, 4, 4, 9, 9, 9]))
        first = model(images[:3], modalities[:3], tracklets=torch.tensor([4, 4, 4]))
    assert torch.allclose(two[:3], first, atol=1e-5)


def test_frame_order_matters_for_the_rnn_but_not_for_the_average():
    images, _, tracklets = batch([1, 1, 1])
    modalities = torch.zeros(3, dtype=torch.long)
    reversed_images = images.flip(0)
    for temporal, same in (("avg", True), ("gru", False)):
        model = build(temporal).eval()
        with torch.no_grad():
            forward = model(images, modalities, tracklets=tracklets)[0]
            backward = model(reversed_images, modalities, tracklets=tracklets)[0]
        assert torch.allclose(forward, backward, atol=1e-5) == same, temporal


def test_still_images_are_tracklets_of_one_frame():
    model = build("attention").eval()
    images, modalities, _ = batch([0, 1, 2, 3])
    with torch.no_grad():
        still = model(images, modalities, tracklets=torch.full((4,), -1))
        without = model(images, modalities)
        one = model(images[:1], modalities[:1])
    assert torch.allclose(still, without) and torch.allclose(still[0], one[0], atol=1e-5)
    assert not torch.allclose(still[0], still[1])


def test_test_time_frame_choice():
    # chunk middles: 12 frames in 3 chunks [0, 4), [4, 8), [8, 12); 7 frames: [0, 2), [2, 4), [4, 7)
    assert evenly_spaced(12, 3).tolist() == [1, 5, 9] and evenly_spaced(2, 6).tolist() == [0, 1]
    assert [c.tolist() for c in clip_frames(7, 3, "all")] == [[0, 1, 2], [3, 4, 5], [4, 5, 6]]
    assert [c.tolist() for c in clip_frames(7, 3, "evenly")] == [[0, 2, 5]]
    images, modalities, _ = batch([0] * 7)
    modalities = torch.zeros(7, dtype=torch.long)
    tracklets = torch.zeros(7, dtype=torch.long)
    evenly = build("avg").eval()
    every = build("avg", test_frames="all").eval()
    with torch.no_grad():
        picked = evenly(images[[0, 2, 5]], modalities[:3], tracklets=tracklets[:3])[0]
        chunks = [every(images[c], modalities[:3], tracklets=tracklets[:3])[0] for c in ([0, 1, 2], [3, 4, 5], [4, 5, 6])]
        assert torch.allclose(evenly(images, modalities, tracklets=tracklets)[0], picked, atol=1e-5)
        assert torch.allclose(every(images, modalities, tracklets=tracklets)[0], torch.stack(chunks).mean(0), atol=1e-5)


def test_bad_inputs_are_one_sentence():
    with pytest.raises(ConfigError, match="model.params.temporal' is 'transformer'; choose one of avg, gru"):
        build("transformer")
    with pytest.raises(ConfigError, match="test_frames' is 'some'; choose evenly .* or mitml"):
        build("avg", test_frames="some")
    with pytest.raises(ConfigError, match="seq_len' is 0"):
        build("avg", seq_len=0)
    model = build("conv2plus1d").train()
    images, modalities, _ = batch([0, 0, 0, 1, 1])
    with pytest.raises(VireidError, match=r"same number of frames, but this batch has tracklets of 2 to 3 frames"):
        model(images, modalities, tracklets=torch.tensor([0, 0, 0, 1, 1]))
    build("gru").train()(images, modalities, tracklets=torch.tensor([0, 0, 0, 1, 1]))  # the others take any lengths


def test_a_config_without_the_tracklets_extra_is_refused(tmp_path):
    from vireid.config import config_from_dict
    from vireid.engine.trainer import build_model

    cfg = config_from_dict({"data": {"format": "synthetic", "root": str(tmp_path), "height": 32, "width": 16},
                            "model": {"method": "temporal", "params": {"backbone": "resnet10t"}}})
    with pytest.raises(ConfigError, match=r"temporal reads the side input 'tracklets', which the config does not give; "
                                          r"add data.extras: \{tracklets: dataset\}"):
        build_model(cfg, 4)
    cfg.data.extras = {"tracklets": "dataset"}
    assert build_model(cfg, 4).temporal_name == "avg"


def test_embedding_only_the_chosen_frames_gives_the_same_tracklet_embeddings():
    from vireid.data.records import ImageRecord
    from vireid.modeling.methods.temporal import TemporalReID

    lengths = [7, 2, 1]
    records = [ImageRecord(f"t{t}/{f}.jpg", 1, 1, "visible", tracklet=t) for t, n in enumerate(lengths) for f in range(n)]
    records.insert(7, ImageRecord("still.jpg", 2, 1, "visible"))
    assert [c.tolist() for c in clip_frames(8, 6, "mitml")] == [[0, 2, 4, 6, 7, 7]]  # MITML's video_test frames
    assert [c.tolist() for c in clip_frames(2, 3, "mitml")] == [[0, 1, 1]]
    chosen = TemporalReID.frames_to_embed(records, {"seq_len": 3})
    assert [r.path for r in chosen] == ["t0/0.jpg", "t0/2.jpg", "t0/5.jpg", "still.jpg", "t1/0.jpg", "t1/1.jpg",
                                        "t2/0.jpg"]
    assert TemporalReID.frames_to_embed(records, {"seq_len": 3, "test_frames": "all"}) == records
    model = build("lstm").eval()
    images, modalities, _ = batch([0] * len(records))
    modalities = torch.zeros(len(records), dtype=torch.long)
    ids = torch.tensor([r.tracklet for r in records])
    rows = [records.index(r) for r in chosen]
    with torch.no_grad():
        full = model(images, modalities, tracklets=ids)
        reduced = model(images[rows], modalities[rows], tracklets=ids[rows])
    assert torch.allclose(full[rows], reduced, atol=1e-5)
    mitml = build("lstm", test_frames="mitml").eval()  # 7 frames, T=3: step 3 -> frames 0, 3, 6
    chosen = TemporalReID.frames_to_embed(records, {"seq_len": 3, "test_frames": "mitml"})
    assert [r.path for r in chosen][:3] == ["t0/0.jpg", "t0/3.jpg", "t0/6.jpg"]
    rows = [records.index(r) for r in chosen]
    with torch.no_grad():
        full = mitml(images, modalities, tracklets=ids)
        reduced = mitml(images[rows], modalities[rows], tracklets=ids[rows])
    assert torch.allclose(full[rows], reduced, atol=1e-5)  # t1 (2 frames -> 0, 1, 1) included


def test_a_tracklet_drawn_twice_in_a_row_is_two_training_clips():
    assert split_repeated_clips(torch.tensor([3, 6, 3, 9])).tolist() == [3] * 7
    assert split_repeated_clips(torch.tensor([3, 4, 3])).tolist() == [3, 4, 3]  # not clips of one length: as given
    model = build("conv2plus1d").train()
    images, modalities, _ = batch([0] * 9)
    out = model(images, torch.zeros(9, dtype=torch.long), tracklets=torch.tensor([5, 5, 5, 7, 7, 7, 7, 7, 7]))
    assert not torch.allclose(out["features"][3], out["features"][6])  # tracklet 7's two clips: two rows
