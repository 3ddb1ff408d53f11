"""The OpenAI Images API as this server speaks it: what a replica serves, request validation and
the error body. Pure (no Ray, no FastAPI), so the rules are testable without a server.

    POST /v1/images/generations  {"prompt": str, "n": 1..8, "size": "WxH",
                                  "response_format": "b64_json", "model": str,
                                  "seed": int, "steps": int, "noise": str,
                                  "timeout": seconds}                    (last four: ours)

Image i of a request uses seed + i, as `pahi-rt generate` gives image i of a prompt file. A
JSON `null` means the field is absent (as in the OpenAI API). Everything that can fail an item
fails here, before the request joins a batch, so a bad request never fails its batch-mates.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..prompts import normalise
from ..specs import DEFAULT_MODEL, PRESETS, SEED_MAX

MAX_IMAGES = 8  # `n` limit, as the OpenAI API's dall-e-2 limit is 10: small batches per request

DEFAULT_SIZE = PRESETS[DEFAULT_MODEL].spec().default_size  # (height, width)


@dataclass(frozen=True)
class ServeSettings:
    """What every model replica loads and the ingress serves; the `generate` options plus the
    serving knobs.
    height/width/steps are the defaults; more_sizes ((height, width), ...) and more_steps are
    served too, each a pipeline opened at start."""

    model: str = DEFAULT_MODEL
    decoder: str | None = None
    head: str | None = None  # checkpoint dir for noise hi|pahi (watched for a new head)
    noise: str = "gaussian"  # the head's kind; gaussian is always served too
    backend: str = "torch"
    artifacts: str | None = None
    precision: str = "fp32"
    height: int = DEFAULT_SIZE[0]  # the default model's own (`ModelSpec.default_size`)
    width: int = DEFAULT_SIZE[1]
    steps: int = 1
    device: str = "auto"
    max_batch: int = 8  # images per pipeline call (Serve's dynamic batch)
    batch_wait_ms: float = 10.0  # how long a batch waits to fill up
    more_sizes: tuple[tuple[int, int], ...] = ()
    more_steps: tuple[int, ...] = ()
    max_prompt_bytes: int = 4096  # UTF-8 bytes of `prompt` (CLIP reads 77 tokens of it)
    max_body_bytes: int = 65536  # a request body (413 beyond)
    request_timeout_s: float = 300.0  # default deadline of a request (504 past it); 0: none
    max_active: int = 80  # requests taken at once per model replica (503 beyond)
    api_keys: tuple[str, ...] = ()  # Authorization: Bearer KEY; () = open
    feedback_db: str | None = None  # SQLite store of generations and feedback; None: off
    ui: bool = False  # the rating page at /
    loopback: bool = True  # embedded Ray: bind replicas' internal gRPC servers to 127.0.0.1

    def __repr__(self) -> str:  # keys never reach a log, even through a repr
        return f"ServeSettings(model={self.model!r}, sizes={self.sizes}, steps={self.step_list})"

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def sizes(self) -> list[str]:
        return list(dict.fromkeys([self.size, *(f"{w}x{h}" for h, w in self.more_sizes)]))

    @property
    def step_list(self) -> list[int]:
        return list(dict.fromkeys([self.steps, *self.more_steps]))

    @property
    def noises(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.noise, "gaussian")))

    @property
    def model_id(self) -> str:
        """The name clients pass as `model` (a directory's name, not its full path)."""
        return Path(self.model).name if Path(self.model).is_dir() else self.model


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    n: int
    seed: int
    steps: int
    noise: str
    seed_given: bool
    height: int
    width: int
    timeout_s: float = 0.0  # 0: no deadline

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.n)]

    @property
    def key(self) -> tuple[str, int, int, int]:
        """Which pipeline renders it: (noise, steps, height, width)."""
        return (self.noise, self.steps, self.height, self.width)


@dataclass(frozen=True)
class Rendered:
    """What the model deployment returns for one request (`model.ImageModel.generate`): the
    pixels, and what the ingress needs to encode PNGs and headers without the model."""

    pixels: list  # numpy uint8 [height, width, 3], one per seed, in seed order
    batch_sizes: list[int]  # images in the pipeline call that rendered each
    tokens: int  # CLIP tokens the prompt has (past `max_tokens` the pipeline truncates)
    revised_prompt: str  # the text the text encoder read (whole words that fit)
    batch_s: float  # the longest pipeline call among them, seconds (sets the drain time)
    head_key: str  # content key of the head that rendered them; "none" for Gaussian noise
    head_path: str | None  # the --head they came from (PNG metadata); None for Gaussian
    model_key: str | None  # the model's content key (PNG metadata)
    decoder: str  # the decoder's id (PNG metadata)
    max_tokens: int  # the text encoder's token limit
    sampler: str = "Euler"  # A1111's name of the model's sampler (PNG metadata `Sampler:`)


