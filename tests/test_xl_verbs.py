"""SDXL through the torch verbs on `tiny-xl`: generate (backend), HI/PAHI training that beats
Gaussian on the synthetic scorers, evaluation, test-time search, and heads that refuse a model
whose conditioning differs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from synthetic_scorers import colour_prompts
from pahi_rt import sampling
from pahi_rt.errors import InputError
from pahi_rt.evaluation import evaluate
from pahi_rt.heads.checkpoint import load_head, save_head
from pahi_rt.scorers.scorer_set import ScorerSet
from pahi_rt.training.train_with_scorers import TrainConfig, make_accelerator, train


def small_config(**kw) -> TrainConfig:
    base = dict(steps=40, batch_size=8, val_every=20, patience=0, pretrain_steps=40, hidden=32,
                height=64, width=64)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def xl_pahi_head(tiny_xl_components, tmp_path_factory):
    """A PAHI head trained on tiny-xl against colour_by_word (seconds)."""
    scorers = ScorerSet.load(["synthetic_scorers:colour_by_word"])
    train_prompts, held_out = colour_prompts()
    out = tmp_path_factory.mktemp("xl") / "pahi"
    train(tiny_xl_components, scorers, train_prompts, held_out[:8],
          small_config(mode="pahi", lr=1e-2), out, make_accelerator("cpu", None))
    return out


@pytest.mark.parametrize("mode", ["pahi", "hi"])
def test_xl_head_beats_gaussian_on_held_out_prompts(tiny_xl_components, xl_pahi_head, tmp_path,
                                                    mode):
    comps = tiny_xl_components
    factory = "colour_by_word" if mode == "pahi" else "fixed_colour"
    scorers = ScorerSet.load([f"synthetic_scorers:{factory}"])
    train_prompts, held_out = colour_prompts()
    directory = xl_pahi_head
    if mode == "hi":
        directory = tmp_path / "hi"
        train(comps, scorers, train_prompts, held_out[:8], small_config(mode="hi", lr=1e-2,
                                                                        steps=25),
              directory, make_accelerator("cpu", None))
    head = load_head(directory, comps.spec, 64, 64, expect_mode=mode)
    assert head.config.architecture == "sdxl" and head.config.text_dim == comps.spec.text_dim
    result = evaluate(head, comps, scorers, held_out, seeds=2, batch_size=16, height=64,
                      width=64, two_step=False)
    rate = sum(result.win_rate[scorers.labels[0]]) / 2
    assert rate > 0.75, result.summary()


def test_xl_torch_pipeline_matches_the_reference(tiny_xl_components, xl_pahi_head):
    """`pahi-rt generate --backend torch` on tiny-xl: the pipeline (ids [B, 2, 77], ancestral
    noise from the seeds) renders what `sampling.generate` renders, with and without a head."""
    from pahi_rt.runtime.pipeline import LoadedModel, PipelineConfig, open_pipeline
    from pahi_rt.runtime.prompt_cache import PromptCache
    from pahi_rt.specs import parse_mode

    comps = tiny_xl_components
    head = load_head(xl_pahi_head, comps.spec, 64, 64)
    model = LoadedModel(comps, {"pahi": head}, torch.device("cpu"), str(xl_pahi_head))
    prompts, seeds = ["a red cube", "a blue ball"], [3, 4]
    for noise in ("gaussian", "pahi"):
        pipe = open_pipeline(model, PipelineConfig(backend="torch", mode=parse_mode(noise, 2),
                                                   batch=2, height=64, width=64))
        ids, _ = pipe.inputs(prompts, seeds)
        assert ids.shape == (2, 2, 77)
        ours = pipe(prompts, seeds)
        ref = sampling.generate(comps, prompts, seeds, steps=2, height=64, width=64,
                                noise_source=sampling.gaussian if noise == "gaussian" else head)
        assert np.array_equal(ours, ref.numpy()), noise
        pipe.prompt_cache = PromptCache()  # conditioning cached per prompt: the same images
        for _ in range(2):
            assert np.array_equal(pipe(prompts, seeds), ours), noise


@pytest.mark.parametrize("steps", [1, 2])
def test_xl_test_time_best_of_and_refine(tiny_xl_components, xl_pahi_head, steps):
    from pahi_rt.test_time import search as tt
    from pahi_rt.test_time.options import RefineConfig

    comps = tiny_xl_components
    scorers = ScorerSet.load(["synthetic_scorers:colour_by_word"])
    schedule = sampling.Schedule.from_spec(comps.spec.scheduler, steps)
    head = load_head(xl_pahi_head, comps.spec, 64, 64)
    render = tt.torch_render(comps, head, schedule, (4, 8, 8))
    prompts, seeds = ["a red cube", "a blue ball"], [0, 1]
    # the torch render is the pipeline's image (ancestral noise from the seeds at 2 steps)
    ref = sampling.generate(comps, prompts, seeds, steps=steps, height=64, width=64,
                            noise_source=head).numpy()
    assert np.array_equal(render(prompts, seeds), ref)
    four = tt.best_of(render, scorers, prompts, seeds, 4)
    assert all(max(s) >= s[0] for s in four.scores)
    eps = sampling.draw_eps(seeds, (4, 8, 8))
    refined = tt.refine(comps, head, scorers, prompts, eps, RefineConfig(steps=3), schedule)
    assert max(refined.best_scores) >= max(refined.start_scores)


def test_head_refuses_a_model_whose_conditioning_differs(tiny_components, tiny_xl_components,
                                                         xl_pahi_head, tmp_path):
    with pytest.raises(InputError, match=r"trained on tiny-xl \(sdxl\); --model tiny is sd2"):
        load_head(xl_pahi_head, tiny_components.spec, 64, 64)
    from helpers import random_head

    sd_head = tmp_path / "sd"
    save_head(random_head("hi"), sd_head)  # base_model tiny, architecture sd2
    with pytest.raises(InputError, match=r"trained on tiny \(sd2\); --model tiny-xl is sdxl"):
        load_head(sd_head, tiny_xl_components.spec, 64, 64)


def test_head_on_a_compatible_other_model_warns_naming_both(tiny_xl_components, xl_pahi_head):
    from dataclasses import replace

    other = replace(tiny_xl_components.spec, name="my-xl-finetune")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_head(xl_pahi_head, other, 64, 64)
    text = " ".join(str(w.message) for w in caught)
    assert "trained on tiny-xl, used here with my-xl-finetune" in text


def test_xl_pahi_learns_from_feedback(tmp_path):
    """The feedback objective (KTO on labels) on tiny-xl's text encoders: as on tiny, a PAHI
    head learns a prompt-dependent answer that carries to an unseen object."""
    from test_feedback_train import config, label_records, train as train_feedback

    from pahi_rt.components import load_text_components
    from pahi_rt.render import text_embeddings

    comps = load_text_components("tiny-xl")
    assert comps.unet is None and comps.text_encoder_2 is not None
    run = train_feedback(comps, label_records(1200, True), tmp_path / "p",
                         config(mode="pahi", objective="kto", lr=1e-3, steps=80))
    assert max(h["val_accuracy"] for h in run.history) > 0.65, run.history
    head = load_head(tmp_path / "p", comps.spec, 64, 64, expect_mode="pahi")
    mu, _ = head.distribution(text_embeddings(comps, ["a red lamp", "a blue lamp"]))
    assert mu[0, 0].mean() > mu[1, 0].mean() + 0.02, mu[:, 0].mean((1, 2))


def test_cli_generate_on_tiny_xl_records_the_sampler(tmp_path):
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from pahi_rt.cli import app
    from test_cli import assert_one_line_error

    small = ["--model", "tiny-xl", "--height", "64", "--width", "64", "--device", "cpu"]
    r = CliRunner().invoke(app, ["generate", "a red fox", *small, "--steps", "2", "--seed", "3",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    im = Image.open(tmp_path / "00000.png")
    assert json.loads(im.text["pahi-rt"])["sampler"] == "Euler a"
    assert im.text["parameters"].startswith("a red fox\nSteps: 2, Sampler: Euler a, CFG scale: 0")
    r = CliRunner().invoke(app, ["generate", "a red fox", *small, "--backend", "openvino",
                                 "--out", str(tmp_path / "o")])
    assert_one_line_error(r, "does not run sdxl models yet")


@pytest.mark.parametrize("steps", [1, 2])
def test_drop_in_latents_on_a_stock_sdxl_pipeline(tiny_xl_components, xl_pahi_head, steps):
    """`initial_latents` with a StableDiffusionXLPipeline (Euler-ancestral): the stock pipeline
    given the head's latents (and, at 2 steps, the seed's generator after eps) renders
    pahi-rt's image."""
    import diffusers

    from pahi_rt.heads.drop_in import initial_latents

    comps = tiny_xl_components
    head = load_head(xl_pahi_head, comps.spec, 64, 64)
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=comps.decoder, text_encoder=comps.text_encoder, text_encoder_2=comps.text_encoder_2,
        tokenizer=comps.tokenizer, tokenizer_2=comps.tokenizer_2, unet=comps.unet,
        scheduler=diffusers.EulerAncestralDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            timestep_spacing="trailing"), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = initial_latents(head, ["a red cube"], [9], 64, 64, pipe=pipe)
    gen = torch.Generator("cpu").manual_seed(9)
    torch.randn((1, 4, 8, 8), generator=gen)  # the draw eps took
    out = pipe("a red cube", latents=latents, num_inference_steps=steps, guidance_scale=0.0,
               height=64, width=64, generator=gen, output_type="np").images
    ref = sampling.generate(comps, ["a red cube"], [9], steps=steps, height=64, width=64,
                            noise_source=head).numpy()
    assert np.abs((out * 255).round().astype(int) - ref.astype(int)).max() <= 1


def test_reward_path_re_renders_the_recorded_ancestral_image(tiny_xl_components):
    """Feedback with a reward model re-renders each record's image: at 2 Euler-ancestral steps
    the later noise comes from the record's seed too, so it is the image the user saw."""
    from pahi_rt.feedback.records import Record
    from pahi_rt.training import reward_model as rm
    from pahi_rt.training.train_from_feedback import FeedbackData
    from pahi_rt.training.train_from_reward import record_features

    comps = tiny_xl_components
    records = [Record("a red cube", (11,), True), Record("a blue ball", (12,), False)]
    data = FeedbackData(records, comps, (4, 8, 8), needs_text=True)
    feats = record_features(data, records, comps, 2)
    pixels = sampling.generate(comps, ["a red cube", "a blue ball"], [11, 12], steps=2,
                               height=64, width=64)
    seen = rm.image_features(pixels.permute(0, 3, 1, 2).float() / 255)
    assert torch.allclose(feats, seen, atol=2 / 255)
