"""`restore eval` end to end through the CLI on tiny generated data with random-weight models:
every protocol, the JSON report, saved image names, --limit, --compare and usage errors."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from safetensors.torch import save_file

from restore_cli.models.architectures import build_model

DENOISER = {"channels": 3, "nc": [8, 16, 16, 16], "nb": 1}
USRNET = {"n_iter": 2, "h_nc": 8, "nc": [8, 16, 16, 16], "nb": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine's two cores are shared: one torch thread avoids oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_model(path: Path, arch: str, config: dict, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_model(arch, config)
    save_file(model.state_dict(), str(path), metadata={"arch": arch, "config": json.dumps(config)})
    return path


@pytest.fixture
def denoiser(tmp_path: Path) -> Path:
    return save_model(tmp_path / "den.safetensors", "resunet-denoiser", DENOISER)


@pytest.fixture
def usrnet(tmp_path: Path) -> Path:
    return save_model(tmp_path / "usr.safetensors", "usrnet", USRNET)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Three small RGB pictures of different sizes (not multiples of 8 or 24)."""
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in (("101085", (50, 52)), ("bird", (49, 40)), ("zebra", (36, 36))):
        coarse = rng.uniform(30, 225, (h // 6 + 2, w // 6 + 2, 3))
        img = np.kron(coarse, np.ones((6, 6, 1)))[:h, :w] + rng.normal(0, 6, (h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)).save(folder / f"{name}.png")
    return folder


@pytest.fixture
def kernels(tmp_path: Path) -> Path:
    """Three small Gaussian kernels in a MATLAB cell array, like kernels_12.mat."""
    cells = np.empty((1, 3), dtype=object)
    for i, sigma in enumerate((0.7, 1.2, 1.6)):
        x = np.arange(9) - 4.0
        g = np.exp(-x**2 / (2 * sigma**2))
        cells[0, i] = (np.outer(g, g) / np.outer(g, g).sum()).astype(np.float32)
    path = tmp_path / "k.mat"
    scipy.io.savemat(path, {"kernels": cells})
    return path


def run_json(cli, tmp_path: Path, *args) -> dict:
    out = tmp_path / "report.json"
    code, stdout, stderr = cli("eval", *args, "--json", out, "--device", "cpu")
    assert code == 0, stderr
    return json.loads(out.read_text())


def test_denoise_report_contents(cli, tmp_path: Path, data: Path, denoiser: Path) -> None:
    report = run_json(cli, tmp_path, "denoise", "--data", data, "--weights", denoiser, "--noise", "15,50", "--baseline")
    assert report["protocol"] == "denoise"
    d = report["protocol_details"]
    assert d["channel"] == "rgb" and d["crop_border"] == 0 and d["seed"] == 0
    assert d["noise"]["clipped"] is False and d["noise"]["quantised"] is False and "RandomState" in d["noise"]["generator"]
    assert [s["name"] for s in report["settings"]] == ["n15", "n50"]
    assert [m["key"] for m in report["methods"]] == ["model", "input"]
    model = report["methods"][0]["models"][0]
    assert model["sha256"] == hashlib.sha256(denoiser.read_bytes()).hexdigest()
    assert model["arch"] == "resunet-denoiser" and model["device"] == "cpu" and model["precision"] == "fp32"
    assert report["methods"][0]["label"] == "den"
    assert set(report["software"]) >= {"restore", "torch", "numpy"}
    assert report["run"]["wall_time_s"] > 0 and report["run"]["device"] == "cpu" and report["run"]["precision"] == "fp32"
    assert report["run"]["tile"] == 0 and report["run"]["command"].startswith("restore ")  # sys.argv: pytest here
    assert report["data"]["count"] == 3 and report["data"]["images"] == ["101085.png", "bird.png", "zebra.png"]
    assert len(report["records"]) == 3 * 2 * 2
    for avg in report["averages"]:
        values = [r["psnr"] for r in report["records"] if r["setting"] == avg["setting"] and r["method"] == avg["method"]]
        assert avg["count"] == 3 and avg["psnr"] == pytest.approx(sum(values) / 3)
    inputs = {a["setting"]: a["psnr"] for a in report["averages"] if a["method"] == "input"}
    assert 24 < inputs["n15"] < 26 and inputs["n50"] < inputs["n15"]  # 20·log10(255/15) = 24.6 dB before clamping


def test_denoise_gray_images_with_estimated_sigma(cli, tmp_path: Path, denoiser: Path) -> None:
    folder = tmp_path / "gray"
    folder.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(60, 200, (32, 40), dtype=np.uint8), "L").save(folder / "g.png")
    report = run_json(cli, tmp_path, "denoise", "--data", folder, "--weights", denoiser, "--noise", "25",
                      "--model-sigma", "estimate")
    assert "estimate" in report["protocol_details"]["model_sigma"]
    (record,) = report["records"]
    assert record["details"]["model_sigma_255"] > 10  # the estimate of σ 25 noise (biased by the texture)
    code, _, stderr = cli("eval", "denoise", "--data", folder, "--weights", denoiser, "--save-images", tmp_path / "o", "-q")
    assert code == 0, stderr
    assert Image.open(tmp_path / "o" / "g_n15.png").mode == "L"


def test_table1_end_to_end_save_images_and_the_reference_run(cli, tmp_path: Path, data: Path, usrnet: Path,
                                                            kernels: Path) -> None:
    out = tmp_path / "saved"
    report = run_json(cli, tmp_path, "usrnet-table1", "--data", data, "--weights", usrnet, "--kernels", kernels,
                      "--limit", "1", "--save-images", out, "--baseline")
    assert report["data"]["count"] == 1 and report["data"]["total_in_dir"] == 3 and report["data"]["limit"] == 1
    assert {r["image"] for r in report["records"]} == {"101085"}
    assert len(report["settings"]) == 5 * 3 and len(report["records"]) == 15 * 3
    assert [s["label"] for s in report["layout"]["summaries"]] == ["avg3"]
    assert report["metrics"] == ["psnr"] and "ssim" not in report["records"][0]  # the paper's table is PSNR only
    assert report["protocol_details"]["model_boundary"].startswith("circular")
    names = sorted(p.name for p in out.iterdir())
    model_files = [n for n in names if n.count("_") == 3]
    assert len(model_files) == 15 and "101085_k03_x4_n0.png" in model_files and "101085_k01_x3_n2.55.png" in model_files
    assert "101085_k02_x2_n0_bicubic.png" in names and "101085_k02_x2_n0_least-squares.png" in names
    assert not any(n.endswith("_input.png") for n in names) and len(names) == 45
    # HR modcropped to lcm(4, 8) = 8: 50×52 → 48×48.
    assert Image.open(out / "101085_k03_x4_n0.png").size == (48, 48)
    assert Image.open(out / "101085_k03_x3_n0.png").size == (48, 48)  # lcm(3, 8) = 24

    # The saved ×3 σ 7.65 result is the reference's whole-image call model(x, k, sf, σ) on the LR.
    from restore_cli.eval.degradations import usrnet_lr, wrap_blur_uint8
    from restore_cli.io.kernel_files import load_kernel

    image = np.asarray(Image.open(data / "101085.png"))[:48, :48]
    kernel, _ = load_kernel(f"{kernels}:2")
    lr = usrnet_lr(wrap_blur_uint8(image, kernel), 3, 7.65, 0)
    module = build_model("usrnet", USRNET)
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(usrnet)))
    with torch.inference_mode():
        direct = module(torch.from_numpy(lr.transpose(2, 0, 1)).unsqueeze(0), torch.from_numpy(kernel).float()[None, None],
                        3, torch.full((1, 1, 1, 1), 7.65 / 255))
    expected = np.round(direct[0].clamp(0, 1).numpy().transpose(1, 2, 0) * 255)
    saved = np.asarray(Image.open(out / "101085_k02_x3_n7.65.png"), dtype=np.float64)
    assert np.abs(saved - expected).max() <= 1 and np.mean(saved == expected) > 0.99
    record = [r for r in report["records"] if r["setting"] == "k02_x3_n7.65" and r["method"] == "model"][0]
    mse = np.mean((expected[9:-9, 9:-9] - image[9:-9, 9:-9].astype(np.float64)) ** 2)  # border s² = 9
    assert record["psnr"] == pytest.approx(10 * math.log10(255**2 / mse), abs=0.02)


