"""Prompt files, read one way by every verb (generate, train, eval, bench).

Formats by suffix: `.txt` (one prompt per line), `.csv` / `.tsv` (a column: `--prompt-column`,
default prompt / Prompt / caption / text; quoted fields may span lines), `.jsonl` (a string field:
`--prompt-field`, same defaults); `-` reads text lines from standard input. The rules:

- UTF-8; a leading byte-order mark (Excel's CSV) is dropped. An undecodable byte, or a JSON
  string with a lone UTF-16 surrogate ("\\ud83d"), is an error naming the line, before any work.
- Lines end at "\\n" (or "\\r\\n") only. Other separators Unicode knows (\\v, \\f, \\x1c-\\x1e,
  U+0085, U+2028, U+2029) stay inside their line and, like every run of whitespace, become one
  space; a prompt is its line's text with whitespace collapsed and stripped.
- Blank lines (and empty cells) are skipped; every prompt keeps its source line number, which
  `generate` writes into the image's metadata (image i is the i-th non-blank prompt).
"""
from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

DEFAULT_COLUMNS = ("prompt", "Prompt", "caption", "text")
FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".json")


@dataclass(frozen=True)
class Prompt:
    text: str
    line: int  # 1-based line of the source where the prompt starts


def normalise(text: str) -> str:
    return " ".join(text.split())


def is_file_source(source: str | Path) -> bool:
    """True when `source` names a local file (or stdin), not an HF dataset id."""
    s = str(source)
    path = Path(s)
    return (s == "-" or path.exists() or path.suffix.lower() in FILE_SUFFIXES
            or s.startswith((".", "/", "~")) or "/" not in s)


def read_prompts(source: str | Path, column: str | None = None, field: str | None = None,
                 option: str = "--prompts") -> list[Prompt]:
    """Prompts of a local file (or `-`), in order, with their line numbers; not deduplicated."""
    s = str(source)
    text = _read_text(s, option)
    suffix = Path(s).suffix.lower()
    if suffix in (".csv", ".tsv"):
        prompts = _table(text, "\t" if suffix == ".tsv" else ",", column, s, option)
    elif suffix == ".jsonl":
        prompts = _jsonl(text, field or column, s, option)
    else:
        prompts = [Prompt(normalise(line), n) for n, line in enumerate(text.split("\n"), 1)]
    prompts = [p for p in prompts if p.text]
    for p in prompts:
        check_text(p.text, f"{option} {s}: line {p.line}")
    if not prompts:
        raise InputError(f"{option} {s}: no prompts in it")
    return prompts


def _read_text(source: str, option: str) -> str:
    path = Path(source)
    try:
        if source == "-":
            data = sys.stdin.buffer.read()
        elif path.is_dir():
            raise InputError(f"{option} {source}: is a directory, not a prompt file")
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{option} {source}: no such file") from None
    except OSError as e:
        raise InputError(f"{option} {source}: cannot read it ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{option} {source}: line {line}: not UTF-8 text (byte "
                         f"0x{data[e.start]:02x})") from None


def check_text(text: str, where: str) -> str:
    """`text` if it can be written as UTF-8; InputError naming `where` when it holds a lone
    UTF-16 surrogate: a JSON "\\ud83d" escape, or an argv byte that is not UTF-8 (Python keeps
    byte 0xNN as U+DCNN). Every prompt passes here before any work, so a run never renders
    some images and then fails on such a prompt."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        c = ord(text[e.start])
        what = (f"byte 0x{c - 0xDC00:02x} that is not UTF-8" if 0xDC80 <= c <= 0xDCFF
                else f"a lone UTF-16 surrogate (U+{c:04X}), which is not text")
        raise InputError(f"{where} holds {what}; prompts must be UTF-8 text") from None
    return text


def _table(text: str, delimiter: str, column: str | None, source: str, option: str
           ) -> list[Prompt]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{option} {source}: empty table") from None
    names = [h.strip() for h in header]
    col = column or next((c for c in DEFAULT_COLUMNS if c in names), None)
    if col is None or col not in names:
        raise InputError(f"{option} {source}: no column '{column or 'prompt'}' (columns: "
                         f"{', '.join(names)}); choose one with --prompt-column")
    index, out = names.index(col), []
    start = reader.line_num + 1
    for row in reader:
        if index < len(row):
            out.append(Prompt(normalise(row[index]), start))
        start = reader.line_num + 1
    return out


def _jsonl(text: str, field: str | None, source: str, option: str) -> list[Prompt]:
    from .io import json_lines

    out = []
    for n, row in json_lines(text, f"{option} {source}"):
        key = field or next((c for c in DEFAULT_COLUMNS if isinstance(row, dict) and c in row),
                            None)
        if not isinstance(row, dict) or key not in row:
            raise InputError(f"{option} {source}: line {n} has no field '{field or 'prompt'}'; "
                             "choose one with --prompt-field")
        if not isinstance(row[key], str):
            raise InputError(f"{option} {source}: line {n}: '{key}' is a "
                             f"{type(row[key]).__name__}, not a string")
        out.append(Prompt(normalise(row[key]), n))
    return out
