"""`pahi-rt serve` as a user runs it (one subprocess for the module: embedded Ray, a PAHI head,
an API key, the feedback store and the rating page): listening sockets, keys, a second server
on the port, the head taken up live under load, the rating page in headless Debian chromium,
and last a SIGTERM that drains. Plus the reaper that follows a kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray.serve")

KEY = "sk-test-7c1d0e55a9"
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
CHROMIUM = "/usr/bin/chromium"


class Server:
    def __init__(self, tmp: Path):
        from helpers import random_head

        from pahi_rt.heads.checkpoint import save_head

        self.head, self.db, self.port = tmp / "head", tmp / "feedback.db", free_port()
        save_head(random_head("pahi", seed=1), self.head)
        self.url = f"http://127.0.0.1:{self.port}"
        self.out, self.err = open(tmp / "stdout", "w+"), open(tmp / "stderr", "w+")
        cmd = [sys.executable, "-m", "pahi_rt.cli", "serve", "--model", "tiny", "--device",
               "cpu", "--sizes", "64x64,256x256", "--noise", "pahi", "--head", str(self.head),
               "--port", str(self.port), "--max-batch", "4", "--feedback-db", str(self.db),
               "--ui", "--drain-timeout", "60"]
        env = {**os.environ, "PAHI_RT_API_KEY": KEY}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, env=env)

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "serving http://" in Path(self.out.name).read_text():
                return
            time.sleep(0.5)
        raise AssertionError(f"serve did not start: {self.output()}")

    def output(self) -> str:
        return Path(self.out.name).read_text() + Path(self.err.name).read_text()

    def tree(self) -> list:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("serve-cli"))
    try:
        server.wait_ready()
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(30)


def call(server, path: str, body: dict | None = None, key: str | None = KEY,
         timeout: float = 60):
    """(status, headers, JSON body) of a GET (body None) or POST."""
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_every_listening_socket_is_loopback(cli_server):
    pids = {p.pid for p in cli_server.tree()}
    listening = [c for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert len(listening) >= 5  # GCS, raylet, agents, proxy, replica...
    exposed = [(c.laddr, psutil.Process(c.pid).name()) for c in listening
               if c.laddr.ip not in LOOPBACK]
    assert not exposed, exposed


def test_api_key_is_required_but_never_logged(cli_server):
    for key in (None, "wrong"):
        status, _, body = call(cli_server, "/v1/images/generations", {"prompt": "x"}, key=key)
        assert status == 401 and body["error"]["type"] == "authentication_error", body
    assert call(cli_server, "/healthz", key=None)[0] == 200
    status, headers, body = call(cli_server, "/v1/images/generations", {"prompt": "a fox"})
    assert status == 200 and headers["x-pahi-head-key"] != "none", body
    logs = [cli_server.output()]
    for proc in cli_server.tree():
        for f in proc.open_files():
            if f.path.endswith((".log", ".out", ".err")):
                logs.append(Path(f.path).read_text(errors="replace"))
    assert len(logs) > 3 and not any(KEY in text for text in logs)


def test_a_second_server_on_the_port_is_an_error(cli_server):
    r = subprocess.run([sys.executable, "-m", "pahi_rt.cli", "serve", "--model", "tiny",
                        "--port", str(cli_server.port)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "already in use" in r.stderr, r.stderr


def test_a_new_head_is_taken_up_live_with_no_failed_request(cli_server):
    from helpers import random_head

    from pahi_rt.heads.checkpoint import head_key, save_head

    old = head_key(cli_server.head)
    results, stop = [], threading.Event()

    def load(i):
        while not stop.is_set():
            results.append(call(cli_server, "/v1/images/generations",
                                {"prompt": f"swap {i}", "n": 2}))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    time.sleep(1)
    save_head(random_head("pahi", seed=2), cli_server.head)
    new = head_key(cli_server.head)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
            h.get("x-pahi-head-key") == new for _, h, _ in results[-6:]):
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    [t.join(60) for t in threads]
    keys = [h.get("x-pahi-head-key") for _, h, _ in results]
    assert {s for s, _, _ in results} == {200}, [b for s, _, b in results if s != 200][:2]
    assert old in keys and keys[-1] == new, keys
    from test_serve import image

    png = image(results[-1][2]["data"][0]["b64_json"])
    assert json.loads(png.text["pahi-rt"])["head_key"] == new


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_rating_page_in_headless_chromium(cli_server):
    sync_api = pytest.importorskip("playwright.sync_api")
    from pahi_rt.feedback.store import read_feedback

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(cli_server.url + "/")
        page.fill("#key", KEY)
        page.fill("#prompt", "a red fox in the snow")
        page.click("#generate")
        page.wait_for_selector("figure >> nth=3", timeout=60_000)
        figures = page.locator("figure")
        ids = [figures.nth(i).get_attribute("data-id") for i in range(4)]
        figures.nth(0).locator("button[title=good]").click()
        page.wait_for_function("document.getElementById('status').textContent == 'saved: good'")
        figures.nth(2).locator("button", has_text="best").click()
        page.wait_for_function("document.getElementById('status').textContent.startsWith("
                               "'saved: best')")
        browser.close()
    records = read_feedback(cli_server.db)
    labels, pairs = [r for r in records if not r.is_pair], [r for r in records if r.is_pair]
    assert labels[-1].label is True and labels[-1].prompt == "a red fox in the snow"
    assert len(pairs) >= 3 and {r.seeds[0] for r in pairs[-3:]} == {labels[-1].seeds[0] + 2}
    assert len(set(ids)) == 4 and labels[-1].source.head_key  # from the server's own record


def test_zz_sigterm_drains_accepted_requests_then_stops(cli_server):
    """Runs last: accepted requests finish (200), new ones get a 503 in the OpenAI shape, the
    process exits 0, and no Ray process outlives it for long."""
    tree, results = cli_server.tree(), []
    threads = [threading.Thread(target=lambda i=i: results.append(call(
        cli_server, "/v1/images/generations", {"prompt": f"drain {i}", "n": 8,
                                               "size": "256x256", "noise": "gaussian"},
        timeout=120))) for i in range(6)]
    [t.start() for t in threads]
    time.sleep(0.5)
    t0 = time.monotonic()
    cli_server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.6)  # the replicas see the drain state within 0.25 s
    late = call(cli_server, "/v1/images/generations", {"prompt": "late"}, timeout=30)
    [t.join(120) for t in threads]
    assert cli_server.proc.wait(90) == 0
    stop_s = time.monotonic() - t0
    assert [s for s, _, _ in results] == [200] * 6, [b for s, _, b in results if s != 200]
    assert late[0] == 503 and late[2]["error"]["code"] == "shutting_down", late
    deadline = time.monotonic() + 15
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree[1:]):
        assert time.monotonic() < deadline, [p.name() for p in tree if p.is_running()]
        time.sleep(0.2)
    text = cli_server.output()
    for noise in ("\x1b[", "graceful_shutdown", "Token authentication", "http_options"):
        assert noise not in text, text
    print(f"SIGTERM with 6 requests of 8 images in flight: stopped in {stop_s:.1f} s")


def test_reaper_kills_what_a_killed_process_leaves():
    """What follows a kill -9 of `serve`: the process tree it had (here a parent and a
    sleeping grandchild, as Ray's agents) is gone within seconds."""
    from pahi_rt.serving import reaper

    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', "
                               "'import time; time.sleep(120)']); time.sleep(120)"])
    deadline = time.monotonic() + 20
    while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = psutil.Process(parent.pid).children()[0]
    watcher = reaper.start(parent.pid)
    time.sleep(reaper.POLL_S * 2)  # one snapshot of the tree
    parent.kill()
    parent.wait()
    t0 = time.monotonic()
    assert watcher.wait(10) == 0
    child.wait(10)
    assert time.monotonic() - t0 < 5 and not child.is_running()
