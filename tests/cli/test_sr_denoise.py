"""`restore sr` and `restore denoise` end to end through the CLI with random-weight models:
sizes, bit depth, gray and alpha handling, sidecar parameters, JSON details, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from restore_cli.models.architectures import build_model

DENOISER = {"channels": 3, "nc": (8, 16, 16, 16), "nb": 1}
USRNET = {"n_iter": 2, "h_nc": 8, "nc": (8, 16, 16, 16), "nb": 1}


def save_model(path: Path, arch: str, config: dict) -> Path:
    torch.manual_seed(0)
    model = build_model(arch, config)
    save_file(model.state_dict(), str(path), metadata={"arch": arch, "config": json.dumps({**config, "nc": list(config["nc"])})})
    return path


def picture(path: Path, h: int = 40, w: int = 56, mode: str = "RGB", bits: int = 8) -> np.ndarray:
    rng = np.random.default_rng(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    img = rng.uniform(0.2, 0.8, size=(h, w, channels))
    if bits == 16:
        data = (img[..., 0] * 65535).round().astype(np.uint16)
        Image.fromarray(data).save(path)  # 16-bit gray PNG (mode I;16)
        return data
    data = (img * 255).round().astype(np.uint8)
    Image.fromarray(data[..., 0] if mode == "L" else data, mode).save(path)
    return data


@pytest.fixture
def denoiser(tmp_path: Path) -> Path:
    return save_model(tmp_path / "den.safetensors", "resunet-denoiser", DENOISER)


@pytest.fixture
def usrnet(tmp_path: Path) -> Path:
    return save_model(tmp_path / "usr.safetensors", "usrnet", USRNET)


def test_denoise_colour_gray_and_16_bit(cli, tmp_path: Path, denoiser: Path) -> None:
    picture(tmp_path / "in" / "rgb.png")
    picture(tmp_path / "in" / "gray.png", mode="L")
    picture(tmp_path / "in" / "deep.png", bits=16)
    code, stdout, stderr = cli("denoise", tmp_path / "in", "-o", tmp_path / "out", "--weights", denoiser,
                               "--noise", "25", "--json", "--device", "cpu", "-q")
    assert code == 0, stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    files = {Path(r["input"]).name: r for r in records if "input" in r}
    assert records[-1]["summary"]["ok"] == 3
    assert files["rgb.png"]["device"] == "cpu" and files["rgb.png"]["precision"] == "fp32"
    assert files["rgb.png"]["noise"] == 25
    rgb = Image.open(tmp_path / "out" / "rgb_denoised.png")
    assert rgb.mode == "RGB" and rgb.size == (56, 40)
    gray = Image.open(tmp_path / "out" / "gray_denoised.png")
    assert gray.mode == "L"
    deep = np.array(Image.open(tmp_path / "out" / "deep_denoised.png"))
    assert deep.dtype == np.uint16 and deep.shape == (40, 56)


def test_denoise_auto_noise_reports_the_estimate(cli, tmp_path: Path, denoiser: Path) -> None:
    picture(tmp_path / "a.png", 64, 64)
    code, stdout, stderr = cli("denoise", tmp_path / "a.png", "-o", tmp_path / "b.png", "--weights", denoiser,
                               "--noise", "auto", "--json", "-q")
    assert code == 0, stderr
    record = json.loads(stdout.splitlines()[0])
    assert record["noise_estimated"] is True and record["noise"] >= 0


def test_sr_scales_the_image_and_resizes_alpha(cli, tmp_path: Path, usrnet: Path) -> None:
    picture(tmp_path / "a.png", 24, 32, mode="RGBA")
    code, _, stderr = cli("sr", tmp_path / "a.png", "-o", tmp_path / "o", "--weights", usrnet, "--scale", "3",
                          "--kernel", "gaussian:1.2", "--noise", "2", "-q")
    assert code == 0, stderr
    out = Image.open(tmp_path / "o" / "a_x3.png")
    assert out.mode == "RGBA" and out.size == (96, 72)


def test_sr_params_from_a_degrade_sidecar(cli, tmp_path: Path, usrnet: Path) -> None:
    picture(tmp_path / "hr.png", 48, 64)
    code, _, stderr = cli("degrade", tmp_path / "hr.png", "-o", tmp_path / "lr.png", "--scale", "2",
                          "--kernel", "gaussian:1.6", "--noise", "3", "-q")
    assert code == 0, stderr
    code, stdout, stderr = cli("sr", tmp_path / "lr.png", "--params", tmp_path / "lr.json", "-o", tmp_path / "sr.png",
                               "--weights", usrnet, "--json", "-q", "--tile", "0")
    assert code == 0, stderr
    record = json.loads(stdout.splitlines()[0])
    assert record["scale"] == 2 and record["noise"] == 3 and record["kernel"] == "gaussian:1.6,25"
    assert Image.open(tmp_path / "sr.png").size == (64, 48)


def test_tiled_and_untiled_cli_runs_agree(cli, tmp_path: Path, usrnet: Path) -> None:
    picture(tmp_path / "a.png", 48, 56)
    for tile in ("0", "24"):
        code, _, stderr = cli("sr", tmp_path / "a.png", "-o", tmp_path / f"t{tile}.png", "--weights", usrnet,
                              "--scale", "2", "--kernel", "gaussian:1.0", "--tile", tile, "--tile-overlap", "8", "-q")
        assert code == 0, stderr
    a = np.array(Image.open(tmp_path / "t0.png"), dtype=np.float64)
    b = np.array(Image.open(tmp_path / "t24.png"), dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    assert mse == 0 or 10 * np.log10(255**2 / mse) >= 40


@pytest.mark.parametrize(
    "args,message",
    [
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--precision", "fp16", "--device", "cpu"], "fp16 is not supported on the CPU"),
        (["--tile", "big"], "--tile big"),
        (["--noise", "loud"], "--noise loud"),
    ],
)
def test_denoise_usage_errors_are_one_line(cli, tmp_path: Path, denoiser: Path, args: list[str], message: str) -> None:
    if args[:2] == ["--device", "cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    picture(tmp_path / "a.png")
    code, stdout, stderr = cli("denoise", tmp_path / "a.png", "--weights", denoiser, *args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("a_denoised*"))


def test_wrong_task_weights_and_missing_default_model(cli, tmp_path: Path, denoiser: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    picture(tmp_path / "a.png")
    code, _, stderr = cli("sr", tmp_path / "a.png", "--weights", denoiser, "--scale", "2")
    assert code == 2 and "restore denoise" in stderr
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path / "empty"))
    code, _, stderr = cli("denoise", tmp_path / "a.png", "--noise", "10")
    assert code == 2 and "no trained model" in stderr
