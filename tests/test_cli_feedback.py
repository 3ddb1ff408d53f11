"""`pahi-rt feedback add|pair` on real PNGs from `pahi-rt generate`, then `pahi-rt train
--objective kto|dpo` from the file: round trip, refusals, all-or-nothing appends, no UNet."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from pahi_rt.cli import app
from test_cli import assert_one_line_error

runner = CliRunner()
TINY = ["--model", "tiny", "--height", "64", "--width", "64"]


@pytest.fixture(autouse=True)
def digest_cache(tmp_path, monkeypatch):
    """File digests of checkpoint dirs go to a temp file, not ~/.cache."""
    monkeypatch.setenv("PAHI_RT_DIGEST_CACHE", str(tmp_path / "digests.json"))


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """imgs/0000{0..3}.png: 'a red cat' seeds 10, 11; 'a blue dog' seeds 12, 13 (Gaussian),
    plus wide/00000.png (64x96) and a PNG without metadata."""
    root = tmp_path_factory.mktemp("pngs")
    (root / "p.txt").write_text("a red cat\na red cat\na blue dog\na blue dog\n")
    r = invoke("generate", "--prompts", root / "p.txt", *TINY, "--seed", 10, "--out",
               root / "imgs")
    assert r.exit_code == 0, r.output
    r = invoke("generate", "a red cat", "--model", "tiny", "--height", 64, "--width", 96,
               "--out", root / "wide")
    assert r.exit_code == 0, r.output
    Image.new("RGB", (64, 64)).save(root / "plain.png")
    return root


def test_add_and_pair_round_trip(pngs, tmp_path):
    from pahi_rt.model_key import model_key

    f, imgs = tmp_path / "fb.jsonl", pngs / "imgs"
    assert invoke("feedback", "add", imgs / "00000.png", imgs / "00002.png", "--good",
                  "--to", f).exit_code == 0
    r = invoke("feedback", "add", imgs / "00001.png", imgs / "00003.png", "--bad", "--to", f)
    assert r.exit_code == 0 and "added 2 bad record(s)" in r.output, r.output
    r = invoke("feedback", "pair", imgs / "00000.png", imgs / "00001.png", "--to", f)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    assert [(x["prompt"], x.get("seed"), x.get("label")) for x in rows[:4]] == [
        ("a red cat", 10, "good"), ("a blue dog", 12, "good"), ("a red cat", 11, "bad"),
        ("a blue dog", 13, "bad")]
    assert rows[4]["seed_win"] == 10 and rows[4]["seed_lose"] == 11
    assert {x["model_key"] for x in rows} == {model_key("tiny")}
    assert {(x["size"], x["steps"], x["noise"], x["model"]) for x in rows} == \
        {("64x64", 1, "gaussian", "tiny")}
    # the same image again: a warning, nothing appended
    before = f.read_text()
    r = invoke("feedback", "add", imgs / "00000.png", "--good", "--to", f)
    assert r.exit_code == 0 and "already in the file" in r.output and f.read_text() == before


@pytest.mark.parametrize("args,message", [
    (["add", "plain.png", "--good"], "no pahi-rt metadata"),
    (["add", "imgs/00000.png", "plain.png", "--good"], "no pahi-rt metadata"),
    (["add", "missing.png", "--bad"], "no such file"),
    (["add", "wide/00000.png", "--bad"], "different sizes"),
    (["add", "imgs/00000.png"], "say --good or --bad"),
    (["pair", "imgs/00000.png", "imgs/00002.png"], "different prompts"),
    (["pair", "imgs/00000.png", "imgs/00000.png"], "same image"),
])
def test_refusals_append_nothing(pngs, tmp_path, args, message):
    f = tmp_path / "fb.jsonl"
    assert invoke("feedback", "add", pngs / "imgs/00001.png", "--bad", "--to", f).exit_code == 0
    before = f.read_text()
    argv = [pngs / a if a.endswith(".png") else a for a in args]
    assert_one_line_error(invoke("feedback", *argv, "--to", f), message)
    assert f.read_text() == before


def test_other_model_refused(pngs, tmp_path, tiny_checkpoint):
    model_dir, decoder_dir = tiny_checkpoint
    r = invoke("generate", "a red cat", "--model", model_dir, "--decoder", decoder_dir,
               "--height", 64, "--width", 64, "--out", tmp_path / "other")
    assert r.exit_code == 0, r.output
    f = tmp_path / "fb.jsonl"
    assert invoke("feedback", "add", pngs / "imgs/00000.png", "--good", "--to", f).exit_code == 0
    r = invoke("feedback", "add", tmp_path / "other/00000.png", "--bad", "--to", f)
    assert_one_line_error(r, "different model keys")
    assert len(f.read_text().splitlines()) == 1


def test_corrupt_file_is_not_appended_to(pngs, tmp_path):
    f = tmp_path / "fb.jsonl"
    f.write_text('{"prompt": "a", "seed": 1, "label": "good"}\n{"prompt": "a", "se')
    r = invoke("feedback", "add", pngs / "imgs/00000.png", "--good", "--to", f)
    assert_one_line_error(r, "line 2: not JSON")
    assert f.read_text().endswith('"se')


def forbid_unet(monkeypatch) -> None:
    """From here on, building, loading or running a UNet or decoder fails the test."""
    from diffusers import AutoencoderTiny, UNet2DConditionModel

    def boom(*args, **kwargs):
        raise AssertionError("feedback training touched the UNet or decoder")
    for cls in (UNet2DConditionModel, AutoencoderTiny):
        monkeypatch.setattr(cls, "__init__", boom)
        monkeypatch.setattr(cls, "forward", boom)
        monkeypatch.setattr(cls, "from_pretrained", boom)


@pytest.fixture()
def labelled(pngs, tmp_path):
    f, imgs = tmp_path / "fb.jsonl", pngs / "imgs"
    assert invoke("feedback", "add", imgs / "00000.png", imgs / "00002.png", "--good",
                  "--to", f).exit_code == 0
    assert invoke("feedback", "add", imgs / "00001.png", imgs / "00003.png", "--bad",
                  "--to", f).exit_code == 0
    assert invoke("feedback", "pair", imgs / "00000.png", imgs / "00001.png",
                  "--to", f).exit_code == 0
    assert invoke("feedback", "pair", imgs / "00003.png", imgs / "00002.png",
                  "--to", f).exit_code == 0
    return f


SHORT = ["--steps", 4, "--val-every", 2, "--batch-size", 4, "--hidden", 16]
DENSITY = ["--feedback-method", "density"]  # KTO/DPO on the head's density: no UNet


@pytest.mark.parametrize("mode,objective", [("pahi", "kto"), ("hi", "dpo")])
def test_train_from_feedback_without_unet(labelled, tmp_path, monkeypatch, mode, objective):
    forbid_unet(monkeypatch)
    out = tmp_path / "run"
    r = invoke("train", "--mode", mode, "--objective", objective, "--feedback", labelled,
               *SHORT, *DENSITY, "--out", out)
    assert "best step" in r.output
    meta = json.loads((out / "config.json").read_text())
    assert_outcome(r, meta["training"])
    assert meta["mode"] == mode and meta["latent_shape"] == [4, 8, 8]
    assert meta["training"]["objective"] == objective and meta["training"]["model"] == "tiny"
    assert meta["training"]["reference"] == "N(0, I)"
    assert [h["step"] for h in meta["training"]["history"]] == [0, 2, 4]
    assert (out / "train_state" / "reference.safetensors").is_file()
    r = invoke("train", "--mode", mode, "--objective", objective, "--feedback", labelled,
               "--steps", 6, *SHORT[2:], *DENSITY, "--out", out, "--resume")
    assert "at step 6" in r.output, r.output
    assert_outcome(r, json.loads((out / "config.json").read_text())["training"])


def assert_outcome(r, training: dict) -> None:
    """A run that improved on its start exits 0 with status done; one whose best head is the
    start says so: exit 2, a one-line error and status 'no improvement' (never 'done')."""
    if training["best_step"] > 0:
        assert r.exit_code == 0 and training["status"] == "done", r.output
    else:
        assert r.exit_code == 2 and training["status"] == "no improvement", r.output
        assert r.output.strip().splitlines()[-1].startswith("error: no improvement")


def test_train_bad_feedback(labelled, tmp_path):
    out = ["--out", tmp_path / "o", *SHORT]

    def fails(message, *args):
        assert_one_line_error(invoke("train", *args, *out), message)
        assert not (tmp_path / "o" / "config.json").exists()

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    fails("no feedback records", "--objective", "kto", "--feedback", empty)
    fails("needs --feedback FILE", "--objective", "dpo")
    fails("--objective must be one of", "--objective", "rlhf", "--feedback", labelled)
    same = tmp_path / "same.jsonl"
    same.write_text("".join(x + "\n" for x in labelled.read_text().splitlines()
                            if '"good"' in x))
    fails("all 2 labels are 'good'", "--objective", "kto", "--feedback", same)
    fails("records are 64x64 images, not 128x64", "--objective", "kto", "--feedback",
          labelled, "--width", 128)
    fails("--model synthetic has key", "--objective", "kto", "--feedback", labelled,
          "--model", "synthetic")
    fails("not used by --objective kto", "--objective", "kto", "--feedback", labelled,
          "--prompts", labelled)
    fails("--init, --beta: only used with --objective kto|dpo", "--prompts", labelled,
          "--init", tmp_path, "--beta", 1)
    fails(f"--init {tmp_path / 'nohead'}: not a head checkpoint", "--objective", "kto",
          "--feedback", labelled, "--init", tmp_path / "nohead")
    fails("--feedback-method must be one of reward, density", "--objective", "kto",
          "--feedback", labelled, "--feedback-method", "magic")
    # the default (reward model) method: 4 labels cannot show a preference; no head is written
    fails("no preference found in 4 feedback records", "--objective", "kto", "--feedback",
          labelled)


def test_head_made_images_and_init(pngs, tmp_path, monkeypatch):
    """Feedback on images a head made: x_T through that head; --init makes it the reference;
    a head changed after the feedback was given is refused."""
    from helpers import random_head
    from pahi_rt.heads.checkpoint import save_head

    head, f = tmp_path / "h", tmp_path / "fb.jsonl"
    save_head(random_head("hi", seed=2), head)
    r = invoke("generate", "--prompts", pngs / "p.txt", *TINY, "--noise", "hi", "--head", head,
               "--out", tmp_path / "imgs")
    assert r.exit_code == 0, r.output
    imgs = tmp_path / "imgs"
    assert invoke("feedback", "add", imgs / "00000.png", imgs / "00003.png", "--good",
                  "--to", f).exit_code == 0
    assert invoke("feedback", "add", imgs / "00001.png", imgs / "00002.png", "--bad",
                  "--to", f).exit_code == 0
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    assert {(x["noise"], x["head"]) for x in rows} == {("hi", str(head))}
    forbid_unet(monkeypatch)
    r = invoke("train", "--mode", "hi", "--objective", "kto", "--feedback", f, "--init", head,
               *SHORT, *DENSITY, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    assert meta["reference"] == str(head)
    save_head(random_head("hi", seed=3), head)  # retrained in place after the feedback
    r = invoke("train", "--mode", "hi", "--objective", "kto", "--feedback", f, *SHORT,
               *DENSITY, "--out", tmp_path / "run2")
    assert_one_line_error(r, "changed since the feedback was recorded")
    r = invoke("feedback", "add", imgs / "00000.png", "--bad", "--to", tmp_path / "new.jsonl")
    # the PNG records the head's content key (issue 24 item 4): a head retrained in place
    # between generate and feedback add is noticed, and nothing is written
    assert_one_line_error(r, "has changed since")
    assert "head_key" in json.loads(Image.open(imgs / "00000.png").text["pahi-rt"])
    assert not (tmp_path / "new.jsonl").exists()


def test_unwritable_feedback_file(pngs, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    r = invoke("feedback", "add", pngs / "imgs/00000.png", "--good", "--to",
               tmp_path / "file" / "fb.jsonl")
    assert_one_line_error(r, "cannot write there")
