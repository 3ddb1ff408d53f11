"""The OpenAI Images API as this server speaks it: what a replica serves, request validation and
the error body. Pure (no Ray, no FastAPI), so the rules are testable without a server.

    POST /v1/images/generations  {"prompt": str, "n": 1..8, "size": "WxH",
                                  "response_format": "b64_json", "model": str,
                                  "seed": int, "steps": int, "noise": str}   (last three: ours)

Image i of a request uses seed + i, as `pahi-rt generate` gives image i of a prompt file.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..prompts import normalise
from ..specs import SEED_MAX

MAX_IMAGES = 8  # `n` limit, as the OpenAI API's dall-e-2 limit is 10: small batches per request


@dataclass(frozen=True)
class ServeSettings:
    """What every replica loads and serves; the `generate` options plus the batching knobs."""

    model: str = "sd-turbo"
    decoder: str | None = None
    head: str | None = None  # checkpoint dir for noise hi|pahi
    noise: str = "gaussian"  # the head's kind; gaussian is always served too
    backend: str = "torch"
    artifacts: str | None = None
    precision: str = "fp32"
    height: int = 512
    width: int = 512
    steps: int = 1
    device: str = "auto"
    max_batch: int = 8  # images per pipeline call (Serve's dynamic batch)
    batch_wait_ms: float = 10.0  # how long a batch waits to fill up

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

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

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.n)]


class ApiError(Exception):
    """An OpenAI-style error: HTTP `status` and `{"error": {"message", "type", "param"}}`."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _int(body: dict, name: str, default, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer, got {json.dumps(value)}", name)
    if not lo <= value <= hi:
        raise ApiError(400, f"'{name}' must be in {lo}..{hi}, got {value}", name)
    return value


def _str(body: dict, name: str, default: str | None) -> str | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string, got {json.dumps(value)}", name)
    return value


def parse_request(raw: bytes, served: ServeSettings) -> ImageRequest:
    """Validate an images/generations body against what the replicas serve; ApiError (400)
    naming the parameter otherwise. Unknown fields (quality, style, user) are ignored."""
    try:
        body = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    if "prompt" not in body:
        raise ApiError(400, "'prompt' is required", "prompt")
    prompt = normalise(_str(body, "prompt", None) or "")
    if not prompt:
        raise ApiError(400, "'prompt' is empty", "prompt")
    n = _int(body, "n", 1, 1, MAX_IMAGES)
    size = _str(body, "size", served.size)
    if size != served.size:
        raise ApiError(400, f"size '{size}' is not served here; served sizes: {served.size}",
                       "size")
    fmt = _str(body, "response_format", "b64_json")
    if fmt == "url":
        raise ApiError(400, "response_format 'url' is not supported: this server keeps no "
                       "image store; use 'b64_json' (the image comes back in the response)",
                       "response_format")
    if fmt != "b64_json":
        raise ApiError(400, f"response_format must be 'b64_json', got '{fmt}'", "response_format")
    model = _str(body, "model", None)
    if model is not None and model not in (served.model_id, served.model):
        raise ApiError(400, f"model '{model}' is not served here; served models: "
                       f"{served.model_id}", "model")
    steps = _int(body, "steps", served.steps, 1, 1000)
    if steps != served.steps:
        raise ApiError(400, f"steps {steps} is not served here; served steps: {served.steps}",
                       "steps")
    noise = _str(body, "noise", served.noise)
    if noise not in served.noises:
        raise ApiError(400, f"noise '{noise}' is not served here; served noise: "
                       f"{', '.join(served.noises)}", "noise")
    seed_given = body.get("seed") is not None
    seed = (_int(body, "seed", 0, 0, SEED_MAX - (n - 1)) if seed_given
            else secrets.randbits(63))  # no seed: a fresh one, reported back in a header
    return ImageRequest(prompt, n, seed, steps, noise, seed_given)
