"""HTTP details of the ingress: the body read with a size cap, API-key checks and JSON error
responses in the OpenAI shape (`{"error": {"message", "type", "param", "code"}}`), failed model
calls included (`upstream_error`)."""
# no `from __future__ import annotations`: FastAPI reads annotations at runtime
import hmac
import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from .schema import ApiError, ServeSettings, error_body

log = logging.getLogger("ray.serve")

KINDS = {401: "authentication_error", 404: "invalid_request_error", 413: "invalid_request_error",
         503: "server_error", 504: "timeout_error"}


def error(status: int, message: str, param=None, code=None, headers=None) -> JSONResponse:
    kind = KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(error_body(message, kind, param, code), status_code=status,
                        headers=headers)


def api_error(e: ApiError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or ApiError 413 as soon as it passes `limit` bytes (by Content-Length when
    given, else while reading)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {declared} bytes; the limit is {limit}",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes",
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def check_key(request: Request, settings: ServeSettings) -> None:
    """ApiError 401 unless the server is open or `Authorization: Bearer KEY` names one of its
    keys (compared in constant time; the key is never echoed or logged)."""
    if not settings.api_keys:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip().encode()
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, k.encode())
                                             for k in settings.api_keys):
        raise ApiError(401, "a valid API key is required: send 'Authorization: Bearer KEY'",
                       kind="authentication_error", code="invalid_api_key")


def upstream_error(e: Exception) -> ApiError:
    """A failed call to the model deployment as an OpenAI-style error: 503 (Retry-After) when
    its replicas are overloaded, died (Serve starts a new one) or did not answer in time; 500
    naming the exception for anything raised while rendering (logged with its traceback)."""
    from ray.exceptions import RayActorError, TaskCancelledError
    from ray.serve.exceptions import BackPressureError, RayServeException

    if isinstance(e, ApiError):
        return e
    if isinstance(e, BackPressureError):
        return ApiError(503, "the model replicas are busy; retry later", kind="server_error",
                        code="overloaded")
    if isinstance(e, (RayActorError, RayServeException, TaskCancelledError)):
        return ApiError(503, "the model replica rendering this request stopped (Serve starts "
                        "a new one); retry", kind="server_error", code="model_unavailable")
    if isinstance(e, TimeoutError):
        return ApiError(503, "no model replica answered in time", kind="server_error",
                        code="model_unavailable")
    cause = getattr(e, "cause", None) or e  # RayTaskError: what the model raised
    log.error("rendering failed: %s: %s", type(cause).__name__, cause, exc_info=e)
    return ApiError(500, f"internal error: {type(cause).__name__}", kind="server_error")
