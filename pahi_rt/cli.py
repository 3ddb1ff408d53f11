"""`pahi-rt`: the command-line entry point. Only this layer prints and exits."""
from __future__ import annotations

import functools
import logging
import sys
import warnings

import typer

from .errors import PahiError
from .hostmem import keep_freed_memory
from .threads import apply_thread_policy

app = typer.Typer(name="pahi-rt", rich_markup_mode="rich", no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Human-preferred one-step text-to-image: PAHI noise heads, ONNX/TensorRT "
                       "export, and benchmarks against one- and two-step baselines.")


@app.callback()
def _root():
    """Human-preferred one-step text-to-image with PAHI noise heads."""


def fail(message: str, code: int = 2):
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    typer.secho(f"warning: {message}", fg="yellow", err=True)


def _quiet_libraries():
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    for name in ("huggingface_hub", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def command(fn):
    """Wrap a verb: one-line errors with exit code 2 for PahiError, quiet library logs."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        apply_thread_policy()  # before torch loads OpenMP: waiting threads sleep, not spin
        keep_freed_memory()  # CPU: no re-mapping of activation buffers on every call
        _quiet_libraries()
        warnings.showwarning = _show_warning
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            return fn(*args, **kwargs)
        except PahiError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
    return wrapper


def main():
    sys.exit(app())


# Verbs register themselves on `app`; imported last because they import `app` from here.
from .commands import bench, evaluate, export, generate, train  # noqa: E402,F401

if __name__ == "__main__":  # `python -m pahi_rt.cli` / `accelerate launch -m pahi_rt.cli`
    from pahi_rt.cli import main as _main  # the registered app lives in the package module

    _main()