def test_save_inputs_names_and_sizes(cli, tmp_path: Path, data: Path, usrnet: Path, kernels: Path) -> None:
    out = tmp_path / "saved"
    code, _, stderr = cli("eval", "bicubic-sr", "--data", data, "--weights", usrnet, "--kernels", kernels, "--scale", "2",
                          "--limit", "2", "--save-images", out, "--save-inputs", "-q")
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["101085_x2.png", "101085_x2_input.png", "bird_x2.png", "bird_x2_input.png"]
    assert Image.open(out / "bird_x2.png").size == (40, 48)  # modcrop 2: 49×40 → 48×40
    assert Image.open(out / "bird_x2_input.png").size == (20, 24)


def test_bicubic_sr_scores_y_with_border_s(cli, tmp_path: Path, data: Path, usrnet: Path, kernels: Path) -> None:
    report = run_json(cli, tmp_path, "bicubic-sr", "--data", data, "--weights", usrnet, "--kernels", kernels, "--baseline")
    d = report["protocol_details"]
    assert d["channel"] == "y" and d["crop_border"].startswith("s (") and "uint8" in d["downsampler"]
    assert [s["crop_border"] for s in report["settings"]] == [2, 3, 4]
    bicubic = {a["setting"]: a["psnr"] for a in report["averages"] if a["method"] == "bicubic"}
    assert bicubic["x2"] > bicubic["x4"] > 15


