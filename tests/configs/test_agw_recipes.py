"""The shipped AGW / CAJ recipes against the released reference code, value by value, and the parts
they need: AGW's one-channel non-local block, its GeM formula, its per-epoch warm-up, Lanczos
resizing, the POOL/FC embedding choice, and the generated docs/reproducing.md.

Reference values: ``train.py`` (AGW) and ``ICCV21_CAJ/train_ext.py`` + ``ICCV21_CAJ/data_loader.py``
(CAJ) of mangye16/Cross-Modal-Re-ID-baseline.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REAL_MINI, REPO
from vireid.config import load_config
from vireid.errors import ConfigError


def _reference_lr(epoch: int, lr: float = 0.1) -> float:
    """adjust_learning_rate of train.py / train_ext.py, for the head's groups."""
    if epoch < 10:
        return lr * (epoch + 1) / 10
    if epoch < 20:
        return lr
    if epoch < 50:
        return lr * 0.1
    return lr * 0.01


def _agw_common(cfg) -> None:
    assert (cfg.data.height, cfg.data.width, cfg.data.resample) == (288, 144, "lanczos")
    assert (cfg.sampler.num_ids, cfg.sampler.num_per_modality, cfg.sampler.epoch_length) == (8, 4, "images")
    assert (cfg.augment.pad, cfg.augment.flip, cfg.augment.grayscale, cfg.augment.channel_aug) == (10, 0.5, 0.0, False)
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.nesterov, o.weight_decay, o.backbone_lr_mult) == ("sgd", 0.1, 0.9, True, 5e-4, 0.1)
    p = cfg.model.params
    assert cfg.model.method == "baseline"
    assert (p["backbone"], p["pretrained"], p["specific_stages"], p["last_stride"]) == ("resnet50.tv_in1k", "timm", 1, 1)
    assert (p["pooling"], p["gem_p"], p["non_local"]) == ("gem_agw", 3.0, "agw")
    assert cfg.loss_terms()["cross_entropy"].params == {"epsilon": 0.0}
    from vireid.engine.trainer import lr_factor

    assert cfg.sched.warmup_by_epoch and cfg.sched.milestones == [20, 50] and cfg.sched.gamma == 0.1
    for epoch in range(cfg.train.epochs):
        for within in (0.0, 0.5, 0.99):
            assert cfg.optim.lr * lr_factor(cfg, epoch + within) == pytest.approx(_reference_lr(epoch)), epoch


