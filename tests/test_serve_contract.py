"""The serve input contract, cancellation, deadlines, several sizes/steps and the feedback
endpoint, against the shared real server (tests/conftest.py `server`), plus the pure rules of
`serving.schema` (no server)."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import pytest
from test_serve import PROMPT, image, post

pytest.importorskip("ray.serve")


def health(server) -> dict:
    with urllib.request.urlopen(server + "/healthz", timeout=10) as r:
        return json.loads(r.read())


def raw_post(server, path: str, data: bytes, timeout: float = 30):
    """(status, JSON body) of a POST with exactly these bytes."""
    req = urllib.request.Request(server + path, data=data,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_lone_surrogate_fails_only_its_own_request(server):
    results = {}

    def one(name, prompt):
        data = json.dumps({"prompt": prompt, "seed": 1}).encode()  # "\ud800" as JSON escape
        results[name] = raw_post(server, "/v1/images/generations", data)

    threads = [threading.Thread(target=one, args=(f"ok{i}", f"a fox {i}")) for i in range(3)]
    threads.append(threading.Thread(target=one, args=("bad", "a \ud800 fox")))
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    status, body = results.pop("bad")
    assert status == 400 and body["error"]["param"] == "prompt", body
    assert "surrogate" in body["error"]["message"]
    assert {s for s, _ in results.values()} == {200}, results


@pytest.mark.parametrize("data, status, param", [
    (b"[" * 60_000, 400, None),  # nesting: a 400, not a RecursionError 500
    (json.dumps({"prompt": "x" * 70_000}).encode(), 413, None),  # over the body limit
    (json.dumps({"prompt": "word " * 1000}).encode(), 400, "prompt"),  # over the prompt limit
    (json.dumps({"prompt": "x", "timeout": 0}).encode(), 400, "timeout"),
], ids=["nesting", "body", "prompt", "timeout"])
def test_limits_are_openai_errors(server, data, status, param):
    got, body = raw_post(server, "/v1/images/generations", data)
    assert got == status and body["error"]["param"] == param, body
    assert body["error"]["message"] and body["error"]["type"]


def test_null_means_absent_and_revised_prompt_is_what_was_encoded(server):
    nulls = dict.fromkeys(("n", "size", "response_format", "steps", "noise", "model", "timeout"))
    status, headers, body = post(server, {"prompt": PROMPT, "seed": 2, **nulls})
    assert status == 200, body
    assert body["data"][0]["revised_prompt"] == PROMPT
    long = " ".join(f"w{i}" for i in range(120))
    status, headers, body = post(server, {"prompt": long, "seed": 2})
    revised = body["data"][0]["revised_prompt"]
    assert status == 200 and "truncated" in headers["warning"]
    assert long.startswith(revised) and 0 < len(revised) < len(long)
    png = image(body["data"][0]["b64_json"])
    assert set(png.text) == {"pahi-rt", "parameters"}  # the prompt once in each
    assert json.loads(png.text["pahi-rt"])["prompt"] == long


def test_other_served_sizes_and_steps(server):
    status, _, body = post(server, {"prompt": PROMPT, "size": "128x64", "steps": 2, "seed": 3})
    assert status == 200, body
    png = image(body["data"][0]["b64_json"])
    assert png.size == (128, 64) and json.loads(png.text["pahi-rt"])["steps"] == "2"
    assert health(server)["steps"] == [1, 2]


def test_timeout_is_a_504_and_its_images_are_not_rendered(server):
    before = health(server)["rendered"]
    t0 = time.monotonic()
    status, _, body = post(server, {"prompt": PROMPT, "n": 8, "timeout": 0.001})
    assert status == 504 and body["error"]["type"] == "timeout_error", body
    assert body["error"]["param"] == "timeout" and time.monotonic() - t0 < 10
    time.sleep(0.5)  # anything of it still queued would have rendered by now
    assert health(server)["rendered"] - before <= 4  # at most the batch already running


def _abandon(server, body: dict, after_s: float) -> None:
    """Send a request and close the connection after `after_s`, as a client that gave up."""
    host, port = server.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
                  b"content-type: application/json\r\ncontent-length: "
                  + str(len(data)).encode() + b"\r\n\r\n" + data)
        time.sleep(after_s)


def test_abandoned_requests_do_not_render_and_batching_recovers(server):
    """A client that goes away: its images leave the queue unrendered. Ray's @serve.batch once
    stuck for good after cancellations (ray#50046): requests after them still succeed."""
    busy = [threading.Thread(target=post, args=(server, {"prompt": f"busy {i}", "n": 8,
                                                         "seed": i}))
            for i in range(3)]  # 24 images ahead: the abandoned ones wait behind them
    before = health(server)["rendered"]
    [t.start() for t in busy]
    time.sleep(0.05)
    gone = [threading.Thread(target=_abandon, args=(server, {"prompt": f"gone {i}", "n": 8},
                                                    0.1)) for i in range(3)]
    [t.start() for t in gone]
    [t.join(120) for t in busy + gone]
    time.sleep(1.0)  # anything of the abandoned requests still queued would render by now
    rendered = health(server)["rendered"] - before
    assert 24 <= rendered <= 24 + 8, f"{rendered - 24} images of abandoned requests rendered"
    for i in range(4):  # the batcher is not stuck
        status, _, body = post(server, {"prompt": f"after {i}", "seed": i}, timeout=30)
        assert status == 200, body


def test_feedback_endpoint_stores_what_feedback_add_would(server, feedback_db):
    from pahi_rt.feedback.store import read_feedback

    status, _, body = post(server, {"prompt": PROMPT, "n": 2, "seed": 40})
    a, b = (d["id"] for d in body["data"])
    assert status == 200 and a != b and a.startswith("img_")
    st, label = raw_post(server, "/v1/images/feedback", json.dumps(
        {"id": a, "label": "good"}).encode())
    assert st == 200, label
    st, pair = raw_post(server, "/v1/images/feedback", json.dumps(
        {"winner": b, "loser": a}).encode())
    assert st == 200, pair
    assert pair["record"]["seed_win"] == 41 and pair["record"]["seed_lose"] == 40
    records = read_feedback(feedback_db)
    assert records[-2].to_json() == label["record"] and records[-1].seeds == (41, 40)
    src = records[-1].source
    assert (src.model, src.size, src.steps, src.noise) == ("tiny", "64x64", 1, "gaussian")
    assert src.model_key  # training checks the model by content
    for bad, param in (({"id": "img_nope", "label": "good"}, "id"),
                       ({"id": a, "label": "meh"}, "label"),
                       ({"winner": a, "loser": "img_nope"}, "loser")):
        st, err = raw_post(server, "/v1/images/feedback", json.dumps(bad).encode())
        assert st in (400, 404) and err["error"]["param"] == param, err


def test_drain_time_default_is_the_longest_batch_plus_a_margin():
    from pahi_rt.serving.control import drain_bound

    assert drain_bound(None, 0.0) == 10.0 and drain_bound(None, 30.0) == 35.0
    assert drain_bound(2.0, 30.0) == 2.0  # --drain-timeout says so


def test_schema_rules_without_a_server():
    from pahi_rt.serving.schema import ApiError, ServeSettings, parse_request

    served = ServeSettings(model="tiny", height=64, width=64, more_sizes=((64, 128),))
    req = parse_request(b'{"prompt": " a  fox ", "size": "128x64", "n": null}', served)
    assert (req.prompt, req.height, req.width, req.n) == ("a fox", 64, 128, 1)
    assert req.timeout_s == served.request_timeout_s
    with pytest.raises(ApiError) as e:
        parse_request(json.dumps({"prompt": "\udfff"}).encode(), served)
    assert e.value.param == "prompt" and e.value.status == 400
    assert "secret" not in repr(ServeSettings(api_keys=("secret",)))


def test_failed_model_calls_are_openai_errors():
    """What the ingress answers when its call to the model deployment fails (no server): a
    dead replica or backpressure is a 503 in the OpenAI shape, a render error a 500 naming
    it; never a traceback."""
    from ray.exceptions import ActorDiedError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    from pahi_rt.serving.http import upstream_error

    try:
        raise ValueError("boom")
    except ValueError as e:
        raised = RayTaskError("generate", "traceback", e).as_instanceof_cause()
    for exc, status, code in ((ActorDiedError(), 503, "model_unavailable"),
                              (BackPressureError(9, 8), 503, "overloaded"),
                              (raised, 500, None)):
        err = upstream_error(exc)
        body = err.body()["error"]
        assert (err.status, body["code"], body["type"]) == (status, code, "server_error"), body
        assert "traceback" not in body["message"].lower()
    assert upstream_error(raised).message == "internal error: ValueError"
