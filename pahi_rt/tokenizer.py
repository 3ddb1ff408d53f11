"""The real CLIP BPE tokenizer for presets built without a download.

The vocabulary ships inside pahi-rt (`pahi_rt/data/bpe_simple_vocab_16e6.txt.gz`, MIT, notices in
`pahi_rt/data/LICENSE-clip-bpe.txt`): OpenAI CLIP's merges, byte for byte the file OpenCLIP ships,
the same ones SD 2.x uses. Shipping it saves an install step (open-clip-torch with `--no-deps`,
which made pip print a red dependency error). We build a Hugging Face `CLIPTokenizer` from it with
SD 2.x's settings (pad token "!").
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

from .errors import ModelLoadError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # the CLIP vocabulary is 49408 = 2*256 bytes + merges + 2 specials
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bpe_path() -> Path:
    """The vocabulary file inside the installed package."""
    path = Path(__file__).resolve().parent / "data" / BPE_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the pahi-rt install; reinstall pahi-rt")
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


@functools.lru_cache(maxsize=2)
def clip_tokenizer(pad_token: str = "!"):
    """SD 2.x CLIP tokenizer: 77 tokens, BOS 49406, EOS 49407, pad "!" (id 0). SDXL's first
    tokenizer (CLIP-L) is the same with pad_token "<|endoftext|>" (id 49407)."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges(bpe_path())
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=77)