def test_bicubic_sr_reads_given_lr_images(cli, tmp_path: Path, data: Path, usrnet: Path, kernels: Path) -> None:
    made = run_json(cli, tmp_path, "bicubic-sr", "--data", data, "--no-model", "--kernels", kernels, "--scale", "3")
    lr_dir = tmp_path / "LR" / "X3"
    lr_dir.mkdir(parents=True)
    from restore_cli.eval.degradations import bicubic_lr, modcrop

    for path in sorted(data.iterdir()):
        hr = modcrop(np.asarray(Image.open(path)), 3)
        Image.fromarray(np.round(bicubic_lr(hr, 3) * 255).astype(np.uint8)).save(lr_dir / f"{path.stem}x3.png")
    given = run_json(cli, tmp_path, "bicubic-sr", "--data", data, "--no-model", "--kernels", kernels, "--scale", "3",
                     "--lr", str(tmp_path / "LR" / "X{scale}"))
    assert given["averages"] == made["averages"]
    assert "read from" in given["protocol_details"]["downsampler"]


def test_deblur_with_wiener_baseline(cli, tmp_path: Path, data: Path, usrnet: Path, kernels: Path) -> None:
    report = run_json(cli, tmp_path, "deblur", "--data", data, "--weights", usrnet, "--kernels", kernels, "--baseline",
                      "--ssim")
    assert report["metrics"] == ["psnr", "ssim"] and 0 < report["records"][0]["ssim"] <= 1
    assert [s["name"] for s in report["settings"]] == ["k01_n7.65", "k02_n7.65", "k03_n7.65"]
    assert report["protocol_details"]["noise"]["levels_255"] == [7.65]
    assert [m["key"] for m in report["methods"]] == ["model", "wiener"]
    assert "x0 = the input" in report["methods"][1]["definition"]
    assert [s["label"] for s in report["summaries"] if s["method"] == "wiener"] == ["avg"]


def test_sfm_sweep_runs_models_side_by_side(cli, tmp_path: Path, data: Path) -> None:
    a = save_model(tmp_path / "a.safetensors", "resunet-denoiser", DENOISER, seed=0)
    b = save_model(tmp_path / "b.safetensors", "resunet-denoiser", DENOISER, seed=1)
    code, stdout, stderr = cli("eval", "sfm-sweep", "--data", data, "--weights", a, "--weights", b, "--noise", "10,60",
                               "--clip-noise", "--limit", "1", "--markdown", "-", "--device", "cpu", "-q")
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "| Method | σ 10 | σ 60 |"
    assert [line.split(" | ")[0] for line in lines[2:4]] == ["| a", "| b"]


def test_toolchain_and_jpeg_report_baselines_and_refuse_missing_models(cli, tmp_path: Path, data: Path, denoiser: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path / "empty-store"))
    report = run_json(cli, tmp_path, "toolchain", "--data", data, "--no-model", "--baseline", "--patch", "16",
                      "--level", "mild,severe")
    assert [m["key"] for m in report["methods"]] == ["input"]
    assert report["data"]["items"] == 9 + 6 + 4  # 50×52 → 3×3, 49×40 → 3×2, 36×36 → 2×2
    assert {"blur_sigma", "noise_sigma", "jpeg_quality"} <= set(report["records"][0]["details"])
    jpeg = run_json(cli, tmp_path, "jpeg", "--data", data, "--baseline", "--quality", "10,40")
    assert jpeg["metrics"] == ["psnr", "ssim", "psnr_b"] and jpeg["protocol_details"]["channel"] == "gray"
    q = {a["setting"]: a for a in jpeg["averages"]}
    assert q["q40"]["psnr"] > q["q10"]["psnr"] and q["q10"]["psnr_b"] <= q["q10"]["psnr"]
    code, _, stderr = cli("eval", "toolchain", "--data", data)
    assert code == 2 and "no trained toolbox is installed" in stderr
    code, _, stderr = cli("eval", "jpeg", "--data", data, "--baseline", "--weights", denoiser)
    assert code == 2 and "not available yet" in stderr


