"""The real CLIP BPE tokenizer for presets built without a download.

The vocabulary is the one OpenCLIP ships (`open_clip/bpe_simple_vocab_16e6.txt.gz`, the same merges
OpenAI CLIP and SD 2.x use). We read the file without importing `open_clip` (which would import
torchvision) and build a Hugging Face `CLIPTokenizer` with SD 2.x's settings (pad token "!").
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

from .errors import MissingDependencyError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # the CLIP vocabulary is 49408 = 2*256 bytes + merges + 2 specials
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the CLIP BPE vocabulary comes from open-clip-torch; install it with: "
            "pip install --no-deps open-clip-torch")
    path = Path(next(iter(spec.submodule_search_locations))) / BPE_FILE
    if not path.is_file():
        raise MissingDependencyError(f"{path} is missing; reinstall open-clip-torch")
    return path


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def vocab_and_merges(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary, in the order both OpenCLIP and Hugging Face assign ids."""
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]
    byte_chars = _bytes_to_unicode()
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, [tuple(m.split()) for m in merges]


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """SD 2.x CLIP tokenizer: 77 tokens, BOS 49406, EOS 49407, pad "!" (id 0)."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges(bpe_path())
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=77)
