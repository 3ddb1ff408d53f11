"""What `generate` says while it works: status lines, one line per image, a sane ETA."""
from __future__ import annotations

from pahi_rt.progress import ImageProgress, describe_model
from test_cli import SMALL, run


def lines_for(times):
    bar = ImageProgress([f"p{i}" for i in range(len(times))])
    assert [i for i, _ in bar] == list(range(len(times)))
    return [bar.line(f"out/{i:05d}.png", i, t) for i, t in enumerate(times)]


def test_eta_ignores_the_warm_up_image():
    first, second, third, last = lines_for([60.0, 2.0, 4.0, 3.0])
    assert first.startswith("[1/4] out/00000.png  seed 0  60.00 s") and "warm-up" in first
    assert "eta" not in first
    assert second.endswith("eta 0:04")  # 2 images left at 2 s, not (60 + 2) / 2 s
    assert third.endswith("eta 0:03")  # mean of 2 s and 4 s, one image left
    assert last == "[4/4] out/00003.png  seed 3  3.00 s"


def test_one_image_is_one_plain_line():
    assert lines_for([1.234]) == ["out/00000.png  seed 0  1.23 s"]
    assert lines_for([0.0234]) == ["out/00000.png  seed 0  0.023 s"]  # ms resolution below 1 s


def test_hours_in_eta():
    assert lines_for([1.0, 4000.0, 1.0])[1].endswith("eta 1:06:40")


def test_describe_model():
    assert describe_model("synthetic") == "building the synthetic preset (random weights)"
    assert describe_model("some/hub-id") == "loading some/hub-id"


def test_generate_reports_stages_and_one_line_per_image(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\na bird\n")
    r = run("generate", "--prompts", str(prompts), *SMALL, "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    err = r.stderr.splitlines()
    assert err[0] == "building the tiny preset (random weights) ..."
    assert err[1].startswith("building the tiny preset (random weights): ")
    assert err[1].endswith("M parameters")
    images = [x for x in err if ".png" in x]
    assert [x[:5] for x in images] == ["[1/3]", "[2/3]", "[3/3]"]
    assert "eta" in images[1] and "\r" not in r.stderr and r.stdout == ""
