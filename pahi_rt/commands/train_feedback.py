"""The feedback half of `pahi-rt train` (--objective kto|dpo): records -> (reward: the whole
model; density: the text encoder only) -> the shared training loop. Model, size and sampler steps
come from the records; options may restate them but not contradict them. Steps, batch,
validation cadence and patience not given default to feedback.feedback_defaults(records)."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError, ModelLoadError
from .options import TrainOptions


def run_feedback_training(o: TrainOptions):
    """Read, select and check the records, load what the method needs, train into --out;
    (run, progress) for `train.report`."""
    from .. import io
    from ..heads.checkpoint import read_head_config
    from ..training.train_from_feedback import DEFAULT_BETA, FeedbackConfig, feedback_defaults
    from ..training.train_from_reward import train_feedback
    from ..feedback.store import read_feedback
    from ..feedback.records import common_source, resolve_target, select_records
    from ..training.train_with_scorers import TrainConfig, make_accelerator
    from ..progress import TrainProgress

    objective, feedback, init, hidden, out = o.objective, o.feedback, o.init, o.hidden, o.out
    if feedback is None:
        raise InputError(f"--objective {objective} needs --feedback FILE (records from "
                         "`pahi-rt feedback add|pair`)")
    fb = FeedbackConfig(beta=DEFAULT_BETA if o.beta is None else o.beta,
                        good_weight=o.good_weight, bad_weight=o.bad_weight,
                        init=str(init) if init else None, method=o.feedback_method)
    fb.check()
    where = str(feedback)
    records = select_records(read_feedback(feedback), objective, where)
    common = common_source(records, where)
    model, decoder, height, width = resolve_target(common, o.model, o.decoder, o.height, o.width,
                                                   where)
    if init is not None and hidden is None:
        hidden = as_init(lambda: read_head_config(init), init)[0].hidden
    defaults = feedback_defaults(len(records), o.feedback_method)
    settings = {k: defaults[k] if v is None and k in defaults else v
                for k, v in o.settings.items()}
    config = TrainConfig(**settings, hidden=144 if hidden is None else hidden, height=height,
                         width=width, sampler_steps=common.steps or 1)
    config.check()  # before --out is created
    io.ensure_writable_dir(out)
    with io.run_lock(out, "training run"):  # two runs into one --out would mix their files
        accelerator = make_accelerator(o.device, bf16=False)
        comps = _components(o.feedback_method, model, decoder, o.precision,
                            str(accelerator.device))
        extra = {"model": model, "decoder": decoder, "model_key": common.model_key,
                 "feedback": where, "sampler_steps": config.sampler_steps}
        bar = TrainProgress(config, accelerator.is_main_process)
        try:
            run = as_init(lambda: train_feedback(comps, records, config, fb, out, accelerator,
                                                 resume=o.resume, on_event=bar.update,
                                                 extra_info=extra), init)
        finally:
            bar.close()
    return run, bar


def _components(method: str, model: str, decoder: str | None, dtype: str, device: str):
    """reward: the whole model (it renders the labelled images); density: the text encoder."""
    from ..components import load_components, load_text_components, random_decoder_label

    if method == "reward":  # a preset's own random decoder is recorded by its label
        own = decoder == random_decoder_label(model)
        return load_components(model, None if own else decoder, dtype, device)
    return load_text_components(model, dtype, device)


def as_init(call, init: Path | None):
    """call(), with a head error about the --init head naming --init (not --head)."""
    try:
        return call()
    except (InputError, ModelLoadError) as e:
        if init is None or f"--head {init}" not in str(e):
            raise
        raise type(e)(str(e).replace(f"--head {init}", f"--init {init}")) from None
