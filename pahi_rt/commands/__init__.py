"""CLI verbs, one module each; `pahi_rt.cli` registers them on the Typer app (verbs never
import it)."""
