"""`restore models`: list, verify and import weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from restore_cli.cli.common import examples_epilog, fail, stderr_console

models_app = typer.Typer(
    help="List, verify and import model weights (safetensors only; pickle is never loaded implicitly).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@models_app.command("list", epilog=examples_epilog("restore models list", "restore models list --json"))
def list_models(
    json_output: Annotated[bool, typer.Option("--json", help="Print the manifest entries as JSON on stdout.")] = False,
) -> None:
    """Show the installed models (from weights/manifest.json)."""
    from restore_cli.engine.weights import load_manifest, weights_dir

    entries = load_manifest()
    if json_output:
        print(json.dumps({name: e.to_json() for name, e in entries.items()}, indent=2))
        return
    table = Table(title=f"models in {weights_dir()}")
    for column in ("name", "task", "arch", "channels", "scales", "file", "sha256"):
        table.add_column(column)
    for name, e in sorted(entries.items()):
        table.add_row(name, e.task, e.arch, str(e.channels), ",".join(map(str, e.scales)), e.file, e.sha256[:12])
    stderr_console().print(table)


@models_app.command("verify", epilog=examples_epilog("restore models verify", "RESTORE_WEIGHTS_DIR=/data/weights restore models verify"))
def verify_models() -> None:
    """Check every weights file against the sha256 in the manifest."""
    from restore_cli.engine.weights import load_manifest, verify_entry
    from restore_cli.errors import RestoreError

    entries = load_manifest()
    bad = 0
    for name, entry in sorted(entries.items()):
        try:
            path = verify_entry(entry)
            print(f"ok      {name}  {path}")
        except RestoreError as exc:
            bad += 1
            print(f"FAILED  {name}  {exc}")
    if bad:
        raise fail(f"{bad} of {len(entries)} weights files failed verification", code=1)


@models_app.command(
    "import",
    epilog=examples_epilog(
        "restore models import usrnet_tiny.pth --arch usrnet-tiny -o usrnet_tiny.safetensors",
        "restore models import usrnet.pth --arch usrnet -o usrnet.safetensors",
    ),
)
def import_model(
    source: Annotated[Path, typer.Argument(help="A PyTorch state dict (.pth) in the reference layout.")],
    arch: Annotated[str, typer.Option("--arch", help="Architecture or preset, e.g. usrnet, usrnet-tiny.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The .safetensors file to write.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
) -> None:
    """Convert a PyTorch state dict to safetensors, loading it with weights_only (no code runs)."""
    from restore_cli.engine.registry import import_pickle
    from restore_cli.engine.weights import safetensors_bytes
    from restore_cli.io.atomic import atomic_write_bytes

    if output.suffix.lower() != ".safetensors":
        raise fail(f"{output}: the output must end in .safetensors")
    if output.exists() and not overwrite:
        raise fail(f"{output}: output exists (use --overwrite)")
    tensors, arch_name, config = import_pickle(source, arch)
    data = safetensors_bytes(tensors, metadata={"arch": arch_name, "config": json.dumps(config), "source": source.name})
    atomic_write_bytes(output, data)
    print(output)
