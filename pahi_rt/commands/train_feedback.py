"""The feedback half of `pahi-rt train` (--objective kto|dpo): records -> text encoder only ->
the shared training loop. Model, size and sampler steps come from the records; options may
restate them but not contradict them."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def run_feedback_training(settings: dict, feedback: Path | None, init: Path | None,
                          beta: float | None, good_weight: float | None,
                          bad_weight: float | None, model: str | None, decoder: str | None,
                          hidden: int | None, height: int | None, width: int | None,
                          device: str, dtype: str, out: Path, resume: bool) -> None:
    """Read, select and check the records, load the text encoder, train into `out`."""
    from .. import io
    from ..components import load_text_components
    from ..noise.checkpoint import read_head_config
    from ..noise.feedback import DEFAULT_BETA, FeedbackConfig, train_from_feedback
    from ..noise.feedback_store import read_feedback
    from ..noise.records import common_source, resolve_target, select_records
    from ..noise.train import TrainConfig, make_accelerator
    from .train_progress import Progress, report

    objective = settings["objective"]
    if feedback is None:
        raise InputError(f"--objective {objective} needs --feedback FILE (records from "
                         "`pahi-rt feedback add|pair`)")
    fb = FeedbackConfig(beta=DEFAULT_BETA if beta is None else beta, good_weight=good_weight,
                        bad_weight=bad_weight, init=str(init) if init else None)
    fb.check()
    where = str(feedback)
    records = select_records(read_feedback(feedback), objective, where)
    common = common_source(records, where)
    model, decoder, height, width = resolve_target(common, model, decoder, height, width, where)
    if init is not None and hidden is None:
        hidden = read_head_config(init)[0].hidden
    config = TrainConfig(**settings, hidden=144 if hidden is None else hidden, height=height,
                         width=width, sampler_steps=common.steps or 1)
    config.check()  # before --out is created
    io.ensure_writable_dir(out)
    with io.run_lock(out, "training run"):  # two runs into one --out would mix their files
        accelerator = make_accelerator(device, bf16=False)
        comps = load_text_components(model, dtype, str(accelerator.device))
        extra = {"model": model, "decoder": decoder, "model_key": common.model_key,
                 "feedback": where, "sampler_steps": config.sampler_steps}
        bar = Progress(config, accelerator.is_main_process)
        try:
            run = train_from_feedback(comps, records, config, fb, out, accelerator,
                                      resume=resume, on_event=bar.update, extra_info=extra)
        finally:
            bar.close()
    report(out, run, bar)
