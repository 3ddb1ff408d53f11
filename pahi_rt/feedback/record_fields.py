"""Field checks of feedback records (records.py) and of the PNG metadata they come from: one
rule per kind of value, so a record that parses is one every reader accepts."""
from __future__ import annotations

import re

from ..errors import InputError
from ..specs import check_image_size

DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit also takes "²", int() takes "٣"


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def text(value, key: str, where: str) -> str | None:
    """A string field (None when absent); one holding a lone UTF-16 surrogate (JSON "\\ud83d",
    undecodable bytes) is refused: it cannot be written back as UTF-8."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: '{key}' must be a string, got {short(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{where}: '{key}' holds a lone UTF-16 surrogate "
                         f"(U+{ord(value[e.start]):04X}), not text") from None
    return value


def integer(value, key: str, where: str, lo: int, hi: int, hi_text: str) -> int:
    """An int, or a string of ASCII digits (str.isdigit would also take "²"), in lo..hi."""
    if isinstance(value, str) and DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(f"{where}: '{key}' must be an integer from {lo} to {hi_text}, "
                         f"got {short(value)}")
    return value


def parse_size(size: str, where: str = "size") -> tuple[int, int]:
    """"WxH" -> (width, height): ASCII digits, each side a multiple of 8 from 64 to
    specs.MAX_IMAGE_SIDE (what generate can make)."""
    w, sep, h = size.partition("x")
    if not sep or not DIGITS.fullmatch(w) or not DIGITS.fullmatch(h):
        raise InputError(f"{where}: size must look like 512x512 (WxH), got {short(size)}")
    check_image_size(int(h), int(w), where=f"{where}: size {size}: ", labels=("height", "width"))
    return int(w), int(h)


