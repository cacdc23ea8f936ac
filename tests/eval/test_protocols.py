"""Protocol settings, option validation, the protocol record, kernel files, LR lookup and
scoring conventions (ANCHORS §1.11, §6.4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from restore_cli.errors import RestoreError
from restore_cli.eval.protocols import (
    build_config,
    describe_protocol,
    find_lr_image,
    list_images,
    load_kernel_set,
    metric_view,
    protocol_layout,
    read_levels,
    score,
)
from restore_cli.eval.settings import ProtocolName, build_settings, parse_float_list, parse_int_list, parse_levels
from restore_cli.ops.colour import rgb_to_y
from restore_cli.ops.metrics import psnr

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.png", "c.bmp"):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def kernel_mat(tmp_path: Path) -> Path:
    cells = np.empty((1, 3), dtype=object)
    for i in range(3):
        k = np.ones((3 + 2 * i, 3 + 2 * i), np.float32)
        cells[0, i] = k / k.sum()
    path = tmp_path / "k.mat"
    scipy.io.savemat(path, {"kernels": cells})
    return path


def test_table1_default_settings_are_the_papers_five_rows() -> None:
    settings = build_settings(ProtocolName.usrnet_table1, kernel_count=12)
    assert len(settings) == 60
    groups = list(dict.fromkeys(s.group for s in settings))
    assert groups == ["×2 σ 0", "×3 σ 0", "×3 σ 2.55", "×3 σ 7.65", "×4 σ 0"]
    first = settings[0]
    assert (first.name, first.scale, first.noise, first.kernel_index, first.crop_border, first.modcrop) == (
        "k01_x2_n0", 2, 0.0, 1, 4, 8)
    k3x4 = [s for s in settings if s.name == "k03_x4_n0"][0]
    assert (k3x4.crop_border, k3x4.modcrop, k3x4.column) == (16, 8, "k3")
    x3 = [s for s in settings if s.scale == 3]
    assert {s.crop_border for s in x3} == {9} and {s.modcrop for s in x3} == {24}
    one = build_settings(ProtocolName.usrnet_table1, scales=(3,), noise=(7.65,), kernel_count=2)
    assert [s.name for s in one] == ["k01_x3_n7.65", "k02_x3_n7.65"]
    assert [s.crop_border for s in build_settings(ProtocolName.usrnet_table1, scales=(2,), kernel_count=1, crop_border=0)] == [0]


def test_other_protocol_defaults() -> None:
    assert [s.name for s in build_settings(ProtocolName.denoise)] == ["n15", "n25", "n50"]
    sweep = build_settings(ProtocolName.sfm_sweep)
    assert [s.noise for s in sweep] == [10.0 * i for i in range(1, 11)] and sweep[0].column == "σ 10"
    sr = build_settings(ProtocolName.bicubic_sr)
    assert [(s.name, s.kernel_index, s.crop_border, s.modcrop) for s in sr] == [
        ("x2", 1, 2, 2), ("x3", 2, 3, 3), ("x4", 3, 4, 4)]
    deblur = build_settings(ProtocolName.deblur, kernel_count=8)
    assert deblur[0].name == "k01_n7.65" and deblur[0].noise == 7.65 and deblur[0].crop_border == 0
    assert [s.name for s in build_settings(ProtocolName.jpeg)] == ["q10", "q20", "q30", "q40"]
    assert [s.name for s in build_settings(ProtocolName.toolchain)] == ["mild", "moderate", "severe"]


def test_list_parsers() -> None:
    assert parse_float_list("15, 25,50", "--noise") == (15.0, 25.0, 50.0)
    assert parse_int_list("2,4", "--scale", 1, 4) == (2, 4)
    assert parse_levels("Mild,severe") == ("mild", "severe")
    for call in (lambda: parse_float_list("x", "--noise"), lambda: parse_float_list("300", "--noise"),
                 lambda: parse_int_list("2.5", "--scale", 1, 4), lambda: parse_levels("awful")):
        with pytest.raises(RestoreError):
            call()


def test_options_that_do_not_apply_are_refused(data: Path, kernel_mat: Path) -> None:
    with pytest.raises(RestoreError, match="--scale does not apply to protocol denoise"):
        build_config(ProtocolName.denoise, data, scales=(2,))
    with pytest.raises(RestoreError, match="--noise does not apply to protocol jpeg"):
        build_config(ProtocolName.jpeg, data, noise=(5.0,))
    with pytest.raises(RestoreError, match="--clip-noise does not apply"):
        build_config(ProtocolName.toolchain, data, clip_noise=False)
    with pytest.raises(RestoreError, match="data folder not found"):
        build_config(ProtocolName.denoise, data / "missing")
    with pytest.raises(RestoreError, match="kernel file not found"):
        build_config(ProtocolName.deblur, data, kernels=data / "none.mat")
    with pytest.raises(RestoreError, match="needs 3"):
        build_config(ProtocolName.bicubic_sr, data, kernels=data / "c.bmp")  # one kernel, ×4 needs index 3
    with pytest.raises(RestoreError, match="bicubic-sr needs scales 2–4"):
        build_config(ProtocolName.bicubic_sr, data, kernels=kernel_mat, scales=(1,))


def test_config_defaults_and_the_protocol_record(data: Path, kernel_mat: Path) -> None:
    config = build_config(ProtocolName.usrnet_table1, data, kernels=kernel_mat)
    assert config.channel == "rgb" and config.pad_mode == "circular" and config.seed == 0 and not config.clip_noise
    assert not config.ssim and build_config(ProtocolName.denoise, data).ssim
    assert len(config.kernels) == 3 and len(config.settings) == 15
    d = describe_protocol(config)
    assert d["crop_border"] == "s² (×2: 4, ×3: 9, ×4: 16)"
    assert d["noise"]["clipped"] is False and d["noise"]["quantised"] is False
    assert "RandomState" in d["noise"]["generator"] and d["noise"]["levels_255"] == [0.0, 2.55, 7.65]
    assert d["kernel_file"]["count"] == 3 and len(d["kernel_file"]["sha256"]) == 64
    assert "truncated" in d["blur"] and "x[::s, ::s]" in d["downsampler"] and d["modcrop"] == "lcm(s, 8)"
    layout = protocol_layout(config)
    assert layout["kind"] == "wide" and [s["label"] for s in layout["summaries"]] == ["avg3"]
    sr = build_config(ProtocolName.bicubic_sr, data, kernels=kernel_mat, y_channel=None)
    assert sr.channel == "y" and sr.pad_mode == "reflect"
    d = describe_protocol(sr)
    assert d["crop_border"] == "s (×2: 2, ×3: 3, ×4: 4)" and "uint8" in d["downsampler"] and "Liu & Jia" in d["model_boundary"]
    rgb = build_config(ProtocolName.bicubic_sr, data, kernels=kernel_mat, y_channel=False, crop_border=0, lr_float=True)
    assert rgb.channel == "rgb" and describe_protocol(rgb)["crop_border"] == 0 and not rgb.lr_uint8
    den = build_config(ProtocolName.denoise, data, clip_noise=True, model_sigma="estimate")
    d = describe_protocol(den)
    assert d["noise"]["clipped"] is True and "estimate" in d["model_sigma"] and d["crop_border"] == 0
    jpeg = describe_protocol(build_config(ProtocolName.jpeg, data))
    assert jpeg["channel"] == "gray" and "Pillow" in jpeg["encoder"]
    tool = describe_protocol(build_config(ProtocolName.toolchain, data, patch=63))
    assert tool["patches"].startswith("63×63")


def test_default_kernel_files_are_found_under_shared(data: Path) -> None:
    if not (SHARED / "datasets" / "kernels" / "kernels_12.mat").is_file():
        pytest.skip("../shared not found: kernel files")
    assert len(build_config(ProtocolName.usrnet_table1, data).kernels) == 12
    levin = build_config(ProtocolName.deblur, data).kernels
    assert len(levin) == 8 and [k.shape[0] for k in levin.kernels] == [19, 17, 15, 27, 13, 21, 23, 23]
    bic = build_config(ProtocolName.bicubic_sr, data).kernels
    assert len(bic) == 3 and all(k.shape == (25, 25) for k in bic.kernels)
    assert all(abs(k.sum() - 1) < 1e-12 for k in levin.kernels)


def test_kernel_sets_from_mat_and_npy(tmp_path: Path, kernel_mat: Path) -> None:
    kernels = load_kernel_set(kernel_mat)
    assert [k.shape for k in kernels.kernels] == [(3, 3), (5, 5), (7, 7)]
    stored = scipy.io.loadmat(str(kernel_mat))["kernels"]
    for i, k in enumerate(kernels.kernels):  # kept as stored: float32 taps, not renormalised
        assert k.dtype == np.float64
        np.testing.assert_array_equal(k, stored[0, i].astype(np.float64))
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = np.ones((2, 2)), np.full((3, 3), np.nan)
    scipy.io.savemat(tmp_path / "bad.mat", {"kernels": cells})
    with pytest.raises(RestoreError, match="kernel 2 has non-finite values"):
        load_kernel_set(tmp_path / "bad.mat")
    np.save(tmp_path / "one.npy", np.ones((4, 4)))
    single = load_kernel_set(tmp_path / "one.npy")
    assert len(single) == 1 and single.kernels[0].sum() == pytest.approx(1.0)


def test_images_are_listed_by_name_and_limited(data: Path) -> None:
    files, total = list_images(data)
    assert [f.name for f in files] == ["a.png", "b.png", "c.bmp"] and total == 3
    files, total = list_images(data, limit=2)
    assert [f.name for f in files] == ["a.png", "b.png"] and total == 3
    empty = data.parent / "empty"
    empty.mkdir()
    with pytest.raises(RestoreError, match="no images"):
        list_images(empty)


def test_read_levels_keeps_gray_and_rounds_16_bit(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 7, np.uint8), "L").save(tmp_path / "g.png")
    gray = read_levels(tmp_path / "g.png")
    assert gray.shape == (4, 5, 1) and gray.dtype == np.uint8 and (gray == 7).all()
    Image.fromarray(np.full((4, 5), 257 * 9 + 100, np.uint16)).save(tmp_path / "d.png")
    assert (read_levels(tmp_path / "d.png") == 9).all()  # (2413/65535)·255 = 9.39 → 9


def test_lr_images_are_found_by_the_usual_names(tmp_path: Path) -> None:
    folder = tmp_path / "LR_X3"
    folder.mkdir()
    (folder / "birdx3.png").write_bytes(b"")
    (folder / "baby.png").write_bytes(b"")
    assert find_lr_image(str(tmp_path / "LR_X{scale}"), "bird", 3).name == "birdx3.png"
    assert find_lr_image(str(folder), "baby", 3).name == "baby.png"
    with pytest.raises(RestoreError, match="no LR image for head"):
        find_lr_image(str(folder), "head", 3)


def test_scores_use_studio_range_y_and_the_border() -> None:
    rng = np.random.default_rng(1)
    ref = torch.from_numpy(rng.integers(0, 256, (3, 30, 30)).astype(np.float64))
    out = (ref + torch.from_numpy(rng.integers(-3, 4, (3, 30, 30)).astype(np.float64))).clamp(0, 255)
    y_ref = metric_view(ref, "y")
    assert y_ref.shape == (1, 30, 30)
    torch.testing.assert_close(y_ref, rgb_to_y(ref / 255) * 255)
    assert metric_view(ref[:1], "y") is ref[:1] or torch.equal(metric_view(ref[:1], "y"), ref[:1])  # gray: as is
    values = score(out, ref, ["psnr", "ssim"], "y", 4, "x")
    assert values["psnr"] == pytest.approx(psnr(rgb_to_y(out / 255) * 255, rgb_to_y(ref / 255) * 255, border=4))
    assert 0 < values["ssim"] < 1
    with pytest.raises(RestoreError, match="cannot score x"):
        score(out, ref, ["ssim"], "rgb", 10, "x")  # 10×10 left: smaller than the SSIM window
