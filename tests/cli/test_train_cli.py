"""`restore train …` end to end through the Typer app, and the CLI's option parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from restore_cli.cli.train import train_app
from restore_cli.cli.train_options import parse_arch_config, parse_duration, parse_noise_range
from restore_cli.errors import RestoreError

TINY = ["--arch-config", "nc=8,16,16,16", "--arch-config", "nb=1", "--patch", "16", "--batch", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one intra-op thread, and stay fast when the machine is busy
    (two OpenMP threads on a loaded 2-core machine were measured 10× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def restore_app():
    try:
        from restore_cli.cli.app import app
    except Exception as exc:  # the root app imports every subcommand
        pytest.skip(f"restore_cli.cli.app is not importable yet: {exc}")
    return app


def write_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_help_groups_options_and_ends_with_examples() -> None:
    runner = CliRunner()
    for command in ("denoiser", "usrnet", "export"):
        result = runner.invoke(train_app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        assert "Examples" in result.output and f"$ restore train {command}" in result.output
    text = runner.invoke(train_app, ["usrnet", "--help"], terminal_width=200).output
    for panel in ("Data", "Degradation", "Model", "Optimisation", "Checkpoints", "Device & precision", "Reporting"):
        assert panel in text
    assert "[default: 1,2,3,4]" in text and "--init,--init-prior" in text


def test_train_resume_and_export_from_the_command_line(tmp_path: Path) -> None:
    app = restore_app()
    data = write_data(tmp_path / "data")
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train", "denoiser", "--data", str(data), *TINY, "--milestones", "100", "--steps", "2", "-o", str(run), "--log-every", "1"]
    result = runner.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run / "ckpt-0000002")
    assert (run / "latest").read_text().strip() == "ckpt-0000002"

    resumed = runner.invoke(app, [*args[:-4], "--steps", "4", "-o", str(run), "--log-every", "1", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip().endswith("ckpt-0000004")
    assert "step 4: loss" in resumed.stderr  # plain progress lines when stderr is not a terminal

    store = tmp_path / "weights"
    exported = runner.invoke(app, ["train", "export", str(run), "--name", "tiny-dn", "--weights-dir", str(store)])
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.strip() == str(store / "tiny-dn.safetensors")
    assert (store / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "/nonexistent/folder"], "data folder not found"),
        (["--arch-config", "width=3"], "no option 'width'"),
        (["--time-limit", "soon"], "--time-limit"),
    ],
)
def test_user_errors_give_one_line_and_exit_code_2(tmp_path: Path, extra: list[str], message: str) -> None:
    app = restore_app()
    data = write_data(tmp_path / "data")
    args = ["train", "denoiser", "--data", str(data), *TINY, "--steps", "1", "-o", str(tmp_path / "run"), *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("restore: error:")


def test_option_parsers() -> None:
    assert parse_duration("2h30m") == 9000 and parse_duration("90m") == 5400
    assert parse_duration("1.5h") == 5400 and parse_duration("45s") == 45 and parse_duration("3600") == 3600
    for bad in ("2x", "h", "-5", "1h 2q"):
        with pytest.raises(RestoreError):
            parse_duration(bad)
    assert parse_noise_range("0,50") == (0.0, 50.0)
    with pytest.raises(RestoreError):
        parse_noise_range("10")
    assert parse_arch_config(["usrnet-tiny", "nc=8,16,16,16", '{"nb": 1}', "n_iter=3"]) == {
        "preset": "usrnet-tiny", "nc": [8, 16, 16, 16], "nb": 1, "n_iter": 3,
    }
    with pytest.raises(RestoreError):
        parse_arch_config(["nc=8,x"])
