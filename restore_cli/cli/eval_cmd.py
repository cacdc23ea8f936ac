"""`restore eval`: Benchmark protocols of the field (denoise, usrnet-table1, bicubic-sr, deblur, toolchain, jpeg, sfm-sweep). Not built yet (issue #5)."""

from __future__ import annotations

import typer

from restore_cli.cli.common import not_available


def register(app: typer.Typer) -> None:
    app.command(
        "eval",
        help="Benchmark protocols of the field (denoise, usrnet-table1, bicubic-sr, deblur, toolchain, jpeg, sfm-sweep). [bold]Not available yet[/bold] (issue #5).",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_stub)


def _stub(ctx: typer.Context) -> None:
    raise not_available("eval", "issue #5")
