"""The CUDA paths: bf16/fp16 autocast (fp16 with its gradient scaler), channels_last, torch.compile,
one-process NCCL DDP, ranking and re-ranking on the GPU against the CPU results, and the prefetching
loader with its batch augmentation on the GPU.

Marked ``cuda`` and skipped without a CUDA device; ``benchmarks/gpu_check.sh`` runs them
(``pytest -m cuda``) on a GPU machine.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_overrides
from vireid.config import load_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by benchmarks/gpu_check.sh)"),
]

CONFIG = REPO / "configs" / "baseline_synth.yaml"


def cuda_cfg(root, out, **extra):
    values = {"train.device": "cuda", "train.epochs": 1, "sampler.epoch_length": 4, "train.eval_every": 0, **extra}
    return load_config(CONFIG, tiny_overrides(root, out, **values))


def _train(cfg, run_dir):
    from vireid.engine.trainer import Trainer

    trainer = Trainer(cfg, run_dir)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    return trainer, summary


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("auto", None)])
def test_autocast_training_on_cuda(tiny_synth_root, tmp_path, amp, dtype):
    trainer, summary = _train(cuda_cfg(tiny_synth_root, tmp_path, **{"train.amp": amp}), tmp_path / "run")
    p = trainer.precision
    assert p.device_type == "cuda"
    if dtype is not None:
        assert p.dtype == dtype
    else:  # auto on a GPU: bf16 where supported, fp16 elsewhere
        assert p.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert trainer.scaler.is_enabled() == (p.dtype == torch.float16)  # GradScaler for fp16 only
    assert np.isfinite(summary["history"][-1]["loss"])
    model = trainer.core_model
    assert next(model.parameters()).is_cuda
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    if p.grad_scaler:
        assert trainer.scaler.get_scale() > 0


def test_compiled_training_on_cuda(tiny_synth_root, tmp_path):
    cfg = cuda_cfg(tiny_synth_root, tmp_path, **{"train.amp": "bf16" if torch.cuda.is_bf16_supported() else "fp16",
                                                 "train.compile": True, "sampler.epoch_length": 3})
    trainer, summary = _train(cfg, tmp_path / "run")
    assert trainer.forward_model is not trainer.model  # the compiled wrapper ran the steps
    assert np.isfinite(summary["history"][-1]["loss"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_nccl_ddp_matches_the_plain_model(monkeypatch):
    import torch.distributed as dist

    from vireid.modeling.methods.baseline import BaselineReID

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = BaselineReID(num_classes=5, backbone="resnet10t", non_local=None, img_size=(64, 32)).cuda()
        wrapped = BaselineReID(num_classes=5, backbone="resnet10t", non_local=None, img_size=(64, 32)).cuda()
        wrapped.load_state_dict(plain.state_dict())
        ddp = torch.nn.parallel.DistributedDataParallel(wrapped, device_ids=[torch.cuda.current_device()])
        images = torch.randn(8, 3, 64, 32, device="cuda")
        mods = torch.tensor([0, 1] * 4, device="cuda")
        for model in (plain, ddp):
            model(images, mods)["logits"].sum().backward()
        for (name, a), b in zip(plain.named_parameters(), wrapped.parameters()):
            if a.grad is not None:
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
        flag = torch.ones(1, device="cuda")
        dist.all_reduce(flag)
        assert flag.item() == 1.0
    finally:
        dist.destroy_process_group()


def test_ranking_and_reranking_on_cuda_match_cpu():
    from vireid.evaluation import evaluate_ranking, pairwise_distance
    from vireid.evaluation.rerank import k_reciprocal_rerank

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 64, generator=g)
    q_ids, g_ids = torch.arange(120) % 30, torch.arange(300) % 30
    qf = centres[q_ids] + 0.8 * torch.randn(120, 64, generator=g)
    gf = centres[g_ids] + 0.8 * torch.randn(300, 64, generator=g)
    cpu = pairwise_distance(qf, gf)
    gpu = pairwise_distance(qf.cuda(), gf.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    q_cams, g_cams = np.full(120, 3), np.full(300, 1)
    a = evaluate_ranking(cpu, q_ids.numpy(), g_ids.numpy(), q_cams, g_cams)
    b = evaluate_ranking(cpu.cuda(), q_ids.numpy(), g_ids.numpy(), q_cams, g_cams)
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-6) and np.allclose(a["cmc"], b["cmc"])
    rr_cpu = k_reciprocal_rerank(cpu, pairwise_distance(qf, qf), pairwise_distance(gf, gf))
    rr_gpu = k_reciprocal_rerank(cpu.cuda(), pairwise_distance(qf, qf).cuda(), pairwise_distance(gf, gf).cuda())
    np.testing.assert_allclose(rr_gpu, rr_cpu, rtol=1e-4, atol=1e-4)


def test_prefetch_loader_augments_on_the_gpu_like_the_cpu(tiny_synth_root):
    """pad/crop/flip, random erasing, channel exchange and grayscale run on the GPU batch, with the CPU
    generator deciding, so the GPU batches equal the CPU ones."""
    from vireid.data.cache import ImageCache
    from vireid.data.datasets import build_dataset
    from vireid.data.loader import TrainLoader
    from vireid.data.records import MODALITY_CODE
    from vireid.data.sampler import CrossModalityIdentitySampler
    from vireid.data.transforms import build_train_transform

    records = build_dataset("sysu-mm01", tiny_synth_root, train_includes_val=True).train
    cache = ImageCache.build([r.path for r in records], 64, 32, progress=False)
    labels = np.asarray([r.pid for r in records])
    mods = np.asarray([MODALITY_CODE[r.modality] for r in records])

    def batches(device):
        sampler = CrossModalityIdentitySampler(labels, mods, num_ids=4, num_per_modality=2, seed=0, epoch_length=5)
        transform = build_train_transform(64, 32, pad=4, flip=0.5, random_erasing=0.5, channel_aug=True, grayscale=0.5)
        loader = TrainLoader(cache, labels, mods, sampler, transform, device=device, seed=0)
        assert loader.prefetch == (2 if device == "cuda" else 0)  # the background thread feeds the GPU
        return list(loader)

    on_gpu, on_cpu = batches("cuda"), batches("cpu")
    assert len(on_gpu) == len(on_cpu) == 5
    for a, b in zip(on_gpu, on_cpu):
        assert a.images.is_cuda and a.labels.is_cuda and a.images.dtype == torch.float32
        assert torch.equal(a.indices, b.indices)
        torch.testing.assert_close(a.images.cpu(), b.images, rtol=1e-5, atol=1e-5)
    assert cache.gather([3, 1], pin=True).is_pinned()  # the batches are gathered into page-locked memory
