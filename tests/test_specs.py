"""The shape value and default sizes in specs (issue 21 item 3): one key form, the size each model
renders when none is given, and the verbs that take it from the model."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from pahi_rt import hub
from pahi_rt.cli import app
from pahi_rt.specs import PRESETS, ModelSpec, RenderShape


def test_render_shape_key_and_model_default_size():
    assert RenderShape(2, 64, 96, "fp16").key == "2x64x96-fp16"
    tiny, synthetic = PRESETS["tiny"].spec(), PRESETS["synthetic"].spec()
    assert tiny.default_size == (64, 64) and synthetic.default_size == (512, 512)
    assert PRESETS["sd-turbo"].spec().default_size == (512, 512)
    assert RenderShape(batch=4).sized(tiny) == RenderShape(4, 64, 64)
    assert RenderShape(height=128).sized(tiny) == RenderShape(1, 128, 64)  # a given side stays
    assert ModelSpec("x", 8, default_sample_size=(12, 16)).default_size == (96, 128)


def test_a_checkpoint_directory_renders_at_its_unet_sample_size(tmp_path):
    (tmp_path / "m").mkdir()
    for sub in hub.SUBFOLDERS:
        (tmp_path / "m" / sub).mkdir()
    (tmp_path / "m" / "unet" / "config.json").write_text(json.dumps({"sample_size": 96}))
    assert hub.default_size(str(tmp_path / "m")) == (768, 768)  # SD 2.1-768's shape
    (tmp_path / "m" / "unet" / "config.json").write_text(json.dumps({"sample_size": [8, 12]}))
    assert hub.default_size(str(tmp_path / "m")) == (64, 96)


@pytest.mark.parametrize("given, expect", [((), (64, 64)), (("--width", "96"), (64, 96))])
def test_generate_on_tiny_defaults_to_its_own_size(tmp_path, given, expect):
    r = CliRunner().invoke(app, ["generate", "a fox", "--model", "tiny", *given, "--out",
                                 str(tmp_path / "a.png")])
    assert r.exit_code == 0, r.output
    width, height = Image.open(tmp_path / "a.png").size
    assert (height, width) == expect


def test_head_kind_is_stored_under_the_checkpoint_key_mode(tmp_path):
    from pahi_rt.heads.checkpoint import read_head_config, save_head
    from pahi_rt.heads.head import HeadConfig, build_head

    save_head(build_head(HeadConfig("hi", (4, 8, 8), 32, hidden=8)), tmp_path / "h")
    on_disk = json.loads((tmp_path / "h" / "config.json").read_text())
    assert on_disk["mode"] == "hi" and "kind" not in on_disk  # old checkpoints keep loading
    assert read_head_config(tmp_path / "h")[0].kind == "hi"
