"""Declarative protocols: a ProtocolSpec reproduces the official protocols' numbers exactly, one
ProtocolOptions carries the ranking keywords of every protocol, and evaluation asks a spec which
options it takes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from test_protocols import identity_features, llcm_pool, uniform_sysu_pool
from vireid.data.records import INFRARED, VISIBLE
from vireid.evaluation.protocols import (
    PROTOCOLS,
    ProtocolError,
    ProtocolOptions,
    ProtocolSpec,
    QueryRule,
    SeededPerCamera,
    SysuGalleryDraw,
    protocol_accepts,
    run_protocol,
    sysu_protocol,
)


def _same_numbers(a, b) -> None:
    assert a.trials == b.trials
    assert a.mean == b.mean and a.std == b.std and np.array_equal(a.cmc, b.cmc)
    for key in ("num_rel", "first", "ap", "inp", "query_index"):
        assert np.array_equal(a.per_query[key], b.per_query[key])


@pytest.mark.parametrize("options", [{}, {"rerank": True, "metric": "cosine"}, {"normalize": False, "max_rank": 5}])
def test_a_spec_written_by_hand_reproduces_sysu_all_single(options):
    pool = uniform_sysu_pool(num_ids=6, per_folder=4)
    feats = identity_features(pool, noise=1.5, seed=2)
    mine = ProtocolSpec(
        name="my-sysu", description="SYSU-MM01 all-search, single-shot, as a spec", dataset="sysu-mm01",
        query=QueryRule(INFRARED, cameras=(3, 6)), gallery=SysuGalleryDraw(), cam_rule="sysu", dedup_cmc=True,
        settings={"mode": "all", "shots": 1},
    )
    official = run_protocol("sysu-all-single", feats, pool, trials=3, **options)
    result = mine(feats, pool, trials=3, **options)
    _same_numbers(result, official)
    assert result.name == "my-sysu" and result.settings == official.settings


def test_a_spec_reproduces_llcm_and_takes_its_options_as_one_object():
    pool = llcm_pool()
    feats = identity_features(pool, noise=1.0, seed=5)
    mine = ProtocolSpec(name="my-llcm", description="LLCM infrared -> visible", dataset="llcm",
                        query=QueryRule(INFRARED), gallery=SeededPerCamera(VISIBLE), cam_rule="same-camera",
                        dedup_cmc=True, settings={"direction": "infrared-to-visible"})
    options = ProtocolOptions(metric="cosine", max_rank=10)
    _same_numbers(mine(feats, pool, options, trials=2), run_protocol("llcm-i2v", feats, pool, trials=2, metric="cosine",
                                                                      max_rank=10))
    # keywords over an options object override it, as the split documents
    split, rest = ProtocolOptions.split({"metric": "euclidean", "trials": 2}, options)
    assert split == ProtocolOptions(metric="euclidean", max_rank=10) and rest == {"trials": 2}


def test_protocol_functions_take_an_options_object():
    pool = uniform_sysu_pool(num_ids=4, per_folder=3)
    feats = identity_features(pool, noise=1.0)
    by_keywords = sysu_protocol(feats, pool, trials=2, rerank=True, rerank_params={"k1": 5, "k2": 2, "lambda_value": 0.5})
    by_object = sysu_protocol(feats, pool, trials=2,
                              options=ProtocolOptions(rerank=True, rerank_params={"k1": 5, "k2": 2, "lambda_value": 0.5}))
    _same_numbers(by_object, by_keywords)
    assert by_object.settings["rerank"] == {"k1": 5, "k2": 2, "lambda_value": 0.5}


def test_spec_options_are_checked_in_one_sentence():
    pool = uniform_sysu_pool(num_ids=2, per_folder=2)
    feats = identity_features(pool)
    with pytest.raises(ProtocolError, match=r"protocol regdb-v2t has no option 'trials'; its options are split, rerank"):
        run_protocol("regdb-v2t", feats, pool, trials=3)
    with pytest.raises(ProtocolError, match="fixes shots"):
        run_protocol("sysu-all-single", feats, pool, shots=10)
    assert protocol_accepts("sysu-all-mixed", "draw") and protocol_accepts("npu-v2t-all-single", "gallery")
    assert not protocol_accepts("llcm-v2i", "draw") and protocol_accepts("given", "rerank")
    assert not protocol_accepts("given", "trials") and not protocol_accepts("no-such-protocol", "trials")


def test_evaluation_gives_a_registered_spec_the_options_it_takes(monkeypatch):
    from vireid.workflows.evaluate_model import evaluate_features, protocols_for

    pool = uniform_sysu_pool(num_ids=4, per_folder=3)
    feats = identity_features(pool, noise=1.0)
    spec = ProtocolSpec(name="camera3-visible", description="camera-3 queries", dataset="sysu-mm01",
                        query=QueryRule(INFRARED, cameras=(3,)), gallery=SeededPerCamera(VISIBLE, (1, 2, 4, 5)),
                        cam_rule="sysu", dedup_cmc=True, family="sysu")
    monkeypatch.setitem(PROTOCOLS._items, spec.name, spec)
    dataset = SimpleNamespace(test=pool, protocol_family="sysu", root=".")
    assert protocols_for(dataset, [spec.name]) == [spec.name]  # fits a SYSU-MM01 dataset by its family
    (result,) = evaluate_features(feats, dataset, [spec.name], trials=2, draw="seeded", npu_gallery="per_person")
    assert result.settings["trials"] == 2 and result.settings["draw"] == "seeded" and "gallery" not in result.settings
    assert result.trials[0]["num_query"] == sum(1 for r in pool if r.camid == 3)
