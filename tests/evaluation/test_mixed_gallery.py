"""Mixed-modality gallery protocols against a per-query loop reference (camera rules and metrics),
and their relation to the standard protocols."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from vireid.data.records import ImageRecord
from vireid.evaluation import PROTOCOLS, run_protocol, with_modality_rows
from vireid.evaluation.distance import pairwise_distance
from vireid.evaluation.metrics import evaluate_ranking_loop
from vireid.evaluation.protocols import ProtocolError


def _pool(cameras: dict[int, str], ids: int = 10, per: int = 3, seed: int = 0) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for pid in range(1, ids + 1):
        for cam, modality in cameras.items():
            if rng.random() < 0.2:  # some identities miss some cameras
                continue
            for k in range(per):
                records.append(ImageRecord(f"cam{cam}/{pid:04d}/{k + 1:04d}.jpg", pid, cam, modality))
    return records


SYSU = {1: "visible", 2: "visible", 3: "infrared", 4: "visible", 5: "visible", 6: "infrared"}
LLCM = {**{c: "visible" for c in range(1, 5)}, **{10 + c: "infrared" for c in (1, 2, 4)}}
REGDB = {1: "visible", 2: "infrared"}


def _features(pool, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(r.pid for r in pool) + 1, 8, generator=gen)
    shift = torch.randn(8, generator=gen)
    is_ir = torch.tensor([r.modality == "infrared" for r in pool], dtype=torch.float32)
    return centres[[r.pid for r in pool]] + 0.9 * torch.randn(len(pool), 8, generator=gen) + is_ir[:, None] * shift


def _draw(pool, modality, cameras, trial):
    """Literal seeded draw: random.Random(trial), identities ascending, cameras in order, sorted files."""
    rng = random.Random(trial)
    chosen = []
    for pid in sorted({r.pid for r in pool}):
        for cam in cameras:
            files = sorted((i for i, r in enumerate(pool) if r.pid == pid and r.camid == cam and r.modality == modality),
                           key=lambda i: os.path.basename(pool[i].path))
            if files:
                chosen.append(rng.choice(files))
    return chosen


def _loop_reference(feats, pool, queries, gallery, removed, dedup, modality=None):
    """Per query: drop what the rules remove (and, for a part, the other modality), rank, average.
    ``feats`` may be a (query side, gallery side) pair."""
    q_side, g_side = feats if isinstance(feats, tuple) else (feats, feats)
    dist = pairwise_distance(q_side[queries], g_side[gallery]).numpy()
    aps, r1 = [], []
    for row, q in enumerate(queries):
        keep = [c for c, g in enumerate(gallery) if not removed(pool[q], q, pool[g], g)
                and (modality is None or pool[g].modality == modality)]
        if not keep:
            continue
        try:
            m = evaluate_ranking_loop(dist[row : row + 1, keep], [pool[q].pid], [pool[gallery[c]].pid for c in keep],
                                      dedup_cmc=dedup, max_rank=1)
        except ValueError:  # no correct match left for this query
            continue
        aps.append(m["mAP"] * 100)
        r1.append(m["cmc"][0] * 100)
    return float(np.mean(aps)), float(np.mean(r1))


def _sysu_removed(q_rec, q, g_rec, g):
    return (q_rec.camid == 3 and g_rec.camid == 2) or (q_rec.pid == g_rec.pid and q_rec.camid == g_rec.camid)


@pytest.mark.parametrize("modality", [None, "visible", "infrared"])
def test_sysu_mixed_matches_the_loop_reference(modality):
    pool = _pool(SYSU)
    feats = _features(pool)
    result = run_protocol("sysu-all-mixed", feats, pool, trials=2)
    queries = [i for i, r in enumerate(pool) if r.camid in (3, 6)]
    for t in range(2):
        gallery = _draw(pool, "visible", (1, 2, 4, 5), t) + _draw(pool, "infrared", (3, 6), t)
        m_ap, r1 = _loop_reference(feats, pool, queries, gallery, _sysu_removed, True, modality)
        figures = result.trials[t] if modality is None else result.settings["by_gallery_modality"][modality]["trials"][t]
        assert figures["mAP"] == pytest.approx(m_ap, abs=1e-6) and figures["rank1"] == pytest.approx(r1, abs=1e-6)
        # the query itself is in the infrared gallery, and the rule removes it
        assert set(queries) & set(gallery)
    # a (query side, gallery side) feature pair: e.g. corrupted queries against the clean gallery
    pair = (feats + 0.5 * torch.randn(feats.shape, generator=torch.Generator().manual_seed(4)), feats)
    result = run_protocol("sysu-all-mixed", pair, pool, trials=1)
    gallery = _draw(pool, "visible", (1, 2, 4, 5), 0) + _draw(pool, "infrared", (3, 6), 0)
    m_ap, r1 = _loop_reference(pair, pool, queries, gallery, _sysu_removed, True, modality)
    figures = result.trials[0] if modality is None else result.settings["by_gallery_modality"][modality]["trials"][0]
    assert figures["mAP"] == pytest.approx(m_ap, abs=1e-6) and figures["rank1"] == pytest.approx(r1, abs=1e-6)
    if modality == "visible":  # the standard protocol takes the same pair
        standard = run_protocol("sysu-all-single", pair, pool, trials=1)
        assert standard.mean["mAP"] == pytest.approx(figures["mAP"])


def test_llcm_and_regdb_mixed_match_the_loop_reference():
    pool = _pool(LLCM, seed=1)
    feats = _features(pool, 1)
    result = run_protocol("llcm-i2mixed", feats, pool, trials=2)
    queries = [i for i, r in enumerate(pool) if r.modality == "infrared"]
    for t in range(2):
        gallery = _draw(pool, "visible", sorted(c for c in LLCM if LLCM[c] == "visible"), t)
        gallery += _draw(pool, "infrared", sorted(c for c in LLCM if LLCM[c] == "infrared"), t)
        same_cam = lambda qr, q, gr, g: qr.pid == gr.pid and qr.camid == gr.camid  # noqa: E731
        m_ap, r1 = _loop_reference(feats, pool, queries, gallery, same_cam, True)
        assert result.trials[t]["mAP"] == pytest.approx(m_ap, abs=1e-6) and result.trials[t]["rank1"] == pytest.approx(r1, abs=1e-6)
    pool = _pool(REGDB, seed=2)
    feats = _features(pool, 2)
    result = run_protocol("regdb-v2mixed", feats, pool)
    queries = [i for i, r in enumerate(pool) if r.modality == "visible"]
    itself = lambda qr, q, gr, g: q == g  # noqa: E731  (RegDB: only the query image itself is removed)
    for modality in (None, "visible"):
        m_ap, r1 = _loop_reference(feats, pool, queries, list(range(len(pool))), itself, False, modality)
        figures = result.trials[0] if modality is None else result.settings["by_gallery_modality"][modality]["trials"][0]
        assert figures["mAP"] == pytest.approx(m_ap, abs=1e-6) and figures["rank1"] == pytest.approx(r1, abs=1e-6)


def test_cross_modality_part_equals_the_standard_protocol_and_rows_expand():
    pool = _pool(SYSU)
    feats = _features(pool)
    mixed = run_protocol("sysu-all-mixed", feats, pool, trials=3)
    standard = run_protocol("sysu-all-single", feats, pool, trials=3)
    assert mixed.settings["by_gallery_modality"]["visible"]["mean"] == pytest.approx(standard.mean)
    rows = with_modality_rows(mixed)
    assert [r.name for r in rows] == ["sysu-all-mixed", "sysu-all-mixed/visible", "sysu-all-mixed/infrared"]
    assert rows[1].settings["gallery_modality"] == "visible" and rows[0].to_dict()["settings"]["by_gallery_modality"]
    for name in ("sysu-indoor-mixed", "regdb-t2mixed", "llcm-v2mixed"):
        assert name in PROTOCOLS
    with pytest.raises(ProtocolError, match="no query image"):
        run_protocol("llcm-v2mixed", feats[:0], [])


def test_official_draw_takes_the_infrared_cells_of_rand_perm_cam():
    from test_protocols import RAND_PERM, _official_pool, identity_features

    from vireid.evaluation.mixed import _sysu_infrared_draws
    from vireid.evaluation.protocols import load_rand_perm_cam

    perms = load_rand_perm_cam(RAND_PERM)
    pool = _official_pool([6, 10, 17])
    for trial in (0, 3):
        drawn = _sysu_infrared_draws(pool, "all", 1, [trial], "official", perms)[0]
        expected = [f"cam{cam}/{pid:04d}/{k:04d}.jpg" for cam in (3, 6) for pid in (6, 10, 17)
                    if perms[cam][pid - 1] is not None for k in perms[cam][pid - 1][trial, :1].tolist()]
        assert [pool[i].path for i in drawn] == expected
    feats = identity_features(pool, noise=0.3)
    mixed = run_protocol("sysu-all-mixed", feats, pool, trials=2, draw="official", rand_perm_cam=RAND_PERM)
    standard = run_protocol("sysu-all-single", feats, pool, trials=2, draw="official", rand_perm_cam=RAND_PERM)
    assert mixed.settings["draw"] == "official"
    assert mixed.settings["by_gallery_modality"]["visible"]["mean"] == pytest.approx(standard.mean)
