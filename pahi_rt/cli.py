"""`pahi-rt`: the command-line entry point. Registers the verbs (pahi_rt.commands, which never
import this module) behind the one error boundary `commands.common.command`."""
from __future__ import annotations

import sys

import typer

from .threads import apply_thread_policy

apply_thread_policy()  # before anything loads torch: OpenMP reads its wait policy only then

from .commands import bench, evaluate, export, feedback, generate, serve, train  # noqa: E402
from .commands.common import command  # noqa: E402

app = typer.Typer(name="pahi-rt", rich_markup_mode="rich", no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Human-preferred one-step text-to-image: PAHI noise heads, ONNX/TensorRT "
                       "export, and benchmarks against one- and two-step baselines.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"pahi-rt {version('pahi-rt')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("pahi-rt (not installed: no version)")
        raise typer.Exit()


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", callback=_version,
                                            is_eager=True, help="Print the version and exit.")):
    """Human-preferred one-step text-to-image with PAHI noise heads."""


for name, fn in (("generate", generate.generate), ("train", train.train),
                 ("eval", evaluate.evaluate), ("export", export.export_cmd),
                 ("bench", bench.bench), ("serve", serve.serve)):
    app.command(name)(command(fn, keep_memory=name != "export"))
app.add_typer(feedback.feedback_app, name="feedback")  # feedback add | pair


def main():
    sys.exit(app())


if __name__ == "__main__":  # `python -m pahi_rt.cli` / `accelerate launch -m pahi_rt.cli`
    main()
