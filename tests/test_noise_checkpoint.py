"""Head checkpoints: save/load round trip, init equals Gaussian, mismatches refused."""
from __future__ import annotations

import pytest
import torch

from pahi_rt.errors import InputError
from pahi_rt.heads.checkpoint import load_head, save_head
from pahi_rt.heads.head import HeadConfig, build_head
from pahi_rt.specs import ModelSpec, RenderShape

SPEC = ModelSpec(name="tiny", text_dim=32)


@pytest.mark.parametrize("mode", ["hi", "pahi"])
def test_fresh_head_is_standard_gaussian(mode):
    head = build_head(HeadConfig(mode, (4, 8, 8), 32, hidden=16))
    eps, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    assert torch.equal(head(eps, emb), eps)


@pytest.mark.parametrize("mode", ["hi", "pahi"])
def test_round_trip_and_checks(tmp_path, mode):
    head = build_head(HeadConfig(mode, (4, 8, 8), 32, hidden=16))
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    save_head(head, tmp_path / "h", training={"steps": 3})
    back = load_head(tmp_path / "h", SPEC, 64, 64, expect_mode=mode)
    eps, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    assert torch.allclose(back(eps, emb), head(eps, emb))
    with pytest.raises(InputError, match="trained for 64x64"):
        load_head(tmp_path / "h", SPEC, 128, 64)
    other = "pahi" if mode == "hi" else "hi"
    with pytest.raises(InputError, match=f"not '{other}'"):
        load_head(tmp_path / "h", SPEC, expect_mode=other)


def test_text_dim_mismatch_refused(tmp_path):
    save_head(build_head(HeadConfig("pahi", (4, 8, 8), 64, hidden=8)), tmp_path / "h")
    with pytest.raises(InputError, match="64-wide text embeddings"):
        load_head(tmp_path / "h", SPEC, 64, 64)


def test_base_model_is_checked(tmp_path):
    """A head names the model it was trained on: refused on a model whose conditioning differs
    (both named), used with a warning naming both on one whose shapes match."""
    save_head(build_head(HeadConfig("pahi", (4, 8, 8), 32, hidden=8, base_model="tiny")),
              tmp_path / "h")
    wide = ModelSpec(name="synthetic", text_dim=1024)
    with pytest.raises(InputError, match="trained on tiny .*--model synthetic gives 1024-wide"):
        load_head(tmp_path / "h", wide, 64, 64)
    with pytest.warns(UserWarning, match="trained on tiny, used here with my/model"):
        load_head(tmp_path / "h", ModelSpec(name="my/model", text_dim=32), 64, 64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same model: silent
        load_head(tmp_path / "h", ModelSpec(name="tiny", text_dim=32), 64, 64)


def test_generate_with_head_uses_it(tmp_path):
    from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline
    from pahi_rt.specs import MODES

    head = build_head(HeadConfig("hi", (4, 8, 8), 32))
    with torch.no_grad():
        head.mu.fill_(0.5)
    save_head(head, tmp_path / "h")
    model = load_model("tiny", device="cpu", head=tmp_path / "h", noise=("hi",), height=64,
                       width=64)
    shape = RenderShape(height=64, width=64)
    a, b = (open_pipeline(model, PipelineConfig(mode=MODES[m], shape=shape))(["a"], [0])
            for m in ("hi-1step", "gaussian-1step"))
    assert model.head_path == str(tmp_path / "h") and (a != b).any()


def test_paper_size_head_has_about_five_million_parameters():
    head = build_head(HeadConfig("pahi", (4, 64, 64), 1024))  # 512x512, OpenCLIP-H width
    n = sum(p.numel() for p in head.parameters())
    assert 4.5e6 < n < 5.5e6, n
