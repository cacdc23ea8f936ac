"""`restore toolchain`: Undo unknown mixed blur, noise and JPEG with a learned chain of small tools (RL-Restore). Not built yet (issue #6)."""

from __future__ import annotations

import typer

from restore_cli.cli.common import not_available


def register(app: typer.Typer) -> None:
    app.command(
        "toolchain",
        help="Undo unknown mixed blur, noise and JPEG with a learned chain of small tools (RL-Restore). [bold]Not available yet[/bold] (issue #6).",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_stub)


def _stub(ctx: typer.Context) -> None:
    raise not_available("toolchain", "issue #6")
