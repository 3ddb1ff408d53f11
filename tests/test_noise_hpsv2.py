"""hpsv2: a tiny random OpenCLIP-layout checkpoint (.pt and .safetensors) loads, scores like an
independent OpenCLIP forward written here, is differentiable; the torch preprocessing matches
OpenCLIP's eval transform (PIL bicubic resize + torchvision-rounded center crop) on real photos;
offline and bad-file errors are one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import SHARED
from pahi_rt.errors import InputError, ModelLoadError
from pahi_rt.scorers import hpsv2, scorer_set as sc

WIDTH, LAYERS, PATCH, GRID, EMBED = 64, 2, 8, 4, 16


def open_clip_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with OpenCLIP's key names and shapes (ViT, 1 head of 64)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(shape, generator=g) * scale

    sd = {"visual.conv1.weight": r(WIDTH, 3, PATCH, PATCH), "visual.class_embedding": r(WIDTH),
          "visual.positional_embedding": r(GRID * GRID + 1, WIDTH),
          "visual.proj": r(WIDTH, EMBED, scale=0.2), "token_embedding.weight": r(49408, WIDTH),
          "positional_embedding": r(77, WIDTH), "text_projection": r(WIDTH, EMBED, scale=0.2),
          "logit_scale": torch.tensor(4.6)}
    for ln in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        sd[f"{ln}.weight"], sd[f"{ln}.bias"] = 1 + r(WIDTH), r(WIDTH)
    for tower in ("visual.transformer", "transformer"):
        for i in range(LAYERS):
            p = f"{tower}.resblocks.{i}."
            sd.update({p + "attn.in_proj_weight": r(3 * WIDTH, WIDTH, scale=0.2),
                       p + "attn.in_proj_bias": r(3 * WIDTH),
                       p + "attn.out_proj.weight": r(WIDTH, WIDTH, scale=0.2),
                       p + "attn.out_proj.bias": r(WIDTH),
                       p + "mlp.c_fc.weight": r(4 * WIDTH, WIDTH, scale=0.2),
                       p + "mlp.c_fc.bias": r(4 * WIDTH),
                       p + "mlp.c_proj.weight": r(WIDTH, 4 * WIDTH, scale=0.2),
                       p + "mlp.c_proj.bias": r(WIDTH)})
            for ln in ("ln_1", "ln_2"):
                sd[f"{p}{ln}.weight"], sd[f"{p}{ln}.bias"] = 1 + r(WIDTH), r(WIDTH)
    return sd


def _tower(x, sd, prefix, mask=None):
    """OpenCLIP's residual attention blocks, written from its source (seq-first MHA)."""
    def ln(y, name):
        return F.layer_norm(y, (WIDTH,), sd[f"{name}.weight"], sd[f"{name}.bias"])
    for i in range(LAYERS):
        p = f"{prefix}.resblocks.{i}."
        y = ln(x, p + "ln_1").transpose(0, 1)
        y = F.multi_head_attention_forward(
            y, y, y, WIDTH, 1, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"],
            None, None, False, 0.0, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"],
            training=False, need_weights=False, attn_mask=mask)[0]
        x = x + y.transpose(0, 1)
        y = F.gelu(F.linear(ln(x, p + "ln_2"), sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]))
        x = x + F.linear(y, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    return x


def reference_score(sd, pixels, ids):
    def ln(y, name):
        return F.layer_norm(y, (WIDTH,), sd[f"{name}.weight"], sd[f"{name}.bias"])
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(x.shape[0], 1, -1), x], 1)
    x = ln(x + sd["visual.positional_embedding"], "visual.ln_pre")
    x = ln(_tower(x, sd, "visual.transformer"), "visual.ln_post")
    image = x[:, 0] @ sd["visual.proj"]
    t = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    mask = torch.full((77, 77), float("-inf")).triu(1)
    t = ln(_tower(t, sd, "transformer", mask), "ln_final")
    text = t[torch.arange(ids.shape[0]), ids.argmax(-1)] @ sd["text_projection"]
    return F.cosine_similarity(image, text)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from safetensors.torch import save_file

    root, sd = tmp_path_factory.mktemp("hps"), open_clip_state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1},
               root / "hps.pt")
    save_file(sd, str(root / "hps.safetensors"))
    return sd, root


@pytest.mark.parametrize("name", ["hps.pt", "hps.safetensors"])
def test_tiny_checkpoint_scores_like_open_clip(checkpoints, name):
    sd, root = checkpoints
    scorer = sc.load_scorer(sc.parse_scorer(f"hpsv2@{root / name}"))
    assert scorer.preprocess.size == 32 and scorer.preprocess.crop == (32, 32)
    images = torch.rand(2, 3, 48, 40, requires_grad=True)
    prompts = ["a photo of a red cat", "a blue dog"]
    scores = scorer(images, prompts)
    ids = scorer.tokenizer(prompts, padding="max_length", max_length=77, truncation=True,
                           return_tensors="pt").input_ids
    with torch.no_grad():
        ref = reference_score(sd, scorer.preprocess(images), ids)
    assert torch.allclose(scores.detach(), ref, atol=1e-5), (scores, ref)
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def _reference_preprocess(image: Image.Image, size: int = 224) -> torch.Tensor:
    """OpenCLIP's eval transform on a PIL image: Resize(size, BICUBIC) + CenterCrop(size) (as
    torchvision computes them) + ToTensor + Normalize(OpenAI mean/std)."""
    w, h = image.size
    new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)  # (h, w)
    resized = image.convert("RGB").resize((new[1], new[0]), Image.BICUBIC)
    top, left = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    x = torch.from_numpy(np.array(resized.crop((left, top, left + size, top + size))))
    x = x.permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(sc.CLIP_MEAN).view(3, 1, 1), torch.tensor(sc.CLIP_STD).view(3, 1, 1)
    return ((x - mean) / std)[None]


@pytest.mark.parametrize("photo", ["astronaut.png", "chelsea.png", "coffee.png"])
def test_preprocess_matches_open_clip_transform_on_photos(photo):
    path = SHARED / "images" / photo
    if not path.is_file():
        pytest.skip(f"{path} not available")
    image = Image.open(path).convert("RGB")
    pre = sc.ClipImagePreprocess(224, (224, 224), center="round")
    ours = pre(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255)
    ref = _reference_preprocess(image)
    diff = (ours - ref).abs()
    assert ours.shape == ref.shape == (1, 3, 224, 224)
    assert diff.mean() < 0.02 and diff.max() < 0.3, (diff.mean(), diff.max())


def test_offline_and_bad_files(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local HF cache.*--scorer hpsv2@FILE"):
        sc.load_scorer(sc.parse_scorer("hpsv2@nobody/no-such-hps"))
    with pytest.raises(InputError, match="is not a checkpoint file"):
        sc.load_scorer(sc.parse_scorer("hpsv2@./missing.pt"))
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ModelLoadError, match="not an OpenCLIP state dict"):
        hpsv2.load_hpsv2(str(bad))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not read hpsv2 checkpoint"):
        hpsv2.load_hpsv2(str(tmp_path / "junk.pt"))


def test_cli_offline_is_one_line(monkeypatch, tmp_path):
    from test_cli import assert_one_line_error, run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = run("generate", "a cat", "--model", "tiny", "--height", "64", "--width", "64",
            "--best-of", "2", "--scorer", "hpsv2", "--out", str(tmp_path / "x.png"))
    assert_one_line_error(r, "'xswu/HPSv2' is not in the local HF cache")
