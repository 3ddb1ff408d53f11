"""`pahi-rt serve` against a real local Ray Serve (session fixture `server`): the official
`openai` client and plain HTTP; pixels equal `generate`'s; batching, overload, bad input, and a
model replica killed mid-request."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")

PROMPT = "a red fox in the snow"


def post(url: str, body, timeout: float = 60) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of a POST to /v1/images/generations."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/v1/images/generations", data=data,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = {"text": text.decode(errors="replace")}
        return e.code, dict(e.headers), payload


def image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def pixels(b64: str) -> np.ndarray:
    return np.asarray(image(b64).convert("RGB"), dtype=np.int16)


@pytest.fixture
def busy_port():
    """A port something listens on (a second server must not share it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference():
    """generate's pipeline in this process: (prompt, seed) -> its pixels."""
    from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline
    from pahi_rt.specs import MODES, RenderShape

    pipe = open_pipeline(load_model("tiny", device="cpu"),
                         PipelineConfig(backend="torch", mode=MODES["gaussian-1step"],
                                        shape=RenderShape(batch=1, height=64, width=64)))
    return lambda prompt, seed: pipe([prompt], [seed])[0].astype(np.int16)


def test_openai_client_image_equals_generate(client, tmp_path):
    from pahi_rt.cli import app

    r = client.images.generate(prompt=PROMPT, size="64x64", extra_body={"seed": 5})
    out = tmp_path / "g.png"
    res = CliRunner().invoke(app, ["generate", PROMPT, "--model", "tiny", "--height", "64",
                                   "--width", "64", "--seed", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    served, local = image(r.data[0].b64_json), Image.open(out)
    assert served.text == local.text  # the same metadata chunks
    diff = np.abs(pixels(r.data[0].b64_json) - np.asarray(local, dtype=np.int16))
    assert diff.max() <= 1


def test_n_images_use_seed_plus_i(client, reference):
    r = client.images.with_raw_response.generate(prompt=PROMPT, n=2, extra_body={"seed": 11})
    assert r.headers["x-pahi-seed"] == "11"
    data = r.parse().data
    assert len(data) == 2 and not np.array_equal(pixels(data[0].b64_json),
                                                 pixels(data[1].b64_json))
    for i, d in enumerate(data):
        assert json.loads(image(d.b64_json).text["pahi-rt"])["seed"] == str(11 + i)
        assert np.abs(pixels(d.b64_json) - reference(PROMPT, 11 + i)).max() <= 1


def test_concurrent_requests_are_batched_independently(server, reference):
    results = {}

    def text(seed):  # prompts of different lengths in one batch (tokenizer padding)
        return "prompt " + "word " * (seed % 5) + str(seed)

    def one(seed):
        results[seed] = post(server, {"prompt": text(seed), "seed": seed})

    threads = [threading.Thread(target=one, args=(s,)) for s in range(100, 108)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert sorted(results) == list(range(100, 108))
    assert all(status == 200 for status, _, _ in results.values()), results
    assert max(int(h["x-pahi-batch-size"]) for _, h, _ in results.values()) > 1
    for seed, (status, _, body) in results.items():
        assert status == 200
        assert np.abs(pixels(body["data"][0]["b64_json"]) - reference(text(seed), seed)
                      ).max() <= 1


@pytest.mark.parametrize("body, param", [
    (b"{not json", None), (b"[1, 2]", None), ({}, "prompt"), ({"prompt": 5}, "prompt"),
    ({"prompt": "   "}, "prompt"), ({"prompt": "x", "n": 0}, "n"), ({"prompt": "x", "n": 9}, "n"),
    ({"prompt": "x", "n": "2"}, "n"), ({"prompt": "x", "n": True}, "n"),
    ({"prompt": "x", "seed": -1}, "seed"), ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "size": 64}, "size"), ({"prompt": "x", "steps": 3}, "steps"),
    ({"prompt": "x", "noise": "pahi"}, "noise"), ({"prompt": "x", "model": "dall-e-3"}, "model"),
    ({"prompt": "x", "response_format": "png"}, "response_format"),
])
def test_bad_input_is_a_4xx_openai_error(server, body, param):
    status, _, payload = post(server, body)
    assert status == 400, payload
    error = payload["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"] and "Traceback" not in error["message"]


def test_url_format_and_unknown_size_are_clear_400s(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt="x", response_format="url")
    assert "b64_json" in e.value.body["message"] and e.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt="x", size="512x512")
    assert "served sizes: 64x64" in e.value.body["message"]


def test_long_prompt_is_truncated_with_a_warning_header(server):
    status, headers, _ = post(server, {"prompt": "word " * 100, "seed": 1})
    assert status == 200 and "truncated to 77 tokens" in headers["warning"]


def test_health_models_and_unknown_routes(server, client):
    with urllib.request.urlopen(server + "/healthz", timeout=10) as r:
        health = json.loads(r.read())
    assert r.status == 200 and health["status"] == "ok" and health["sizes"] == ["64x64", "128x64"]
    assert [m.id for m in client.models.list().data] == ["tiny"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server + "/v1/nothing", timeout=10)
    assert e.value.code == 404 and "error" in json.loads(e.value.read())


def test_local_ray_is_loopback_only(server):
    import ray

    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    assert server.startswith("http://127.0.0.1:")


def test_overload_is_503_with_retry_after_never_a_hang(server):
    results = []

    def one(i):
        results.append(post(server, {"prompt": f"load {i}", "n": 4, "seed": i}, timeout=120))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(48)]  # 24 fit
    t0 = time.monotonic()
    [t.start() for t in threads]
    [t.join(150) for t in threads]
    assert len(results) == 48 and time.monotonic() - t0 < 150
    rejected = [(h, body) for status, h, body in results if status == 503]
    assert rejected and all(h.get("retry-after") or h.get("Retry-After") for h, _ in rejected)
    assert all(body["error"]["type"] == "server_error" for _, body in rejected)  # OpenAI shape
    assert {status for status, _, _ in results} <= {200, 503}
    assert sum(status == 200 for status, _, _ in results) >= 8


