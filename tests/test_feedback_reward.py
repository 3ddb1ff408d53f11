"""Training from feedback through a fitted reward model (the default method): a simulated user's
labels of Gaussian images teach a head that beats Gaussian noise on held-out prompts; labels
with no preference in them stop the run without a head; the defaults scale with the records."""
from __future__ import annotations

import pytest
import torch

import synthetic_scorers as ss
from pahi_rt import sampling
from pahi_rt.training import reward_model as rm
from pahi_rt.training.train_from_feedback import FeedbackConfig, feedback_defaults
from pahi_rt.training.train_from_reward import NoPreferenceFound, train_feedback
from pahi_rt.training.loop import NO_IMPROVEMENT, RunState, final_status
from pahi_rt.render import images_from_noise, text_embeddings
from pahi_rt.feedback.records import Record, Source
from pahi_rt.training.train_with_scorers import TrainConfig, make_accelerator

SOURCE = Source(model="tiny", size="64x64", steps=1)
SEED0 = 5000  # record seeds; the win-rate check uses seeds 0.. (other noise)


def images(comps, prompts, noise):
    schedule = sampling.Schedule.from_spec(comps.spec.scheduler, 1)
    with torch.no_grad():
        return images_from_noise(comps, noise, text_embeddings(comps, prompts), schedule)


def simulated_labels(comps, task: str, prompts: list[str], n: int) -> list[Record]:
    """n KTO records: Gaussian images of `prompts` (seed SEED0 + k, prompt k mod P), the
    better-scoring half of each prompt's images good."""
    seeds = [SEED0 + k for k in range(n)]
    texts = [prompts[k % len(prompts)] for k in range(n)]
    scores = getattr(ss, task)()(images(comps, texts, sampling.draw_eps(seeds, (4, 8, 8))),
                                 texts)
    out = []
    for p in prompts:
        ks = sorted((k for k in range(n) if texts[k] == p), key=lambda k: -scores[k])
        out += [Record(p, (seeds[k],), i < len(ks) // 2, SOURCE) for i, k in enumerate(ks)]
    return out


def train(comps, records, mode, out, **kw):
    config = TrainConfig(mode=mode, objective="kto", height=64, width=64, pretrain_steps=0,
                         hidden=16, **{**feedback_defaults(len(records)), "steps": 20,
                                       "val_every": 10, **kw})
    return train_feedback(comps, records, config, FeedbackConfig(), out,
                          make_accelerator("cpu", False))


def win_rate(comps, head, task: str, prompts: list[str]) -> float:
    eps = sampling.draw_eps(range(2 * len(prompts)), (4, 8, 8))
    texts = prompts * 2
    with torch.no_grad():
        noise = head(eps, text_embeddings(comps, texts))
    score = getattr(ss, task)()
    a = score(images(comps, texts, eps), texts)
    b = score(images(comps, texts, noise), texts)
    return ((b > a).float() + 0.5 * (b == a).float()).mean().item()


@pytest.mark.parametrize("mode,task", [("hi", "warm"), ("pahi", "colour_by_word")])
def test_a_simulated_users_labels_beat_gaussian_on_held_out_prompts(tiny_components, tmp_path,
                                                                    mode, task):
    """PAHI: the liked colour is named in the prompt; held-out prompts name unseen objects."""
    from pahi_rt.heads.checkpoint import load_head

    train_prompts, held_out = (ss.colour_prompts() if task == "colour_by_word"
                               else ss.day_night_prompts())
    records = simulated_labels(tiny_components, task, train_prompts, 144)
    run = train(tiny_components, records, mode, tmp_path / "h")
    assert run.best_step > 0
    head = load_head(tmp_path / "h", tiny_components.spec, 64, 64)
    assert win_rate(tiny_components, head, task, held_out) >= 0.65  # Gaussian: 0.5


def test_labels_without_a_preference_write_no_head(tiny_components, tmp_path):
    records = simulated_labels(tiny_components, "warm", ss.day_night_prompts()[0], 96)
    coin = torch.Generator().manual_seed(0)
    noise = [Record(r.prompt, r.seeds, bool(torch.rand((), generator=coin) < 0.5), SOURCE)
             for r in records]
    with pytest.raises(NoPreferenceFound, match="no preference found in 96 feedback records"):
        train(tiny_components, noise, "hi", tmp_path / "h")
    assert not (tmp_path / "h" / "config.json").exists()


def test_a_run_that_never_beats_its_start_is_not_done():
    assert final_status(RunState(step=40, best_step=0, history=[])) == NO_IMPROVEMENT
    assert final_status(RunState(step=40, best_step=20, history=[])) == "done"


def test_defaults_scale_with_the_records():
    small, large = feedback_defaults(30, "density"), feedback_defaults(10_000, "density")
    assert small["batch_size"] == 30 and large["batch_size"] == 72
    assert small["steps"] < large["steps"] <= 3000 and large["val_every"] < 1000
    assert feedback_defaults(30)["steps"] < 1000  # reward: scorer training's tiny recipe


def test_reward_model_recovers_a_prompt_dependent_preference():
    """Bilinear reward on features x text: the liked direction flips with the prompt (40
    prompts, 10 images each); cross-validation by prompt finds it on unseen prompts, and finds
    nothing in shuffled labels."""
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(400, 12, generator=g)
    prompt_text = torch.randn(40, 8, generator=g)
    groups = [i % 40 for i in range(400)]
    text = prompt_text[groups]
    label = ((feats[:, 0] - 0.5) * text[:, 0].sign() > 0).float()

    def make():
        model = rm.RewardModel(12, 8, prompt_dependent=True)
        model.fit_stats(feats, prompt_text)
        return model
    assert rm.cross_val_accuracy(make, feats, text, label, False, groups) > 0.65
    shuffled = label[torch.randperm(400, generator=g)]
    assert rm.cross_val_accuracy(make, feats, text, shuffled, False, groups) < 0.6
