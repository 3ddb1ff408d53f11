"""Content keys of models: presets by definition, checkpoints by file digests (cached)."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from pahi_rt.errors import InputError
from pahi_rt.model_key import file_digest, model_key


pytestmark = pytest.mark.usefixtures("fresh_model_keys")


def test_presets():
    tiny = model_key("tiny")
    assert len(tiny) == 16 and tiny == model_key("tiny", "tiny (random TAESD)")
    assert tiny != model_key("synthetic")


def test_checkpoint_dirs_by_content(tiny_checkpoint, tmp_path):
    model_dir, decoder_dir = tiny_checkpoint
    copy, dec = tmp_path / "m", tmp_path / "d"
    shutil.copytree(model_dir, copy)
    shutil.copytree(decoder_dir, dec)
    key = model_key(str(copy), str(dec))
    assert key == model_key(str(model_dir), str(decoder_dir))  # same files, other place
    cache = json.loads((tmp_path / "digests.json").read_text())
    assert any("diffusion_pytorch_model.safetensors" in k for k in cache)
    with pytest.raises(InputError, match="name its decoder"):
        model_key(str(copy))
    # a variant file is not what the loader reads: no effect; changed weights: a new key
    (copy / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x")
    model_key.cache_clear()
    assert model_key(str(copy), str(dec)) == key
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    model_key.cache_clear()
    assert model_key(str(copy), str(dec)) != key


def test_hf_cache_links_cost_nothing(tmp_path):
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    link = tmp_path / "snap" / "model.safetensors"
    link.parent.mkdir()
    os.symlink(os.path.relpath(blob, link.parent), link)
    assert file_digest(link) == "ab" * 32
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"weights")
    import hashlib

    assert file_digest(plain) == hashlib.sha256(b"weights").hexdigest()