def test_metrics_count_images_and_batches(server):
    from pahi_rt.serving.cluster import metrics_urls

    deadline, text = time.monotonic() + 40, ""
    while time.monotonic() < deadline:
        text = "".join(urllib.request.urlopen(u, timeout=10).read().decode()
                       for u in metrics_urls())
        if "ray_pahi_images_generated" in text and "ray_pahi_batch_size_bucket" in text:
            break
        time.sleep(2)
    assert "ray_pahi_images_generated" in text and "ray_pahi_request_latency_s" in text
    assert "ray_pahi_batch_size_bucket" in text and "ray_serve_" in text


def test_zz_killed_replica_gives_5xx_then_recovers(server):
    """Runs last (it restarts the model replica): in-flight requests end in a clean 5xx in the
    OpenAI error shape (the ingress answers for the dead model replica), no hang; Serve starts
    a new replica and later requests succeed."""
    import ray

    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("SERVE_REPLICA::pahi-rt#ImageModel#")]
    assert len(names) == 1
    replica = ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        post(server, {"prompt": f"kill {i}", "n": 8, "seed": i}, timeout=120)))
        for i in range(8)]  # 64 images; all 8 requests run on the replica at once
    [t.start() for t in threads]
    deadline = time.monotonic() + 60
    while not results and time.monotonic() < deadline:  # the first answer: the other 7 are
        time.sleep(0.01)                                # in flight, however fast the machine
    assert results and results[0][0] == 200, results
    ray.kill(replica, no_restart=True)
    [t.join(150) for t in threads]
    statuses = [status for status, _, _ in results]
    assert len(statuses) == 8 and any(s >= 500 for s in statuses), statuses
    assert all(s == 200 or s >= 500 for s in statuses), statuses
    failed = [body for status, _, body in results if status >= 500]
    assert all(body["error"]["type"] == "server_error" and body["error"]["message"]
               for body in failed), failed  # JSON, never Serve's text/plain 500
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, _, body = post(server, {"prompt": "after", "seed": 1}, timeout=60)
        if status == 200:
            break
        time.sleep(1)
    assert status == 200 and body["data"][0]["b64_json"]


