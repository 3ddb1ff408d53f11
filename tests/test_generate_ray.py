"""`pahi-rt generate --prompts FILE --ray` on the session's local Ray (Ray Data actors): the same
files as the non-Ray run, index.jsonl with sha256, resume, and one-line errors."""
from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("ray.data")

SMALL = ["--model", "tiny", "--height", "64", "--width", "64", "--seed", "3"]


def run(*args):
    from pahi_rt.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def runs(local_ray, tmp_path_factory):
    """A prompt file rendered without and with Ray."""
    root = tmp_path_factory.mktemp("ray_generate")
    prompts = root / "p.txt"
    prompts.write_text("a red fox\n\na blue cat in a hat\nthe sea at night\n")
    for name, extra in (("plain", []), ("ray", ["--ray", "--replicas", "1"])):
        r = run("generate", "--prompts", str(prompts), *SMALL, *extra, "--out", str(root / name))
        assert r.exit_code == 0, r.output
    return root, prompts


def test_ray_files_equal_the_plain_run(runs):
    root, _ = runs
    for i in range(3):
        name = f"{i:05d}.png"
        assert (root / "ray" / name).read_bytes() == (root / "plain" / name).read_bytes()


def test_index_lists_prompt_seed_file_sha256(runs):
    root, _ = runs
    lines = [json.loads(x) for x in (root / "ray" / "index.jsonl").read_text().splitlines()]
    assert [(e["prompt"], e["seed"], e["file"]) for e in lines] == [
        ("a red fox", 3, "00000.png"), ("a blue cat in a hat", 4, "00001.png"),
        ("the sea at night", 5, "00002.png")]
    for e in lines:
        data = (root / "ray" / e["file"]).read_bytes()
        assert e["sha256"] == hashlib.sha256(data).hexdigest()