@pytest.mark.parametrize("name", ["agw_sysu", "agw_regdb", "agw_sysu_reproduce"])
def test_agw_recipes_are_the_released_train_py(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    _agw_common(cfg)
    assert cfg.augment.random_erasing == 0.0 and cfg.augment.steps == []
    assert set(cfg.loss_terms()) == {"cross_entropy", "wrt"} and cfg.loss_terms()["wrt"].input == "features"
    assert cfg.train.epochs == 81  # for epoch in range(start_epoch, 81 - start_epoch)
    assert cfg.published["method"] == "AGW"


@pytest.mark.parametrize("name", ["caj_sysu", "caj_regdb", "caj_sysu_reproduce"])
def test_caj_recipes_are_the_released_train_ext_py(name):
    from vireid.data.transforms import add_configured_steps, build_train_transform

    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    _agw_common(cfg)
    assert cfg.train.epochs == 100  # for epoch in range(start_epoch, 100 - start_epoch)
    terms = cfg.loss_terms()
    assert set(terms) == {"cross_entropy", "adp"}  # --kl 0: no KL term
    assert terms["adp"].type == "adp_triplet" and terms["adp"].params == {"alpha": 1.0, "gamma": 1.0, "squared": True}
    a = cfg.augment
    transform = add_configured_steps(build_train_transform(288, 144, pad=a.pad, flip=a.flip, random_erasing=a.random_erasing,
                                                           channel_aug=a.channel_aug), a.steps)
    # SYSUData: each view crop/flip -> normalise -> ChannelRandomErasing -> (view 1) ChannelExchange / (IR) ChannelAdapGray
    assert transform.names() == ["duplicate_views", "pad_crop_flip", "normalize", "random_erasing", "channel_exchange",
                                 "channel_adaptive_gray"]
    erase, exchange, gray = transform.steps[3:]
    assert (erase.p, erase.area, erase.aspect, erase.fill) == (0.5, (0.02, 0.4), 0.3, (0.4914, 0.4822, 0.4465))
    assert (exchange.p, exchange.include_gray, exchange.views) == (1.0, False, (1,))  # ChannelExchange(gray=2): R, G or B
    assert gray.gray_p == 0.5 and cfg.published["method"] == "CAJ"


def test_reproduce_settings_train_on_every_identity_and_keep_the_last_epoch():
    for name in ("agw_sysu", "caj_sysu"):
        everyday = load_config(REPO / "configs" / f"{name}.yaml")
        honest = load_config(REPO / "configs" / f"{name}_reproduce.yaml")
        assert everyday.data.options["train_includes_val"] is False and everyday.train.select_best == "val"
        assert honest.data.options["train_includes_val"] is True and honest.train.select_best == "last"
        assert honest.train.amp == "none" and everyday.published["reproduce"] == f"{name}_reproduce"
    for name in ("agw_regdb", "caj_regdb"):  # no validation split: already the honest setting
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.train.select_best == "last" and cfg.published["reproduce"] == name


def test_published_numbers_are_not_inherited_by_other_recipes():
    assert load_config(REPO / "configs" / "agw_sysu.yaml").published["rank1"] == 47.50
    for name in ("mobile_sysu", "dual_path_swin_sysu", "dual_path_swin_npu"):
        assert load_config(REPO / "configs" / f"{name}.yaml").published == {}
    swin = load_config(REPO / "configs" / "dual_path_swin_sysu.yaml")  # keeps the schedule it was written with
    assert (swin.train.epochs, swin.sched.warmup_by_epoch, swin.data.resample) == (60, False, "bilinear")


def test_reproducing_page_is_generated_from_the_configs():
    spec = importlib.util.spec_from_file_location("make_reproducing", REPO / "scripts" / "make_reproducing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (REPO / "docs" / "reproducing.md").read_text()
    assert page == module.render(), "docs/reproducing.md is out of date: run python scripts/make_reproducing.py"
    for numbers in ("47.50 / 47.65 / 35.30", "69.88 / 66.89 / 53.61", "70.05 / 66.37 / 50.19"):
        assert numbers in page
    assert "vireid train --config agw_sysu_reproduce" in page and "vireid import agw" in page
    assert "docs/reproducing.md" in (REPO / "README.md").read_text()


def test_agw_non_local_is_the_released_one_channel_block_and_agw_c2_keeps_half():
    from vireid.modeling.methods.baseline import BaselineReID
    from vireid.modeling.modules import NonLocalBlock

    def widths(**kw):
        model = BaselineReID(num_classes=3, backbone="resnet10t", pretrained=None, specific_stages=1, **kw)
        return [(m.in_channels, m.inter_channels) for m in model.modules() if isinstance(m, NonLocalBlock)]

    # resnet10t has one block per stage, so AGW's "after the last 2 / 3 blocks" places one in stages 2 and 3
    assert widths(non_local="agw") == [(128, 1), (256, 1)]
    assert widths(non_local="agw_c2") == [(128, 64), (256, 128)]
    assert widths(non_local={"stage3": [0]}) == [(256, 128)]
    assert widths(non_local="agw", non_local_reduction=4) == [(128, 32), (256, 64)]
    with pytest.raises(ConfigError, match="agw_c2"):
        widths(non_local="agw_half")


def test_gem_agw_is_model_py_formula():
    from vireid.modeling.modules.pooling import build_pooling

    x = torch.rand(2, 4, 6, 3)
    x[:, 1] = 0.0  # a dead channel: model.py gives (0 + 1e-12) ** (1/3) = 1e-4 there
    expected = (x.flatten(2).pow(3).mean(-1) + 1e-12).pow(1 / 3)
    got = build_pooling("gem_agw", p=3.0)(x)
    assert torch.allclose(got, expected, rtol=0, atol=1e-7) and got[0, 1].item() == pytest.approx(1e-4, rel=1e-3)
    assert build_pooling("gem", p=3.0)(x)[0, 1].item() == pytest.approx(1e-6, rel=1e-3)  # the clamp form differs


def test_embedding_choice_returns_pool_or_bn_feature():
    from vireid.modeling.methods.baseline import BaselineReID

    torch.manual_seed(0)
    images, codes = torch.rand(3, 3, 64, 32), torch.tensor([0, 1, 0])
    model = BaselineReID(num_classes=3, backbone="resnet10t", non_local=None, embedding="features").eval()
    with torch.no_grad():
        outputs = model.forward_head(model.forward_features(images, codes))
        assert torch.equal(model(images, codes), outputs["features"])
        model.embedding = "bn_features"
        assert torch.equal(model(images, codes), outputs["bn_features"])
    with pytest.raises(ConfigError, match="embedding must be one of"):
        BaselineReID(num_classes=3, backbone="resnet10t", non_local=None, embedding="fc")


def test_lanczos_resample_reaches_decoding_caches_and_embedders(tmp_path):
    from vireid.data.cache import image_fingerprint
    from vireid.data.images import decode_image
    from vireid.inference.embedder import Embedder

    path = REAL_MINI / "cam1" / "0001" / "0001.png"
    lanczos = np.asarray(Image.open(path).convert("RGB").resize((144, 288), Image.LANCZOS))
    bilinear = decode_image(path, size=(288, 144))
    assert np.array_equal(decode_image(path, size=(288, 144), resample="lanczos"), lanczos)
    assert not np.array_equal(bilinear, lanczos)
    cfg = load_config(REPO / "configs" / "agw_sysu.yaml")
    embedder = Embedder((288, 144), 8, config=cfg)
    assert embedder.resample == "lanczos"
    assert np.array_equal(embedder.resize(np.asarray(Image.open(path).convert("RGB"))), lanczos.transpose(2, 0, 1))
    assert Embedder((288, 144), 8).resample == "bilinear"
    assert image_fingerprint([path], 288, 144) != image_fingerprint([path], 288, 144, "lanczos")
    with pytest.raises(ConfigError, match="data.resample"):
        load_config(None, ["data.resample=bicubic"])


def test_warmup_by_epoch_is_constant_within_an_epoch():
    from vireid.engine.trainer import lr_factor

    cfg = load_config(None, ["sched.warmup_epochs=10", "sched.warmup_start_factor=0.1", "sched.warmup_by_epoch=true"])
    assert [round(lr_factor(cfg, e + 0.7), 6) for e in range(11)] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0]
    cfg.sched.warmup_by_epoch = False  # the per-step ramp is unchanged
    assert math.isclose(lr_factor(cfg, 0.5), 0.1 + 0.9 * 0.05)


def test_checkpoints_saved_when_agw_meant_half_width_still_load(tmp_path):
    """A run trained before non_local: agw became the released one-channel block loads as agw_c2."""
    from vireid.engine.checkpoint import atomic_torch_save
    from vireid.engine.trainer import build_model, load_model_from_checkpoint
    from vireid.modeling.modules import NonLocalBlock

    cfg = load_config(None, ["data.height=64", "data.width=32", "model.params.backbone=resnet10t",
                             "model.params.non_local=agw_c2"])
    old = build_model(cfg, 3)
    cfg.model.params["non_local"] = "agw"  # what such a run's config.yaml says
    atomic_torch_save({"config": cfg.to_dict(), "model": old.state_dict(), "num_classes": 3}, tmp_path / "best.pt")
    model, loaded_cfg, _ = load_model_from_checkpoint(tmp_path)
    assert [m.inter_channels for m in model.modules() if isinstance(m, NonLocalBlock)] == [64, 128]
    assert loaded_cfg.model.params["non_local"] == "agw_c2"
