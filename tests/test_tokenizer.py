"""The CLIP tokenizer shipped with pahi-rt: same vocabulary file, same ids as before vendoring."""
from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest

from pahi_rt import tokenizer

ROOT = Path(__file__).resolve().parents[1]
# sha256 of open_clip/bpe_simple_vocab_16e6.txt.gz in the open-clip-torch 3.3.0 wheel, which
# pahi-rt read before it shipped its own copy
OPEN_CLIP_3_3_0_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

# Ids from the tokenizer built on open-clip-torch 3.3.0's file (recorded before vendoring).
GOLDEN = {
    "a red fox in the snow": [49406, 320, 736, 3240, 530, 518, 2583, 49407],
    "A Photo of an ASTRONAUT riding a horse, 4k, trending on artstation!!!":
        [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 267, 275, 330, 267, 6087, 525,
         1486, 2631, 0, 0, 0, 49407],
    "don't stop—café naïve résumé 東京 タワー 🦊🔥":
        [49406, 847, 713, 1691, 2005, 15304, 1097, 35689, 563, 29106, 7054, 4166, 48338, 21078,
         361, 34941, 2429, 107, 30391, 6040, 232, 3016, 49407],
    "  multiple   spaces\tand\nnewlines  ": [49406, 6470, 9006, 537, 1218, 3418, 49407],
    "12345 3.14159 #hashtag @user https://example.com/x?y=1":
        [49406, 272, 273, 274, 275, 276, 274, 269, 272, 275, 272, 276, 280, 258, 9238, 287, 7031,
         30901, 12441, 6228, 269, 2464, 270, 343, 286, 344, 284, 272, 49407],
    "": [49406, 49407],
}


def test_vendored_file_is_open_clips():
    path = tokenizer.bpe_path()
    assert path.parent.name == "data" and path.parent.parent.name == "pahi_rt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == OPEN_CLIP_3_3_0_SHA256
    assert (path.parent / "LICENSE-clip-bpe.txt").read_text().count("MIT") >= 2


@pytest.mark.parametrize("prompt", list(GOLDEN))
def test_ids_unchanged(prompt):
    assert tokenizer.clip_tokenizer()(prompt).input_ids == GOLDEN[prompt]


def test_sd2_settings_and_truncation():
    tok = tokenizer.clip_tokenizer()
    assert (len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == \
        (49408, 0, 49406, 49407)
    words = " ".join(f"word{i} lorem ipsum" for i in range(40))
    ids = tok([words], padding="max_length", max_length=77, truncation=True).input_ids[0]
    assert len(ids) == 77 and ids[:5] == [49406, 2653, 271, 12880, 332]
    assert ids[-3:] == [8257, 2653, 49407]


def test_vocabulary_is_installed_with_the_package():
    """`pip install .` (not editable) must carry the file: it is package data."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert f"data/{tokenizer.BPE_FILE}" in data["package-data"]["pahi_rt"]
    assert "data/LICENSE-clip-bpe.txt" in data["package-data"]["pahi_rt"]
