"""Feedback records: a thumbs-up/down on one image (KTO) or a pick between two (DPO), as JSONL.

One JSON object per line:
    {"prompt": "...", "seed": 7, "label": "good", ...source}                 a label
    {"prompt": "...", "seed_win": 7, "seed_lose": 9, ...source}              a pair (one prompt)
`seed` is the image's own seed (generate: image i of a run has seed + i), so its eps is
sampling.draw_eps([seed]). The source fields, written by `pahi-rt feedback add|pair` from the
PNG metadata, say how the image was made:
    model, decoder     what generate's --model / --decoder named
    model_key          content key of model + decoder (pahi_rt.model_key)
    size "WxH", steps  image size and Euler steps
    noise              gaussian | hi | pahi; with hi/pahi also head (the head dir generate read)
                       and head_key (checkpoint.head_key), so x_T = mu + sigma * eps can be
                       recomputed with exactly that head
    image / images     the PNG path(s), for people (not read back)
Other tools may write just {prompt, seed, label} or {prompt, seed_win, seed_lose} (+ size):
Gaussian-noise images of the model that training names. label: "good"/"bad", true/false or 1/0.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from ..io import json_lines
from ..specs import MAX_STEPS, NOISE_KINDS, SEED_MAX
from .record_fields import integer as _integer, parse_size, short as _short, text as _text

LABELS = {"good": True, "bad": False, True: True, False: False}  # 1 and 0 hash as True, False
SOURCE_FIELDS = ("model", "decoder", "model_key", "size", "steps", "noise", "head", "head_key")


@dataclass(frozen=True)
class Source:
    """How a record's images were made (everything but prompt and seed). None: not stated."""

    model: str | None = None
    decoder: str | None = None
    model_key: str | None = None
    size: str | None = None  # "WxH"
    steps: int | None = None
    noise: str = "gaussian"
    head: str | None = None  # with noise hi | pahi
    head_key: str | None = None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in SOURCE_FIELDS if getattr(self, k) is not None}


@dataclass(frozen=True)
class Record:
    """One label (seeds = (seed,), label True/False) or one pair (seeds = (winner, loser))."""

    prompt: str
    seeds: tuple[int, ...]
    label: bool | None = None  # None for a pair
    source: Source = field(default_factory=Source)
    line: int = 0  # 1-based line in the file it was read from (0: new)
    images: tuple[str, ...] = ()

    @property
    def is_pair(self) -> bool:
        return self.label is None

    def to_json(self) -> dict:
        out: dict = {"prompt": self.prompt}
        if self.is_pair:
            out.update(seed_win=self.seeds[0], seed_lose=self.seeds[1])
        else:
            out.update(seed=self.seeds[0], label="good" if self.label else "bad")
        out.update(self.source.to_json())
        if self.images:
            out.update({"image": self.images[0]} if len(self.images) == 1
                       else {"images": list(self.images)})
        return out

    def identity(self) -> tuple:
        """Same image(s) and prompt: records with one identity are duplicates or conflicts."""
        return (self.prompt, tuple(sorted(self.seeds)), self.is_pair, self.source.noise,
                self.source.head_key or self.source.head)


