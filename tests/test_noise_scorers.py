"""Scorers: spec syntax, module:factory, PickScore-style CLIP loading from a dir, preprocessing
parity with CLIPImageProcessor, offline / missing-dependency errors, weighted sums."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import save_tiny_clip
from pahi_rt.errors import InputError, MissingDependencyError, ModelLoadError
from pahi_rt.scorers import scorer_set as sc


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.mark.parametrize("text,expected", [
    ("pickscore", sc.ScorerSpec("pickscore", None, 1.0)),
    ("pickscore=0.5", sc.ScorerSpec("pickscore", None, 0.5)),
    ("pickscore@/m/ps=2", sc.ScorerSpec("pickscore", "/m/ps", 2.0)),
    ("imagereward@ImageReward-v1.0", sc.ScorerSpec("imagereward", "ImageReward-v1.0", 1.0)),
    ("mymod.sub:make=-1e-1", sc.ScorerSpec("mymod.sub:make", None, -0.1)),
])
def test_parse_scorer(text, expected):
    assert sc.parse_scorer(text) == expected


@pytest.mark.parametrize("text,message", [
    ("clipscore", "unknown scorer"), ("pickscore=x", "not a finite number"),
    ("pickscore=nan", "not a finite number"),
    ("x:y=inf", "not a finite number"),
    ("m:f@src", "takes no @SOURCE"), ("", "unknown scorer"),
])
def test_parse_scorer_errors(text, message):
    with pytest.raises(InputError, match=message):
        sc.parse_scorer(text)


def test_parse_scorers_is_every_verbs_check():
    from pahi_rt.scorers.spec import parse_scorers

    assert parse_scorers([]) == ()
    assert parse_scorers(["pickscore=2", "m:f"]) == (sc.ScorerSpec("pickscore", None, 2.0),
                                                     sc.ScorerSpec("m:f", None, 1.0))
    with pytest.raises(InputError, match="--scorer clipscore: unknown scorer"):
        parse_scorers(["pickscore", "clipscore"])


def test_factory_loading_and_errors():
    f = sc.load_scorer(sc.parse_scorer("synthetic_scorers:fixed_colour"))
    assert f(torch.rand(2, 3, 8, 8), ["a", "b"]).shape == (2,)
    with pytest.raises(InputError, match="cannot import"):
        sc.load_factory("no_such_module_xyz:f")
    with pytest.raises(InputError, match="has no 'nope'"):
        sc.load_factory("synthetic_scorers:nope")
    with pytest.raises(InputError, match="must return a callable"):
        sc.load_factory("synthetic_scorers:not_callable")


@pytest.mark.parametrize("hw", [(64, 64), (48, 80), (90, 50)])
def test_preprocess_matches_clip_image_processor(tiny_clip, hw):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(str(tiny_clip))
    pixels = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    pixels = (pixels.astype(np.float32) * 0.3 + np.linspace(0, 170, hw[1])[None, :, None])
    pixels = pixels.clip(0, 255).astype(np.uint8)  # structure + noise, like a photo
    ref = processor(images=pixels, return_tensors="pt").pixel_values
    import json
    pre = sc.ClipImagePreprocess.from_config(json.loads(
        (tiny_clip / "preprocessor_config.json").read_text()))
    ours = pre(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)
    assert ours.shape == ref.shape == (1, 3, 32, 32)
    diff = (ours - ref).abs()
    assert diff.mean() < 0.02 and diff.max() < 0.15, (diff.mean(), diff.max())


def test_pickscore_from_dir_is_differentiable(tiny_clip):
    s = sc.load_scorer(sc.parse_scorer(f"pickscore@{tiny_clip}"))
    assert all(not p.requires_grad for p in s.parameters())
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    scores = s(images, ["a red cat", "a blue dog"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    # the score is logit_scale.exp() * cosine of the projected embeddings
    m = s.model
    with torch.no_grad():
        img = m.get_image_features(pixel_values=s.preprocess(images)).pooler_output
        tok = s.tokenizer(["a red cat", "a blue dog"], padding="max_length", max_length=77,
                          truncation=True, return_tensors="pt")
        txt = m.get_text_features(input_ids=tok.input_ids,
                                  attention_mask=tok.attention_mask).pooler_output
        ref = m.logit_scale.exp() * torch.nn.functional.cosine_similarity(img, txt)
    assert torch.allclose(scores.detach(), ref, atol=1e-5)


def test_hf_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local HF cache"):
        sc.load_scorer(sc.parse_scorer("pickscore@nobody/no-such-scorer"))
    with pytest.raises(InputError, match="is not a directory"):
        sc.load_scorer(sc.parse_scorer("pickscore@./missing-dir"))


def test_imagereward_names_the_extra():
    pytest.importorskip("torch")
    try:
        import ImageReward  # noqa: F401
        pytest.skip("image-reward is installed")
    except ImportError:
        pass
    with pytest.raises(MissingDependencyError, match=r"pahi-rt\[imagereward\]"):
        sc.load_scorer(sc.parse_scorer("imagereward"))


def test_scorer_set_weighted_sum_and_shape_check():
    specs = [sc.parse_scorer("synthetic_scorers:fixed_colour=2"),
             sc.parse_scorer("synthetic_scorers:colour_by_word=0.5")]
    s = sc.ScorerSet(specs, [sc.load_scorer(x) for x in specs])
    images, prompts = torch.rand(3, 3, 8, 8), ["red", "blue", "x"]
    a, b = s.each(images, prompts)
    assert torch.allclose(s.total(images, prompts), 2 * a + 0.5 * b)
    bad = sc.ScorerSet([specs[0]], [lambda im, p: torch.zeros(5)])
    with pytest.raises(InputError, match="expected \\[3\\] scores"):
        bad.total(images, prompts)
    with pytest.raises(InputError, match="at least one"):
        sc.ScorerSet.load([])


def test_non_differentiable_scorer_is_refused_in_training_only():
    spec = sc.parse_scorer("synthetic_scorers:not_differentiable")
    s = sc.ScorerSet([spec], [sc.load_scorer(spec)])
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(InputError, match="not differentiable"):
        s.total(images, ["a", "b"])
    with torch.no_grad():
        assert s.total(images, ["a", "b"]).shape == (2,)
    column = sc.ScorerSet([spec], [lambda im, p: im.mean(dim=(1, 2, 3))[:, None]])
    assert column.total(images, ["a", "b"]).shape == (2,)  # [B, 1] is accepted as [B]
