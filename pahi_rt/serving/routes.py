"""The HTTP routes of a replica (`app.ImageServer` mixes them in): images/generations,
images/feedback, models, healthz and the rating page, plus the replica's control thread (drain
state from `control`, the watched head)."""
# no `from __future__ import annotations`: FastAPI reads the Request annotation at runtime
import asyncio
import base64
import logging
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from .. import io
from . import control
from .http import api_error, check_key, error, read_body
from .schema import ApiError, decode_body, parse_request

log = logging.getLogger("ray.serve")
api = FastAPI(title="pahi-rt", docs_url=None, redoc_url=None, openapi_url=None)
RETRY = {"Retry-After": "1"}


class Routes:
    def setup_routes(self, app_name: str) -> None:
        from ..model_key import model_key
        from ..feedback.store import FeedbackStore

        s = self.settings
        self.app_name, self.active, self.state = app_name, 0, "serving"
        self.rendered = 0  # images this replica rendered (dropped requests render none)
        self.longest_batch_s = 0.0  # sets the default drain time
        self.replica_id = uuid.uuid4().hex[:12]
        self.store = FeedbackStore(s.feedback_db) if s.feedback_db else None
        self.source = {"model": s.model, "decoder": s.decoder,
                       "model_key": model_key(s.model, s.decoder) if self.store else None}
        threading.Thread(target=self._control, name="pahi-control", daemon=True).start()

    def _control(self) -> None:
        """Poll the drain state (and report what this replica holds while draining); take up a
        new head from the watched directory between requests."""
        while True:
            time.sleep(control.POLL_S)
            try:
                self.state = control.state(self.app_name)
                if self.state != "serving":
                    control.report_active(self.app_name, self.replica_id, self.active,
                                          self.longest_batch_s)
            except Exception as e:  # GCS briefly unreachable: keep the last state
                log.debug("control poll failed: %s", e)
            if self.watch is not None and self.watch.changed():
                try:
                    new = self.watch.reload(self.model, self.settings, self.gen)
                except Exception as e:  # a half-written or unfit head: keep serving the old
                    log.warning("head in %s not taken up: %s", self.settings.head, e)
                    continue
                if new is not None:
                    self.gen = new
                    log.warning("took up head %s from %s", new.head_key, self.settings.head)

    def _admit(self) -> None:
        s = self.settings
        if self.state != "serving":
            raise ApiError(503, "the server is shutting down; retry on another replica",
                           kind="server_error", code="shutting_down")
        if self.active >= s.max_active:
            raise ApiError(503, f"the server is busy ({self.active} requests in progress); "
                           "retry later", kind="server_error", code="overloaded")

    async def _wait(self, gen, req) -> list:
        """The rendered items of `req`; 504 past its deadline, 503 when the server stops
        first; queued items are dropped in both cases and when the client goes away."""
        task = asyncio.ensure_future(asyncio.gather(
            *(self.render((gen, req.key, req.prompt, seed)) for seed in req.seeds)))
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
            task.cancel()  # no-op when done; else the items still queued never render
        return task.result()

    def _images(self, gen, req, results) -> list[dict]:
        s, base = self.settings, self.model
        head_key = gen.key_of(req.noise)
        keys = {"model_key": base.keys()["model_key"],
                "head_key": head_key if req.noise != "gaussian" else None}
        data, rows = [], []
        for seed, (pixels, _, _, text) in zip(req.seeds, results):
            meta = io.png_metadata(req.prompt, seed, req.steps, req.noise, s.model,
                                   base.head_path if req.noise != "gaussian" else None,
                                   req.height, req.width, base.base.decoder_id, keys=keys,
                                   sampler=base.spec.scheduler.sampler)
            image_id = f"img_{uuid.uuid4().hex}"
            data.append({"b64_json": base64.b64encode(io.png_bytes(pixels, meta)).decode(),
                         "revised_prompt": text, "id": image_id})
            rows.append((image_id, req.prompt, seed, self._source(req, head_key)))
        if self.store is not None:
            self.store.add_images(rows)
        return data

    def _source(self, req, head_key: str) -> dict:
        src = {**self.source, "size": f"{req.width}x{req.height}", "steps": req.steps,
               "noise": req.noise}
        if req.noise != "gaussian":
            src.update(head=self.model.head_path, head_key=head_key)
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
                gen = self.gen  # the head this request renders with, whatever comes after
                results = await self._wait(gen, req)
                data = await asyncio.to_thread(self._images, gen, req, results)
            finally:
                self.active -= 1
        except ApiError as e:
            return api_error(e, RETRY if e.status == 503 else None)
        self.images.inc(req.n, tags={"noise": req.noise})
        self.latency.observe(time.perf_counter() - t0)
        return JSONResponse({"created": int(time.time()), "data": data},
                            headers=self._headers(req, gen, results))

    def _headers(self, req, gen, results) -> dict[str, str]:
        batch, tokens = max(r[1] for r in results), results[0][2]
        headers = {"x-pahi-seed": str(req.seed), "x-pahi-batch-size": str(batch),
                   "x-pahi-head-key": gen.key_of(req.noise)}
        limit = self.model.spec.max_tokens
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
        """200 once this replica has loaded the model; 503 while it drains (load balancers
        stop sending). Open without an API key."""
        import torch

        s = self.settings
        if self.state != "serving":
            return error(503, f"the server is {self.state}", code="shutting_down")
        return {"status": "ok", "model": s.model_id, "sizes": s.sizes, "steps": s.step_list,
                "noise": list(s.noises), "max_batch": s.max_batch,
                "head_key": self.gen.head_key, "rendered": self.rendered,
                "prompt_cache": self.gen.prompt_cache.stats() if self.gen.prompt_cache else None,
                "device": str(self.model.device),
                "torch_threads": torch.get_num_threads()}

    @api.get("/")
    async def page(self):
        """The rating page (--ui)."""
        from importlib.resources import files

        if not self.settings.ui:
            return error(404, "no page here (start the server with --ui for the rating page)")
        return HTMLResponse(files(__package__).joinpath("ui.html").read_text(encoding="utf-8"))
