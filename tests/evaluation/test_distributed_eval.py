"""Chunked ranking split over ranks and devices: identical to ``evaluate_ranking`` in one process, and
across two gloo processes launched by torchrun as two "nodes" (the multi-node command line of
docs/distributed.md, on one machine)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from vireid.evaluation import evaluate_ranking, pairwise_distance
from vireid.evaluation.distributed import distributed_evaluate_ranking, shard_range
from vireid.evaluation.metrics import evaluate_ranking_trials

WORKER = textwrap.dedent('''
    """Worker of test_distributed_eval: every rank ranks its share of the queries; rank results are gathered."""
    import json
    import os
    import sys

    import numpy as np
    import torch


    def make_data(seed=0, num_q=301, num_g=517, num_ids=40, dim=24):
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(num_ids, dim))
        q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
        qf = torch.tensor(centres[q_pids] + 1.2 * rng.normal(size=(num_q, dim)), dtype=torch.float32)
        gf = torch.tensor(centres[g_pids] + 1.2 * rng.normal(size=(num_g, dim)), dtype=torch.float32)
        return qf, gf, q_pids, g_pids, rng.integers(1, 7, num_q), rng.integers(1, 7, num_g)


    def main(out_dir):
        import torch.distributed as dist

        from vireid.evaluation.distributed import distributed_evaluate_ranking

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        qf, gf, qp, gp, qc, gc = make_data()
        results = {}
        for rule, dedup in ((None, False), ("sysu", True), ("same-camera", False)):
            res = distributed_evaluate_ranking(qf, gf, qp, gp, qc, gc, cam_rule=rule, dedup_cmc=dedup,
                                               max_elements=4000, devices=["cpu", "cpu"] if rank == 0 else None)
            results[str(rule)] = {"cmc": res["cmc"].tolist(), "mAP": res["mAP"], "mINP": res["mINP"],
                                  "num_valid_queries": res["num_valid_queries"]}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump({"world": world, "results": results}, fh)
        dist.destroy_process_group()


    if __name__ == "__main__":
        main(sys.argv[1])
''')


def _load_worker(path: Path):
    spec = importlib.util.spec_from_file_location("dist_eval_worker", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(seed=0, num_q=120, num_g=260, num_ids=25, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    qf = (centres[q_pids] + rng.normal(size=(num_q, dim))).astype(np.float32)
    gf = (centres[g_pids] + rng.normal(size=(num_g, dim))).astype(np.float32)
    return qf, gf, q_pids, g_pids, rng.integers(1, 7, num_q), rng.integers(1, 7, num_g)


def _same(ref: dict, out: dict) -> None:
    """Same ranks (CMC, valid queries) exactly; mAP/mINP up to the float64 rounding of the per-query sums
    (torch may order a row's reduction differently for another chunk shape)."""
    np.testing.assert_array_equal(ref["cmc"], out["cmc"])
    assert out["mAP"] == pytest.approx(ref["mAP"], rel=1e-13, abs=0)
    assert out["mINP"] == pytest.approx(ref["mINP"], rel=1e-13, abs=0)
    assert ref["num_valid_queries"] == out["num_valid_queries"]


def test_shard_range_covers_everything_once():
    for n in (0, 1, 7, 100):
        for world in (1, 2, 3, 8):
            spans = [shard_range(n, r, world) for r in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            sizes = [hi - lo for lo, hi in spans]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        shard_range(5, 2, 2)


@pytest.mark.parametrize("cam_rule,dedup", [(None, False), ("sysu", True), ("same-camera", False), ("same-camera", True)])
def test_chunked_ranking_equals_evaluate_ranking(cam_rule, dedup):
    qf, gf, qp, gp, qc, gc = _data()
    ref = evaluate_ranking(pairwise_distance(qf, gf), qp, gp, qc, gc, cam_rule=cam_rule, dedup_cmc=dedup)
    # tiny chunks (2 queries each), queries split over two "devices" (threads)
    out = distributed_evaluate_ranking(qf, gf, qp, gp, qc, gc, cam_rule=cam_rule, dedup_cmc=dedup,
                                       max_elements=2 * len(gf), devices=["cpu", "cpu"])
    _same(ref, out)


def test_many_matches_cosine_and_trials(tmp_path):
    qf, gf, qp, gp, qc, gc = _data(num_g=700, num_ids=10)  # ~70 gallery images per identity: the sorting path
    ref = evaluate_ranking(pairwise_distance(qf, gf, metric="cosine"), qp, gp, max_rank=5)
    mapped = np.lib.format.open_memmap(tmp_path / "q.npy", mode="w+", dtype=np.float32, shape=qf.shape)
    mapped[:] = qf
    out = distributed_evaluate_ranking(mapped, gf, qp, gp, metric="cosine", max_rank=5, max_elements=5000)
    _same(ref, out)

    qf, gf, qp, gp, qc, gc = _data(seed=1)
    rng = np.random.default_rng(5)
    trials = [rng.choice(len(gf), 90, replace=False) for _ in range(3)]
    refs = evaluate_ranking_trials(pairwise_distance(qf, gf), qp, gp, trials, qc, gc, cam_rule="sysu")
    outs = distributed_evaluate_ranking(qf, gf, qp, gp, qc, gc, cam_rule="sysu", trial_columns=trials, max_elements=1000)
    assert len(outs) == 3
    for ref, out in zip(refs, outs):
        _same(ref, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_as_two_nodes_give_the_single_process_result(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    port = _free_port()
    launchers = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
             "--master_addr=127.0.0.1", f"--master_port={port}", str(worker), str(tmp_path)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for node in (0, 1)
    ]
    for launcher in launchers:
        output, _ = launcher.communicate(timeout=240)
        assert launcher.returncode == 0, output[-3000:]

    module = _load_worker(worker)
    qf, gf, qp, gp, qc, gc = module.make_data()
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    assert reports[0]["results"] == reports[1]["results"]  # every rank gets the gathered result
    for rule, dedup in ((None, False), ("sysu", True), ("same-camera", False)):
        ref = evaluate_ranking(pairwise_distance(qf, gf), qp, gp, qc, gc, cam_rule=rule, dedup_cmc=dedup)
        got = reports[0]["results"][str(rule)]
        _same(ref, {**got, "cmc": np.asarray(got["cmc"])})