def test_compare_two_reports(cli, tmp_path: Path, data: Path, kernels: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, factor in ((a, "200"), (b, "50")):
        code, _, stderr = cli("eval", "deblur", "--data", data, "--no-model", "--kernels", kernels, "--alpha-factor", factor,
                              "--json", path, "-q")
        assert code == 0, stderr
    code, stdout, stderr = cli("eval", "--compare", a, b, "--json", "-")
    assert code == 0, stderr
    diff = json.loads(stdout)
    assert any("method wiener" in line for line in diff["protocol_differences"])
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    first = diff["rows"][0]
    avg_a = [x for x in ra["averages"] if x["setting"] == first["setting"] and x["method"] == first["method"]][0]
    avg_b = [x for x in rb["averages"] if x["setting"] == first["setting"] and x["method"] == first["method"]][0]
    assert first["delta"] == pytest.approx(avg_b[first["metric"]] - avg_a[first["metric"]])
    assert "protocols differ" in stderr and "Δ" in stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["denoise", "--data", "{data}", "--scale", "2"], "--scale does not apply to protocol denoise"),
        (["--data", "{data}"], "give a protocol"),
        (["denoise"], "--data DIR is required"),
        (["denoise", "--data", "{data}", "--save-inputs"], "--save-inputs needs --save-images"),
        (["denoise", "--data", "{data}", "--no-model", "--weights", "x.safetensors"], "--no-model excludes"),
        (["denoise", "--data", "{data}", "--noise", "abc"], "is not a number"),
        (["--compare", "{data}/none.json", "{data}/none.json"], "report file not found"),
    ],
)
def test_usage_errors(cli, data: Path, args: list[str], message: str) -> None:
    code, _, stderr = cli("eval", *[a.replace("{data}", str(data)) for a in args])
    assert code == 2 and message in stderr


def test_shards_merge_into_the_unsharded_report(cli, tmp_path: Path, data: Path, kernels: Path) -> None:
    """--shard 1/2 and 2/2 evaluate disjoint interleaved images; --merge gives the same records
    and averages as one run over all images, and refuses parts that do not belong together."""
    common = ("deblur", "--data", data, "--no-model", "--kernels", kernels, "-q")
    whole, part1, part2 = tmp_path / "whole.json", tmp_path / "p1.json", tmp_path / "p2.json"
    for path, extra in ((whole, ("--markdown", tmp_path / "whole.md")), (part1, ("--shard", "1/2")), (part2, ("--shard", "2/2"))):
        code, _, stderr = cli("eval", *common, *extra, "--json", path)
        assert code == 0, stderr
    r1, r2, rw = (json.loads(p.read_text()) for p in (part1, part2, whole))
    assert r1["data"]["images"] == ["101085.png", "zebra.png"] and r2["data"]["images"] == ["bird.png"]
    assert r1["data"]["shard"] == "1/2"
    merged_path, markdown = tmp_path / "merged.json", tmp_path / "merged.md"
    code, _, stderr = cli("eval", "--merge", part2, "--merge", part1, "--json", merged_path, "--markdown", markdown)
    assert code == 0, stderr
    merged = json.loads(merged_path.read_text())
    key = lambda r: (r["image"], r["setting"], r["method"])  # noqa: E731
    assert sorted(merged["records"], key=key) == sorted(rw["records"], key=key)
    assert merged["averages"] == rw["averages"] and merged["data"]["count"] == 3 and "shard" not in merged["data"]
    assert [p["shard"] for p in merged["data"]["merged_from"]] == ["2/2", "1/2"]
    assert markdown.read_text() == (tmp_path / "whole.md").read_text()
    # Parts that overlap or were made differently are refused with one line.
    code, _, stderr = cli("eval", "--merge", part1, "--merge", whole)
    assert code == 2 and "is also in" in stderr and len(stderr.strip().splitlines()) == 1
    other = tmp_path / "other.json"
    code, _, _ = cli("eval", *common, "--shard", "2/2", "--alpha-factor", "50", "--json", other)
    assert code == 0
    code, _, stderr = cli("eval", "--merge", part1, "--merge", other)
    assert code == 2 and "methods differ" in stderr
    code, _, stderr = cli("eval", "--merge", part1)
    assert code == 2 and "at least two" in stderr
    code, _, stderr = cli("eval", *common, "--shard", "3/2")
    assert code == 2 and "--shard 3/2" in stderr
    code, _, stderr = cli("eval", *common, "--shard", "3/4", "--limit", "2")
    assert code == 2 and "no images in this part" in stderr