def test_rerun_skips_verified_and_rerenders_corrupted(runs):
    root, prompts = runs
    out = root / "ray"
    good = (out / "00001.png").read_bytes()
    (out / "00001.png").write_bytes(good[:-20])  # truncated: its sha256 no longer verifies
    before = (out / "00000.png").stat().st_mtime_ns
    r = run("generate", "--prompts", str(prompts), *SMALL, "--ray", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "2 of 3 images already done" in r.output
    assert (out / "00001.png").read_bytes() == good
    assert (out / "00000.png").stat().st_mtime_ns == before  # not rewritten
    r = run("generate", "--prompts", str(prompts), *SMALL, "--ray", "--out", str(out))
    assert "3 of 3 images already done" in r.output and r.exit_code == 0


def test_ray_refuses_unknown_files_and_bad_options(runs, tmp_path):
    root, prompts = runs
    (tmp_path / "00000.png").write_bytes(b"mine")
    r = run("generate", "--prompts", str(prompts), *SMALL, "--ray", "--out", str(tmp_path))
    assert r.exit_code == 2 and "not in index.jsonl" in r.output
    assert (tmp_path / "00000.png").read_bytes() == b"mine"
    for args, words in ((["x", "--ray"], "--prompts FILE"),
                        (["--prompts", str(prompts), "--replicas", "2"], "used with --ray")):
        r = run("generate", *args, *SMALL, "--out", str(tmp_path / "o"))
        assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output


def test_ray_refuses_test_time_options(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n")
    r = run("generate", "--prompts", str(tmp_path / "p.txt"), *SMALL, "--ray", "--best-of", "2",
            "--scorer", "synthetic_scorers:colour_by_word", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "not used with --ray" in r.output, r.output


# --- concurrent runs into one directory, resume, and Ray's noise (issues 19 and 20) ----------
def test_a_second_run_into_a_locked_directory_is_refused(runs):
    from pahi_rt.serving.ledger import run_lock

    root, prompts = runs
    out = root / "ray"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with run_lock(out):  # what a run in progress holds
        r = run("generate", "--prompts", str(prompts), *SMALL, "--seed", "50", "--ray",
                "--out", str(out))
    assert r.exit_code == 2 and "another `generate --ray` run is writing there" in r.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_other_seeds_into_the_same_directory_replace_nothing(runs):
    root, prompts = runs
    out = root / "ray"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = run("generate", "--prompts", str(prompts), *SMALL, "--seed", "50", "--ray",
            "--out", str(out))
    assert r.exit_code == 2 and "holds another image (seed 3" in r.output, r.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_shorter_rerun_keeps_every_index_entry(runs, tmp_path):
    root, _ = runs
    out = root / "ray"
    short = tmp_path / "short.txt"
    short.write_text("a red fox\na blue cat in a hat\n")  # the first two images only
    r = run("generate", "--prompts", str(short), *SMALL, "--ray", "--out", str(out))
    assert r.exit_code == 0 and "2 of 2 images already done" in r.output, r.output
    files = [json.loads(x)["file"] for x in (out / "index.jsonl").read_text().splitlines()]
    assert files == ["00000.png", "00001.png", "00002.png"]


def test_ray_matches_a_plain_run_with_two_threads(local_ray, tmp_path):
    """The actors run the plain run's thread count: at 128x128 the tiny model's pixels differ
    by one level between 1 and 2 threads, so this fails if the actors keep Ray's 1 thread.
    Ray's own console lines (execution plans, warnings) stay out of the output."""
    import torch

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\nthe sea at night\n")
    size = ["--model", "tiny", "--height", "128", "--width", "128"]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for name, extra in (("plain", []), ("ray", ["--ray"])):
            r = run("generate", "--prompts", str(prompts), *size, *extra, "--out",
                    str(tmp_path / name))
            assert r.exit_code == 0, r.output
    finally:
        torch.set_num_threads(threads)
    for i in range(2):
        name = f"{i:05d}.png"
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert "[2/2] " in r.output  # the plain run's progress lines
    assert not any(w in r.output for w in ("INFO", "WARNING", "core_worker", "Dataset")), r.output


@pytest.mark.parametrize("address,words", [("127.0.0.1:18201", "Connection refused"),
                                           ("no-such-host.invalid:6379", "")])
def test_unreachable_cluster_is_an_error_not_a_wait(address, words):
    """Ray retries an unreachable GCS for minutes; the address is tried first (3 s)."""
    from pahi_rt.errors import BackendError
    from pahi_rt.serving.cluster import check_address

    with pytest.raises(BackendError, match=f"cannot reach the Ray cluster at {address}"):
        check_address(address)


def test_an_actor_failure_names_its_cause(local_ray, tmp_path, pahi_head):
    """What only an actor finds (weights that do not load) comes back as one line with the
    real cause, not Ray's retries and tracebacks."""
    from pahi_rt.heads.checkpoint import save_head

    head = tmp_path / "head"
    save_head(pahi_head, head)
    (head / "head.safetensors").write_bytes(b"\x00" * 100)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\n")
    r = run("generate", "--prompts", str(prompts), *SMALL, "--noise", "pahi", "--head",
            str(head), "--ray", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    error = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert len(error) == 1 and "the Ray run failed after 0 images: ModelLoadError: --head" in \
        error[0] and "weights do not load" in error[0], r.output


def test_ray_on_tiny_xl_equals_the_plain_run(local_ray, tmp_path):
    """SDXL (two tokenizers, Euler-ancestral at 2 steps) through the Ray Data actors: the same
    PNG bytes as the plain run."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\nthe sea at night\n")
    xl = ["--model", "tiny-xl", "--height", "64", "--width", "64", "--seed", "3", "--steps", "2"]
    for name, extra in (("plain", []), ("ray", ["--ray", "--replicas", "1"])):
        r = run("generate", "--prompts", str(prompts), *xl, *extra, "--out", str(tmp_path / name))
        assert r.exit_code == 0, r.output
    for i in range(2):
        name = f"{i:05d}.png"
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
