"""The `restore` app as a user meets it: version, command list, help panels and examples."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from restore_cli import __version__

SUBCOMMANDS = ("sr", "denoise", "degrade", "sfm-mask", "toolchain", "train", "eval")

# Panels each image command's --help must show (issue 2).
PANELS = {
    "degrade": ("Input/Output", "Degradation", "Reporting"),
    "sfm-mask": ("Input/Output", "Degradation", "Reporting"),
    "sr": ("Input/Output", "Degradation", "Model", "Tiling & device", "Reporting"),
    "denoise": ("Input/Output", "Degradation", "Model", "Tiling & device", "Reporting"),
    "toolchain": ("Input/Output", "Model", "Tiling & device", "Reporting"),
    "eval": ("Protocol", "Data", "Model", "Tiling & device", "Reporting"),
}

# A Rich panel title sits in the top border: "╭─ Input/Output ───…╮".
PANEL_TITLE = re.compile(r"╭─ (.+?) ─")


def test_version_prints_the_package_version(cli) -> None:
    code, out, err = cli("--version")
    assert code == 0
    assert out.strip() == f"restore {__version__}"
    assert err == ""


def test_python_dash_m_runs_the_same_app() -> None:
    done = subprocess.run([sys.executable, "-m", "restore_cli", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"restore {__version__}"


def test_help_lists_all_seven_subcommands(cli) -> None:
    code, out, _ = cli("--help")
    assert code == 0
    listed = set(re.findall(r"^│ ([a-z][a-z-]*) ", out, flags=re.MULTILINE))
    missing = [name for name in SUBCOMMANDS if name not in listed]
    assert not missing, f"--help does not list {missing}; it lists {sorted(listed)}"


@pytest.mark.parametrize("command", sorted(PANELS))
def test_image_command_help_has_the_panels_and_ends_with_examples(cli, command: str) -> None:
    code, out, _ = cli(command, "--help")
    assert code == 0
    titles = PANEL_TITLE.findall(out)
    for panel in PANELS[command]:
        assert panel in titles, f"`restore {command} --help` has no {panel!r} panel (panels: {titles})"
    # The help ends with an "Examples" section holding two `$ restore …` lines, after every panel.
    lines = [line.strip() for line in out.rstrip().splitlines()]
    assert "Examples" in lines, f"`restore {command} --help` has no Examples section"
    start = len(lines) - 1 - lines[::-1].index("Examples")
    last_panel = max(i for i, line in enumerate(lines) if line.startswith("╰"))
    assert start > last_panel, "the Examples section must come after the option panels"
    examples = [line for line in lines[start + 1 :] if line.startswith("$ ")]
    assert len(examples) >= 2, f"expected at least two examples, got {examples}"
    assert all(line.startswith(f"$ restore {command} ") for line in examples), examples