SFTGAN_SMALL = {"nf": 16, "nb": 2, "cond_hidden": 16, "prior_nf": 8, "prior_nb": 6}


def test_texture_sr_scores_sftgan_usrnet_and_bicubic_and_swaps_the_prior(cli, tmp_path: Path, data: Path, usrnet: Path,
                                                                         kernels: Path) -> None:
    """texture-sr: ×4 from MATLAB bicubic LR, Y with border 4, PSNR/SSIM plus the upper-half
    spectral metrics for an SFT-GAN model, a USRNet and bicubic; --prior-swap adds one run per
    category, and forcing different categories gives different outputs."""
    torch.manual_seed(1)
    model = build_model("sftgan", SFTGAN_SMALL)
    with torch.no_grad():  # undo the ×0.1 init of the condition and shift layers: each category's β moves the output
        for name, parameter in model.named_parameters():
            if "CondNet" in name or "SFT_shift" in name:
                parameter.mul_(10.0)
    sftgan = tmp_path / "sft.safetensors"
    save_file(model.state_dict(), str(sftgan), metadata={"arch": "sftgan", "config": json.dumps(SFTGAN_SMALL)})
    report = run_json(cli, tmp_path, "texture-sr", "--data", data, "--weights", sftgan, "--weights", usrnet,
                      "--kernels", kernels, "--baseline", "--prior-swap", "--save-images", tmp_path / "out")
    assert report["metrics"] == ["psnr", "ssim", "lsd_hf", "hf_db"]
    assert [s["name"] for s in report["settings"]] == ["x4"] and report["settings"][0]["crop_border"] == 4
    assert report["protocol_details"]["channel"] == "y" and "lsd_hf" in report["protocol_details"]["spectrum"]
    keys = [m["key"] for m in report["methods"]]
    assert keys == ["model", "model2", *[f"model-c{k}" for k in range(8)], "bicubic"]
    assert report["methods"][0]["prior"] == "auto" and report["methods"][2]["prior"] == "category:0"
    averages = {a["method"]: a for a in report["averages"]}
    for entry in averages.values():
        assert math.isfinite(entry["psnr"]) and entry["lsd_hf"] >= 0 and math.isfinite(entry["hf_db"])
    # bicubic upsampling has far less high-frequency energy than the ground truth
    assert averages["bicubic"]["hf_db"] < -5 and averages["bicubic"]["lsd_hf"] > 5
    # the records hold the same numbers as scoring the saved images directly
    from restore_cli.eval.degradations import levels_tensor, modcrop
    from restore_cli.eval.protocols import metric_view
    from restore_cli.ops.spectrum import lsd_hf

    hr = modcrop(np.asarray(Image.open(data / "bird.png")), 4)
    out = np.asarray(Image.open(tmp_path / "out" / "bird_x4_bicubic.png"))
    record = next(r for r in report["records"] if r["image"] == "bird" and r["method"] == "bicubic")
    expected = lsd_hf(metric_view(levels_tensor(out), "y"), metric_view(levels_tensor(hr), "y"), border=4)
    assert record["lsd_hf"] == pytest.approx(expected, rel=1e-9)
    # forced categories change the output (random SFT weights already modulate the features)
    c0 = np.asarray(Image.open(tmp_path / "out" / "bird_x4_sft-category-0.png")).astype(int)
    c5 = np.asarray(Image.open(tmp_path / "out" / "bird_x4_sft-category-5.png")).astype(int)
    assert c0.shape == hr.shape and np.abs(c0 - c5).max() > 0


def test_texture_sr_usage_errors(cli, tmp_path: Path, data: Path, usrnet: Path, kernels: Path) -> None:
    code, _, stderr = cli("eval", "texture-sr", "--data", data, "--weights", usrnet, "--kernels", kernels, "--prior-swap")
    assert code == 2 and "--prior-swap needs an SFT-GAN model" in stderr
    code, _, stderr = cli("eval", "denoise", "--data", data, "--prior-swap")
    assert code == 2 and "--prior-swap does not apply to protocol denoise" in stderr
    code, _, stderr = cli("eval", "texture-sr", "--data", data, "--weights", usrnet, "--kernels", kernels, "--scale", "2")
    assert code == 2 and "--scale does not apply to protocol texture-sr" in stderr
