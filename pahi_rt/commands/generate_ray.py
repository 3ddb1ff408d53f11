"""`pahi-rt generate --prompts FILE --ray`: the prompt file rendered on Ray Data actors
(`pahi_rt.serving.offline`), written as OUT/{i:05d}.png plus OUT/index.jsonl; re-runs resume."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ..errors import BackendError, InputError, PahiError
from .common import echo_err
from .options import GenerateOptions, absolute_path


def generate_ray(o: GenerateOptions) -> None:
    """Render the checked options' texts with image i from seed + i, skipping verified
    images."""
    from .. import io
    from ..serving.ledger import Job, Ledger, plan, run_lock

    out, replicas, gpus_per_replica = o.out, o.replicas, o.gpus_per_replica
    if not o.ray:
        raise InputError("--address, --replicas and --gpus-per-replica are used with --ray")
    if o.prompts is None:
        raise InputError("--ray renders a prompt file: give --prompts FILE")
    if Path(out).suffix.lower() == ".png":
        raise InputError("--ray writes a directory of images; give --out DIR")
    if replicas < 1 or gpus_per_replica < 0:
        raise InputError("--replicas must be at least 1 and --gpus-per-replica not negative")
    directory = io.ensure_writable_dir(out)
    jobs = [Job(i, p.text, o.seed + i, p.line, directory / f"{i:05d}.png")
            for i, p in enumerate(o.texts)]
    head_label = str(o.head) if o.head else None
    expect = {"model": o.model, "steps": str(o.steps), "noise": o.noise,
              "size": f"{o.width}x{o.height}", "head": head_label or "none"}
    with run_lock(directory):
        todo, known = plan(jobs, directory, expect, o.overwrite)
        echo_err(f"{len(jobs) - len(todo)} of {len(jobs)} images already done (sha256 "
                 f"verified); rendering {len(todo)} on Ray with {replicas} actor(s)")
        if todo:
            _render(todo, known, directory, o, head_label)
        else:
            Ledger(directory, known).close()


def _render(todo, known, directory, o: GenerateOptions, head_label) -> None:
    from ..serving import cluster
    from ..serving.schema import ServeSettings

    replaceable = {j.path.name for j in todo if j.path.exists() or j.path.is_symlink()}

    settings = ServeSettings(
        model=absolute_path(o.model), decoder=absolute_path(o.decoder),
        head=absolute_path(o.head), noise=o.noise, backend=o.backend,
        artifacts=absolute_path(o.artifacts), precision=o.precision, height=o.height,
        width=o.width, steps=o.steps, device=o.device, max_batch=1)
    if not (o.address or os.environ.get("RAY_ADDRESS")):  # here, not after Ray's retries
        _precheck(settings)
    log = Path(tempfile.gettempdir()) / f"pahi-rt-ray-{os.getpid()}.log"
    try:
        with cluster.native_output_to(log) as say:  # Ray's own messages: a file
            _run(todo, known, directory, settings, o, head_label, replaceable, say)
    except PahiError as e:
        if log.is_file() and log.stat().st_size:
            raise type(e)(f"{e} (Ray's messages: {log})") from None
        log.unlink(missing_ok=True)
        raise
    log.unlink(missing_ok=True)


def _precheck(settings) -> None:
    """serve's checks of the model source, decoder and head (its config and kind): what an
    actor would fail on first, where Ray Data would retry it with pages of tracebacks."""
    from ..serving.launch import check_head, check_model

    check_model(settings)
    check_head(settings.noise, settings.head)


def _run(todo, known, directory, settings, o: GenerateOptions, head_label, replaceable,
         say) -> None:
    import torch

    from ..progress import ImageProgress
    from ..serving import cluster, offline
    from ..serving.ledger import Ledger

    how = cluster.connect(o.address)
    ledger = Ledger(directory, known)
    t0, count, bar = time.perf_counter(), 0, ImageProgress(todo)
    last = t0
    try:
        # actors run the plain run's torch thread count: same kernels, same reduction order,
        # so the PNGs are byte-identical to `generate` without --ray on this machine
        for job, png in offline.render_batches(todo, settings, o.model, head_label, o.replicas,
                                               o.gpus_per_replica,
                                               threads=torch.get_num_threads()):
            try:
                ledger.add(job, png, replace=job.path.name in replaceable)
            except OSError as e:
                raise InputError(f"writing {job.path} failed ({e.strerror or e}); {count} of "
                                 f"{len(todo)} images were written") from None
            count += 1
            now = time.perf_counter()
            say(bar.line(job.path, job.seed, now - last))
            last = now
    except PahiError:
        raise
    except Exception as e:  # an actor failed (its model did not load, ...): its last line
        lines = [x for x in str(e).splitlines() if x.strip()]
        cause = lines[-1] if lines else type(e).__name__
        raise BackendError(f"the Ray run failed after {count} images: "
                           f"{cause.removeprefix('pahi_rt.errors.')}") from None
    finally:
        ledger.close()
        cluster.disconnect(how)
    say(f"{count} images in {time.perf_counter() - t0:.1f} s; index: "
        f"{directory / 'index.jsonl'}")
