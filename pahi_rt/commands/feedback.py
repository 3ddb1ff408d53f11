"""`pahi-rt feedback add|pair`: thumbs-up/down and pairwise picks on pahi-rt PNGs, appended to
a JSONL file for `pahi-rt train --objective kto|dpo`; `feedback export`: a serve feedback store
(SQLite) as that JSONL."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from .common import command

feedback_app = typer.Typer(no_args_is_help=True, help="Record feedback on generated images "
                           "(JSONL) to train a head with --objective kto|dpo.")
TO_HELP = "Feedback file (JSON lines), created if missing; one command appends all or nothing."


@feedback_app.command("add")
@command
def add(
    images: List[Path] = typer.Argument(..., help="PNGs written by `pahi-rt generate`."),
    good: Optional[bool] = typer.Option(None, "--good/--bad", help="Thumbs up or down."),
    to: Path = typer.Option(Path("feedback.jsonl"), help=TO_HELP),
):
    """Label images good or bad (for --objective kto)."""
    from ..feedback.collect import append_records, label_records

    if good is None:
        raise InputError("say --good or --bad")
    written = append_records(to, label_records(images, good))
    typer.echo(f"{to}: added {len(written)} {'good' if good else 'bad'} record(s)")


@feedback_app.command("pair")
@command
def pair(
    winner: Path = typer.Argument(..., help="The preferred image."),
    loser: Path = typer.Argument(..., help="The other image (same prompt, another seed)."),
    to: Path = typer.Option(Path("feedback.jsonl"), help=TO_HELP),
):
    """Record that WINNER is preferred to LOSER (for --objective dpo)."""
    from ..feedback.collect import append_records, pair_record

    written = append_records(to, [pair_record(winner, loser)])
    typer.echo(f"{to}: added {len(written)} pair record(s)")


@feedback_app.command("export")
@command
def export(
    store: Path = typer.Argument(..., help="The feedback store of `pahi-rt serve "
                                 "--feedback-db` (SQLite)."),
    to: Path = typer.Option(Path("feedback.jsonl"), help="JSONL file written (replaced "
                            "atomically)."),
):
    """Write a serve feedback store's records as JSON lines (what `feedback add|pair` write)."""
    import json

    from .. import io
    from ..feedback.store import FeedbackStore

    records = FeedbackStore(store, create=False).records()
    io.atomic_write_text(to, "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n"
                                     for r in records))
    typer.echo(f"{to}: wrote {len(records)} record(s) from {store}")
