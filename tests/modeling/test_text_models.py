"""The LSTM/GRU text encoder (shapes, masking), CMPM against a loop, and the text methods' outputs."""

from __future__ import annotations

import math

import pytest
import torch

import vireid.builtins  # noqa: F401
from vireid.data.text.tokenizer import WordTokenizer
from vireid.errors import ConfigError
from vireid.modeling.losses.cmpm import CMPMLoss
from vireid.modeling.methods.text_reid import TextFusionReID, TextImageReID
from vireid.modeling.modules.text_encoder import TextEncoder

SENTENCES = ["a man in a plain short-sleeved top and trousers, carrying a backpack.", "a woman with long hair", ""]


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_encoder_shapes_and_padding_does_not_change_the_output(rnn, pooling):
    torch.manual_seed(0)
    encoder = TextEncoder(WordTokenizer().vocab_size, 24, embed_dim=16, hidden=12, rnn=rnn, pooling=pooling).eval()
    short, long = WordTokenizer(max_length=20), WordTokenizer(max_length=60)
    with torch.no_grad():
        a = encoder(short.encode_batch(SENTENCES))
        b = encoder(long.encode_batch(SENTENCES))
        alone = encoder(short.encode_batch(SENTENCES[1:2]))
    assert a.shape == (3, 24) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # padding never enters the recurrence
    torch.testing.assert_close(a[1:2], alone, atol=1e-5, rtol=1e-5)  # independent of the batch's other rows
    assert not torch.allclose(a[0], a[1])


def test_encoder_bad_settings_are_one_sentence():
    with pytest.raises(ConfigError, match="rnn 'transformer' is unknown"):
        TextEncoder(10, 8, rnn="transformer")
    with pytest.raises(ValueError, match="token ids must lie in 0..9"):
        TextEncoder(10, 8)(torch.tensor([[3, 12]]))


def test_cmpm_matches_a_loop_over_the_equations():
    torch.manual_seed(0)
    pairs = torch.randn(6, 2, 5)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    eps = 1e-8

    def direction(a, b):
        total = 0.0
        for i in range(len(a)):
            logits = [float(a[i] @ (b[j] / b[j].norm())) for j in range(len(b))]
            top = max(logits)
            exp = [math.exp(v - top) for v in logits]
            p = [e / sum(exp) for e in exp]
            same = [float(labels[i] == labels[j]) for j in range(len(b))]
            q = [s / sum(same) for s in same]
            total += sum(p[j] * math.log(p[j] / (q[j] + eps)) for j in range(len(b)))
        return total / len(a)

    expected = direction(pairs[:, 0], pairs[:, 1]) + direction(pairs[:, 1], pairs[:, 0])
    assert float(CMPMLoss(eps)(pairs, labels)) == pytest.approx(expected, rel=1e-5)


def _batch():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 32)
    modalities = torch.tensor([0, 1, 0, 1])
    tokens = WordTokenizer(max_length=16).encode_batch(SENTENCES[:2] * 2)
    return images, modalities, tokens


@pytest.mark.parametrize("strategy", [None, "early", "late", "attention"])
def test_text_methods_outputs(strategy):
    images, modalities, tokens = _batch()
    kwargs = dict(backbone="resnet10t", img_size=(64, 32), text_embed_dim=16, text_hidden=16)
    model = TextImageReID(3, **kwargs) if strategy is None else TextFusionReID(3, strategy=strategy, **kwargs)
    out = model.train()(images, modalities, tokens=tokens)
    d = model.embed_dim
    assert out["text_logits"].shape == (4, 3) and out["image_text"].shape == (4, 2, d)
    assert ("fused_logits" in out) == (strategy is not None)
    model.eval()
    with torch.no_grad():
        gallery = model(images, modalities)
        both = model(images, modalities, tokens=tokens)
        text_only = model.embed_query(tokens=tokens)
        pair = model.embed_query(images, modalities, tokens)
    assert gallery.shape == (4, d) and both.shape == (4, 2 * d)
    torch.testing.assert_close(both[:, :d], gallery)
    assert text_only.shape == (4, d) and pair.shape == (4, d) and torch.isfinite(text_only).all()
    if strategy is None:
        torch.testing.assert_close(both[:, d:], text_only)  # the query side of text_image is the description's
    else:
        torch.testing.assert_close(both[:, d:], pair)  # text_fusion: the fused (image, description) embedding
    with pytest.raises(ValueError, match="a query needs a description, an image or both"):
        model.embed_query()


def test_text_fusion_bad_strategy_is_one_sentence():
    with pytest.raises(ConfigError, match="'model.params.strategy' is 'middle'"):
        TextFusionReID(3, strategy="middle", backbone="resnet10t")


def test_clip_text_encoder_option_with_clip_tokens():
    """text_encoder: clip -- CLIP's text tower (tiny random one, 16-token context) over CLIP BPE tokens."""
    from vireid.data.text.tokenizer import make_tokenizer

    images, modalities, word_tokens = _batch()
    tokenizer = make_tokenizer("clip:tiny-vit", 16)
    tokens = tokenizer.encode_batch(SENTENCES[:2] * 2)
    assert tokens.shape == (4, 16) and int(tokens[0, 0]) == 49406
    torch.manual_seed(0)
    model = TextFusionReID(3, strategy="late", backbone="resnet10t", img_size=(64, 32), text_encoder="clip",
                           clip_model="tiny-vit")
    out = model.train()(images, modalities, tokens=tokens)
    assert out["text_logits"].shape == (4, 3)
    assert model(images, modalities)["text_features"].shape == (4, model.embed_dim)  # no tokens: the empty sentence
    model.eval()
    with torch.no_grad():
        assert model(images, modalities, tokens=tokens).shape == (4, 2 * model.embed_dim)
        with pytest.raises(ValueError, match="rows of 16 tokens"):
            model(images, modalities, tokens=WordTokenizer(max_length=20).encode_batch(SENTENCES[:2] * 2))
        with pytest.raises(ValueError, match="not CLIP BPE tokens of tiny-vit; set data.extras.tokens.tokenizer"):
            model(images, modalities, tokens=word_tokens)  # the shipped word tokenizer's ids
    with pytest.raises(ConfigError, match="'model.params.text_encoder' is 'bert'"):
        TextImageReID(3, backbone="resnet10t", text_encoder="bert")
    with pytest.raises(ConfigError, match="tokenizer 'bpe' is unknown"):
        make_tokenizer("bpe")
