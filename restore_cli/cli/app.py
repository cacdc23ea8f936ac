"""The Typer app: one module per subcommand, registered here."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from restore_cli import __version__
from restore_cli.cli.common import EXIT_INTERRUPTED, EXIT_USAGE
from restore_cli.errors import RestoreError


class RestoreGroup(TyperGroup):
    """Turns a user error raised anywhere below into one stderr line and exit code 2."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except RestoreError as exc:
            print(f"restore: error: {exc}", file=sys.stderr)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print("restore: interrupted", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="restore",
    cls=RestoreGroup,
    help="Image restoration from the command line: non-blind super-resolution and deblurring "
    "(USRNet), denoising, mixed-distortion toolchains, and the training and evaluation behind them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"restore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Image restoration from the command line."""


def _register() -> None:
    from restore_cli.cli import degrade, denoise, eval_cmd, models, sfm_mask, sr, toolchain, train

    degrade.register(app)
    sfm_mask.register(app)
    sr.register(app)
    denoise.register(app)
    toolchain.register(app)
    eval_cmd.register(app)
    app.add_typer(train.train_app, name="train")
    app.add_typer(models.models_app, name="models")


_register()


def main() -> None:
    app()