def test_serve_cli_refuses_bad_options_in_one_line(busy_port, tmp_path):
    from helpers import random_head

    from pahi_rt.cli import app
    from pahi_rt.heads.checkpoint import save_head

    save_head(random_head("hi"), tmp_path / "hi")

    for args, words in ((["--port", "0"], "--port"), (["--max-batch", "0"], "--max-batch"),
                        (["--height", "65"], "multiple of 8"),
                        (["--head", "x"], "--head is only used"),
                        (["--noise", "pahi", "--head", "/no/such/dir"], "no such directory"),
                        (["--cpus-per-replica", "0"], "--cpus-per-replica"),
                        (["--noise", "pahi"], "needs --head"),
                        (["--noise", "pahi", "--head", str(tmp_path / "hi")], "a 'hi' head"),
                        (["--sizes", "64x64,64x6"], "multiple of 8"),
                        (["--sizes", "64"], "not WxH"), (["--step-counts", "1,0"], "1,2"),
                        (["--ui"], "--feedback-db"), (["--max-body-bytes", "0"], "positive"),
                        (["--port", str(busy_port)], "already in use")):
        r = CliRunner().invoke(app, ["serve", "--model", "tiny", *args])  # before Ray starts
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert r.output.startswith("error:") and words in r.output, r.output
    r = CliRunner().invoke(app, ["serve", "--model", "/no/such/model"])
    assert r.exit_code == 2 and "--model /no/such/model: no such directory" in r.output


def test_a_bad_address_fails_in_seconds_on_that_address():
    from pahi_rt.errors import BackendError
    from pahi_rt.serving.cluster import check_address

    t0 = time.monotonic()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"):
        with pytest.raises(BackendError, match="127.0.0.1:1|HOST:PORT"):
            check_address(address)
    assert time.monotonic() - t0 < 10


def test_repeated_prompt_hits_the_prompt_cache(server):
    """The replica's per-prompt cache (text embeddings, head mu/sigma) reports its counters."""
    def stats():
        with urllib.request.urlopen(server + "/healthz", timeout=10) as r:
            return json.loads(r.read())["prompt_cache"]
    before = stats()
    for seed in (1, 2):
        assert post(server, {"prompt": "a prompt only this test sends", "seed": seed})[0] == 200
    after = stats()
    assert after["hits"] >= before["hits"] + 1 and after["misses"] >= before["misses"] + 1
    assert after["entries"] <= after["max_entries"]


def test_ingress_and_model_are_separate_deployments(server):
    """As Ray Serve's Stable Diffusion example: the HTTP ingress and the model deployment
    that renders, each with its own replicas."""
    from ray import serve

    deployments = serve.status().applications["pahi-rt"].deployments
    assert set(deployments) == {"ImageIngress", "ImageModel"}
    for d in deployments.values():
        assert d.status == "HEALTHY" and d.replica_states.get("RUNNING") == 1, d


def test_replica_pipelines_render_tiny_xl(tiny_xl_components, tmp_path, monkeypatch):
    """What a replica opens for an SDXL model (`open_generation`: every served noise, steps and
    size, onnxruntime exported on first use) renders the reference image, Euler-ancestral at 2
    steps included (staged, with each seed's step noise)."""
    from pahi_rt import sampling
    from pahi_rt.runtime.pipeline import LoadedModel
    from pahi_rt.serving.generation import open_generation
    from pahi_rt.serving.schema import ServeSettings

    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path / "cache"))
    model = LoadedModel(tiny_xl_components, {}, "cpu", None)
    settings = ServeSettings(model="tiny-xl", height=64, width=64, device="cpu", max_batch=2,
                             more_steps=(2,), backend="onnxruntime")
    gen = open_generation(model, settings)
    try:
        assert set(gen.pipes) == {("gaussian", 1, 64, 64), ("gaussian", 2, 64, 64)}
        for (_, steps, _, _), pipe in gen.pipes.items():
            got = pipe(["a red fox", "the sea"], [5, 6])
            ref = sampling.generate(tiny_xl_components, ["a red fox", "the sea"], [5, 6],
                                    steps=steps, height=64, width=64).numpy()
            assert np.abs(got.astype(int) - ref.astype(int)).max() <= 2, steps
    finally:
        gen.close()