def parse_record(obj, where: str) -> Record:
    """A Record from one decoded JSON line (or PNG metadata); `where` ("FILE line N") prefixes
    every error. Every field is checked here, so a record that parses is one every reader and
    training run accepts: seeds 0..2^64-1 (specs.SEED_MAX, as generate and serve), steps
    1..specs.MAX_STEPS, a size generate could make, text without lone surrogates."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: not a JSON object")
    prompt = _text(obj.get("prompt"), "prompt", where)
    if prompt is None or not prompt.strip():
        raise InputError(f"{where}: needs a non-empty 'prompt' (a string)")
    if "seed_win" in obj or "seed_lose" in obj:
        seeds = (_seed(obj, "seed_win", where), _seed(obj, "seed_lose", where))
        if seeds[0] == seeds[1]:
            raise InputError(f"{where}: seed_win and seed_lose are the same image ({seeds[0]})")
        label = None
    elif "seed" in obj:
        seeds, label = (_seed(obj, "seed", where),), _label(obj, where)
    else:
        raise InputError(f"{where}: needs 'seed' + 'label' (a label) or 'seed_win' + "
                         "'seed_lose' (a pair)")
    return Record(prompt, seeds, label, _source(obj, where))


def validate_record(record: Record, where: str = "record") -> Record:
    """`record` itself if it is one `parse_record` would accept (InputError naming `where` and
    the field otherwise): for stores that build records in code (feedback add, a database)."""
    parse_record(record.to_json(), where)
    return record


def _seed(obj: dict, key: str, where: str) -> int:
    return _integer(obj.get(key), key, where, 0, SEED_MAX, "2^64-1")


def _label(obj: dict, where: str) -> bool:
    value = obj.get("label")
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, float) and key in (0.0, 1.0):
        key = int(key)
    try:
        return LABELS[key]
    except (KeyError, TypeError):
        raise InputError(f"{where}: 'label' must be good/bad, true/false or 1/0, "
                         f"got {_short(value)}") from None


def _source(obj: dict, where: str) -> Source:
    fields = {k: obj[k] for k in SOURCE_FIELDS if obj.get(k) is not None}
    for k in ("model", "decoder", "model_key", "size", "noise", "head", "head_key"):
        if k in fields:
            _text(fields[k], k, where)
    if "size" in fields:
        parse_size(fields["size"], where)
    if "steps" in fields:
        fields["steps"] = _integer(fields["steps"], "steps", where, 1, MAX_STEPS, str(MAX_STEPS))
    noise = fields.get("noise", "gaussian")
    if noise not in NOISE_KINDS:
        raise InputError(f"{where}: 'noise' must be one of {', '.join(NOISE_KINDS)}, "
                         f"got {_short(noise)}")
    if noise != "gaussian" and not fields.get("head"):
        raise InputError(f"{where}: noise '{noise}' needs the 'head' that made the image")
    return Source(**fields)


def read_feedback_text(path: str | Path, option: str = "--feedback") -> str:
    """The text of a feedback file: UTF-8, a leading byte-order mark dropped (as prompt files).
    InputError (one line naming the file, and the line of an undecodable byte) otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{option} {path}: no such file")
    if not path.is_file():
        raise InputError(f"{option} {path}: not a regular file (expected JSON lines)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{option} {path}: cannot read it ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{path} line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                         "feedback files are UTF-8 JSON lines") from None


def parse_records(text: str, where: str) -> list[Record]:
    """Every record of a JSON-lines text, in order (blank lines skipped); InputError naming
    `where` and the line of the first bad one."""
    return [replace(parse_record(obj, f"{where} line {n}"), line=n)
            for n, obj in json_lines(text, where)]


def read_records(path: str | Path) -> list[Record]:
    """Every record of a JSONL file, in file order (blank lines skipped). Raises InputError on
    a missing, empty, non-UTF-8 or malformed file, naming the line."""
    records = parse_records(read_feedback_text(path), str(path))
    if not records:
        raise InputError(f"{path}: no feedback records (add some with `pahi-rt feedback add`)")
    return records


def dedupe(records: list[Record], where: str) -> list[Record]:
    """Drop repeated records; where a later record contradicts an earlier one (other label,
    reversed pair) the later one wins. Warns with counts and an example of each."""
    kept: dict[tuple, Record] = {}
    dupes, conflicts = [], []
    for r in records:
        old = kept.get(r.identity())
        if old is not None and (old.label, old.seeds) == (r.label, r.seeds):
            dupes.append((r, old))
            continue
        if old is not None:
            conflicts.append((r, old))
            del kept[r.identity()]  # re-insert: the later record keeps its place in order
        kept[r.identity()] = r
    if dupes:
        r, old = dupes[0]
        warnings.warn(f"{where}: {len(dupes)} duplicate record(s) ignored (e.g. {_at(r)} "
                      f"repeats {_at(old)})", stacklevel=2)
    if conflicts:
        r, old = conflicts[0]
        warnings.warn(f"{where}: {len(conflicts)} record(s) contradict an earlier one; the later "
                      f"is used (e.g. {_at(r)} overrides {_at(old)})", stacklevel=2)
    return list(kept.values())


def common_source(records: list[Record], where: str) -> Source:
    """The model (key), size and steps all records share; raises InputError if they differ.
    Fields no record states stay None. noise/head may differ between records."""
    out = {}
    for name, plural in (("model_key", "model keys"), ("size", "sizes"),
                         ("steps", "step counts")):
        values = {getattr(r.source, name): r for r in records
                  if getattr(r.source, name) is not None}
        if len(values) > 1:
            (a, ra), (b, rb) = list(values.items())[:2]
            raise InputError(f"{where}: records are for different {plural} "
                             f"({a} at {_at(ra)}, {b} at {_at(rb)}); a head is trained for one "
                             "model and size: keep one kind per file")
        out[name] = next(iter(values), None)
    first = next((r.source for r in records if r.source.model_key == out["model_key"]
                  and r.source.model), Source())
    return Source(model=first.model, decoder=first.decoder, **out)


def _at(record: Record) -> str:
    return f"line {record.line}" if record.line else (record.images or ("new record",))[0]


def select_records(records: list[Record], objective: str, where: str) -> list[Record]:
    """The records `objective` trains on (kto: labels, dpo: pairs), deduplicated; InputError
    when there are none, or when KTO labels are all one kind (nothing to contrast)."""
    pairs = objective == "dpo"
    chosen = [r for r in records if r.is_pair == pairs]
    kind, other_kind = ("pair", "label") if pairs else ("label", "pair")
    other = len(records) - len(chosen)
    if not chosen:
        raise InputError(f"{where}: no {kind} records for --objective {objective} (it holds "
                         f"{other} {other_kind} records: use --objective "
                         f"{'kto' if pairs else 'dpo'})")
    if other:
        warnings.warn(f"{where}: {other} {other_kind} record(s) not used by --objective "
                      f"{objective}", stacklevel=2)
    chosen = dedupe(chosen, where)
    if not pairs and len({r.label for r in chosen}) < 2:
        which = "good" if chosen[0].label else "bad"
        raise InputError(f"{where}: all {len(chosen)} labels are '{which}'; KTO needs good and "
                         "bad images to learn a contrast")
    return chosen


def resolve_target(common: Source, model: str | None, decoder: str | None, height: int | None,
                   width: int | None, where: str) -> tuple[str, str | None, int, int]:
    """(model, decoder, height, width) to train for: the records' unless options say so; an
    option that contradicts the records (by content key or size) raises InputError."""
    from ..model_key import model_key

    model = model or common.model
    if model is None:
        raise InputError(f"{where}: the records name no model; pass --model")
    if decoder is None and model == common.model:
        decoder = common.decoder
    if common.model_key is not None:
        key = model_key(model, decoder)
        if key != common.model_key:
            made = f"{common.model} (decoder {common.decoder})" if common.model else "a model"
            raise InputError(f"{where}: the records are for {made} with content key "
                             f"{common.model_key}, but --model {model} has key {key} (other "
                             "weights, or the files changed since)")
    if common.size is None:
        if height is None or width is None:
            raise InputError(f"{where}: the records state no image size; pass --height and "
                             "--width")
        return model, decoder, height, width
    w, h = parse_size(common.size, where)
    if (height or h, width or w) != (h, w):
        raise InputError(f"{where}: the records are {common.size} images, not "
                         f"{width or w}x{height or h} (--width/--height)")
    return model, decoder, h, w
