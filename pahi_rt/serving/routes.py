"""The HTTP routes of the ingress (`ingress.ImageIngress` mixes them in): images/generations
(validated here, rendered by the model deployment, encoded here as base64 PNGs),
images/feedback, models, healthz and the rating page."""
# no `from __future__ import annotations`: FastAPI reads the Request annotation at runtime
import asyncio
import base64
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from .. import io
from . import control
from .http import api_error, check_key, error, read_body, upstream_error
from .schema import ApiError, Rendered, decode_body, parse_request

log = logging.getLogger("ray.serve")
api = FastAPI(title="pahi-rt", docs_url=None, redoc_url=None, openapi_url=None)
RETRY = {"Retry-After": "1"}
HEALTH_S = 5.0  # how long /healthz waits for a model replica's stats


async def _result(response):
    """Await a DeploymentResponse inside a task (a DeploymentResponse is not a coroutine)."""
    return await response


class Routes:
    """The routes and their helpers; `ingress.ImageIngress` sets the state they use."""

    def _admit(self) -> None:
        s = self.settings
        if self.state != "serving":
            raise ApiError(503, "the server is shutting down; retry on another replica",
                           kind="server_error", code="shutting_down")
        if self.active >= s.max_active:
            raise ApiError(503, f"the server is busy ({self.active} requests in progress); "
                           "retry later", kind="server_error", code="overloaded")

    async def _wait(self, req) -> Rendered:
        """The rendered images of `req`; 504 past its deadline, 503 when the server stops
        first; the model call is cancelled in both cases and when the client goes away (its
        queued images never render). A failed model call is an ApiError (`upstream_error`)."""
        response = self.model.generate.remote(req.key, req.prompt, req.seeds)
        task = asyncio.ensure_future(_result(response))
        deadline = time.monotonic() + req.timeout_s if req.timeout_s else None
        try:
            while not task.done():
                left = deadline - time.monotonic() if deadline is not None else control.POLL_S
                await asyncio.wait({task}, timeout=max(0.0, min(control.POLL_S, left)))
                if task.done():
                    break
                if self.state == "stopping":
                    raise ApiError(503, "the server stopped before this request was rendered",
                                   kind="server_error", code="shutting_down")
                if deadline is not None and time.monotonic() > deadline:
                    raise ApiError(504, f"the request did not finish within its timeout of "
                                   f"{req.timeout_s:g} s", "timeout", kind="timeout_error",
                                   code="timeout")
        finally:
            if not task.done():  # the images still queued at the model never render
                response.cancel()
                task.cancel()
        try:
            return task.result()
        except Exception as e:
            raise upstream_error(e) from None

    def _images(self, req, rendered: Rendered) -> list[dict]:
        s, r = self.settings, rendered
        keys = {"model_key": r.model_key,
                "head_key": r.head_key if req.noise != "gaussian" else None}
        data, rows = [], []
        for seed, pixels in zip(req.seeds, r.pixels):
            meta = io.png_metadata(req.prompt, seed, req.steps, req.noise, s.model,
                                   r.head_path, req.height, req.width, r.decoder, keys=keys,
                                   sampler=r.sampler)
            image_id = f"img_{uuid.uuid4().hex}"
            data.append({"b64_json": base64.b64encode(io.png_bytes(pixels, meta)).decode(),
                         "revised_prompt": r.revised_prompt, "id": image_id})
            rows.append((image_id, req.prompt, seed, self._source(req, r)))
        if self.store is not None:
            self.store.add_images(rows)
        return data

    def _source(self, req, r: Rendered) -> dict:
        src = {**self.source, "size": f"{req.width}x{req.height}", "steps": req.steps,
               "noise": req.noise}
        if req.noise != "gaussian":
            src.update(head=r.head_path, head_key=r.head_key)
        return {k: v for k, v in src.items() if v is not None}

    @api.post("/v1/images/generations")
    async def generations(self, request: Request):
        t0, s = time.perf_counter(), self.settings
        try:
            check_key(request, s)
            self._admit()
            self.active += 1
            try:
                req = parse_request(await read_body(request, s.max_body_bytes), s)
                rendered = await self._wait(req)
                self.longest_batch_s = max(self.longest_batch_s, rendered.batch_s)
                data = await asyncio.to_thread(self._images, req, rendered)
            finally:
                self.active -= 1
        except ApiError as e:
            return api_error(e, RETRY if e.status == 503 else None)
        self.images.inc(req.n, tags={"noise": req.noise})
        self.latency.observe(time.perf_counter() - t0)
        return JSONResponse({"created": int(time.time()), "data": data},
                            headers=self._headers(req, rendered))

    def _headers(self, req, r: Rendered) -> dict[str, str]:
        tokens, limit = r.tokens, r.max_tokens
        headers = {"x-pahi-seed": str(req.seed), "x-pahi-batch-size": str(max(r.batch_sizes)),
                   "x-pahi-head-key": r.head_key}
        if tokens > limit:  # the pipeline truncates exactly as `generate` does
            headers["warning"] = (f'299 pahi-rt "prompt truncated to {limit} tokens '
                                  f'({tokens} given)"')
        return headers

    @api.post("/v1/images/feedback")
    async def feedback(self, request: Request):
        """{"id": ID, "label": "good"|"bad"} or {"winner": ID, "loser": ID} -> the stored
        record (what `pahi-rt feedback add|pair` would write)."""
        from ..errors import InputError

        s = self.settings
        try:
            check_key(request, s)
            if self.store is None:
                raise ApiError(404, "feedback is off on this server (start it with "
                               "--feedback-db FILE)")
            body = decode_body(await read_body(request, s.max_body_bytes), s.max_body_bytes)
            record = await asyncio.to_thread(self._record, body)
        except ApiError as e:
            return api_error(e)
        except KeyError as e:
            return error(404, f"no image with that {e.args[0]} was served here", e.args[0])
        except InputError as e:
            return error(400, str(e))
        return {"object": "image.feedback", "record": record.to_json()}

    def _record(self, body: dict):
        if body.get("winner") is not None or body.get("loser") is not None:
            return self.store.pair(body.get("winner"), body.get("loser"))
        label = body.get("label")
        if label not in ("good", "bad"):
            raise ApiError(400, f"'label' must be 'good' or 'bad', got {label!r}", "label")
        return self.store.label(body.get("id"), label == "good")

    @api.get("/v1/models")
    async def models(self, request: Request):
        try:
            check_key(request, self.settings)
        except ApiError as e:
            return api_error(e)
        s = self.settings
        return {"object": "list", "data": [{
            "id": s.model_id, "object": "model", "created": 0, "owned_by": "pahi-rt",
            "sizes": s.sizes, "steps": s.step_list, "noise": list(s.noises)}]}

    @api.get("/healthz")
    async def healthz(self):
        """200 once a model replica answers (it has loaded the model); 503 while the server
        drains (load balancers stop sending) or no model replica answers in HEALTH_S.
        Open without an API key."""
        s = self.settings
        if self.state != "serving":
            return error(503, f"the server is {self.state}", code="shutting_down")
        response = self.model.stats.remote()
        try:
            model = await asyncio.wait_for(_result(response), HEALTH_S)
        except Exception as e:  # a timeout, a dead or restarting replica
            response.cancel()
            e = upstream_error(e)
            return error(503, f"the model is not ready: {e.message}", code=e.code)
        return {"status": "ok", "model": s.model_id, "sizes": s.sizes, "steps": s.step_list,
                "noise": list(s.noises), "max_batch": s.max_batch, **model}

    @api.get("/")
    async def page(self):
        """The rating page (--ui)."""
        from importlib.resources import files

        if not self.settings.ui:
            return error(404, "no page here (start the server with --ui for the rating page)")
        return HTMLResponse(files(__package__).joinpath("ui.html").read_text(encoding="utf-8"))