class ApiError(Exception):
    """An OpenAI-style error: HTTP `status` and `{"error": {"message", "type", "param"}}`."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.code = code

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _get(body: dict, name: str, default):
    value = body.get(name)
    return default if value is None else value  # null = absent


def _int(body: dict, name: str, default, lo: int, hi: int) -> int:
    value = _get(body, name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer, got {json.dumps(value)}", name)
    if not lo <= value <= hi:
        raise ApiError(400, f"'{name}' must be in {lo}..{hi}, got {value}", name)
    return value


def _str(body: dict, name: str, default: str | None) -> str | None:
    value = _get(body, name, default)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string, got {json.dumps(value)}", name)
    return value


def decode_body(raw: bytes, limit: int) -> dict:
    """A request body -> its JSON object; 413 past `limit` bytes, 400 when not a JSON object
    (deep nesting included: a 400, not a RecursionError)."""
    if len(raw) > limit:
        raise ApiError(413, f"the request body is {len(raw)} bytes; the limit is {limit}",
                       code="request_too_large")
    try:
        body = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON ({e})") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def check_prompt(value, limit: int, name: str = "prompt") -> str:
    """The prompt, whitespace collapsed; 400 naming `name` when missing, not a string, empty,
    not encodable as UTF-8 (a lone UTF-16 surrogate) or over `limit` bytes."""
    if value is None:
        raise ApiError(400, f"'{name}' is required", name)
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string, got {json.dumps(value)}", name)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise ApiError(400, f"'{name}' is not valid Unicode text: a lone UTF-16 surrogate "
                       f"({value[e.start]!a}) at character {e.start}", name) from None
    if size > limit:
        raise ApiError(400, f"'{name}' is {size} bytes; the limit is {limit} (CLIP reads the "
                       "first 77 tokens)", name, code="prompt_too_long")
    prompt = normalise(value)
    if not prompt:
        raise ApiError(400, f"'{name}' is empty", name)
    return prompt


def _size(body: dict, served: ServeSettings) -> tuple[int, int]:
    size = _str(body, "size", served.size)
    if size not in served.sizes:
        raise ApiError(400, f"size '{size}' is not served here; served sizes: "
                       f"{', '.join(served.sizes)}", "size")
    w, h = size.split("x")
    return int(h), int(w)


def _format(body: dict) -> None:
    fmt = _str(body, "response_format", "b64_json")
    if fmt == "url":
        raise ApiError(400, "response_format 'url' is not supported: this server keeps no "
                       "image store; use 'b64_json' (the image comes back in the response)",
                       "response_format")
    if fmt != "b64_json":
        raise ApiError(400, f"response_format must be 'b64_json', got '{fmt}'", "response_format")


def _timeout(body: dict, served: ServeSettings) -> float:
    """The request's deadline in seconds (0: none): the `timeout` extension, else the server's
    --request-timeout."""
    value = body.get("timeout")
    if value is None:
        return served.request_timeout_s
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
        raise ApiError(400, f"'timeout' must be seconds in (0, 3600], got {json.dumps(value)}",
                       "timeout")
    return float(value)


def parse_request(raw: bytes, served: ServeSettings) -> ImageRequest:
    """Validate an images/generations body against what the replicas serve; ApiError (400, or
    413 for a body over the limit) naming the parameter otherwise. Unknown fields (quality,
    style, user) are ignored."""
    body = decode_body(raw, served.max_body_bytes)
    prompt = check_prompt(body.get("prompt"), served.max_prompt_bytes)
    n = _int(body, "n", 1, 1, MAX_IMAGES)
    height, width = _size(body, served)
    _format(body)
    model = _str(body, "model", None)
    if model is not None and model not in (served.model_id, served.model):
        raise ApiError(400, f"model '{model}' is not served here; served models: "
                       f"{served.model_id}", "model")
    steps = _int(body, "steps", served.steps, 1, 1000)
    if steps not in served.step_list:
        raise ApiError(400, f"steps {steps} is not served here; served steps: "
                       f"{', '.join(map(str, served.step_list))}", "steps")
    noise = _str(body, "noise", served.noise)
    if noise not in served.noises:
        raise ApiError(400, f"noise '{noise}' is not served here; served noise: "
                       f"{', '.join(served.noises)}", "noise")
    seed_given = body.get("seed") is not None
    seed = (_int(body, "seed", 0, 0, SEED_MAX - (n - 1)) if seed_given
            else secrets.randbits(63))  # no seed: a fresh one, reported back in a header
    return ImageRequest(prompt, n, seed, steps, noise, seed_given, height, width,
                        _timeout(body, served))
