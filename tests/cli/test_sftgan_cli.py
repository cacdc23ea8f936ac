"""`restore sr --model sftgan`-style runs end to end through the CLI with random weights
(`--weights` files: generator + prior, and generator only), tiling, --save-prior, --prior FILE,
the options that do not apply, and the `restore train sftgan-prior` / `sftgan` commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from restore_cli.io.prior_files import category_palette
from restore_cli.models.architectures import build_model

SMALL = {"nf": 16, "nb": 2, "cond_hidden": 16, "prior_nf": 8, "prior_nb": 6}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def weights(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    model = build_model("sftgan", SMALL)
    combined = tmp_path / "sftgan.safetensors"
    save_file(model.state_dict(), str(combined), metadata={"arch": "sftgan", "config": json.dumps(SMALL)})
    generator = tmp_path / "generator.safetensors"
    save_file(model.generator.state_dict(), str(generator), metadata={"arch": "sftgan-generator"})
    return {"combined": combined, "generator": generator}


def picture(path: Path, h: int = 22, w: int = 31, mode: str = "RGB") -> np.ndarray:
    rng = np.random.default_rng(3)
    data = rng.integers(20, 236, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data if mode == "RGB" else data[..., 0]).save(path)
    return data


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def test_sr_with_sftgan_weights_tiles_and_saves_the_prior(cli, tmp_path: Path, weights: dict[str, Path]) -> None:
    picture(tmp_path / "in" / "photo.png")
    code, stdout, stderr = cli("sr", tmp_path / "in" / "photo.png", "--weights", weights["combined"], "-o", tmp_path / "whole.png",
                               "--tile", "0", "--save-prior", "--json", "--device", "cpu", "-q")
    assert code == 0, stderr
    record = json.loads(stdout.splitlines()[0])
    assert record["status"] == "ok" and record["scale"] == 4 and record["prior"] == "auto"
    assert record["prior_map"] == str(tmp_path / "whole_prior.png") and len(record["category_shares"]) == 8
    whole = read(tmp_path / "whole.png")
    assert whole.shape == (88, 124, 3)
    with Image.open(tmp_path / "whole_prior.png") as prior:
        assert prior.mode == "P" and prior.size == (31, 22)
        colours = {tuple(c) for c in np.asarray(prior.convert("RGB")).reshape(-1, 3)}
    assert colours <= {tuple(c) for c in category_palette(8)}
    code, _, stderr = cli("sr", tmp_path / "in" / "photo.png", "--weights", weights["combined"], "-o", tmp_path / "tiled.png",
                          "--tile", "10", "--tile-overlap", "4", "--device", "cpu", "-q")
    assert code == 0, stderr
    assert psnr(read(tmp_path / "tiled.png"), whole) >= 40.0
    # The saved prior is a valid --prior file: a generator without prior network reproduces the run.
    code, stdout, stderr = cli("sr", tmp_path / "in" / "photo.png", "--weights", weights["generator"], "-o", tmp_path / "file.png",
                               "--prior", tmp_path / "whole_prior.png", "--json", "--device", "cpu", "-q")
    assert code == 0, stderr
    assert json.loads(stdout.splitlines()[0])["prior"] == str(tmp_path / "whole_prior.png")
    assert read(tmp_path / "file.png").shape == whole.shape


def test_prior_npy_category_and_gray_input(cli, tmp_path: Path, weights: dict[str, Path]) -> None:
    picture(tmp_path / "gray.png", h=9, w=12, mode="L")
    p = np.random.default_rng(0).random((8, 36, 48))
    np.save(tmp_path / "hr.npy", p / p.sum(axis=0))
    code, stdout, stderr = cli("sr", tmp_path / "gray.png", "--weights", weights["combined"], "-o", tmp_path / "a.png",
                               "--prior", tmp_path / "hr.npy", "--device", "cpu", "-q", "--json")
    assert code == 0, stderr
    assert read(tmp_path / "a.png").shape == (36, 48)
    code, stdout, stderr = cli("sr", tmp_path / "gray.png", "--weights", weights["combined"], "-o", tmp_path / "b.png",
                               "--prior", "category:5", "--device", "cpu", "-q", "--json")
    assert code == 0, stderr
    record = json.loads(stdout.splitlines()[0])
    assert record["prior"] == "category:5" and record["category_shares"][5] == 1.0
    np.save(tmp_path / "bad.npy", p)
    code, stdout, stderr = cli("sr", tmp_path / "gray.png", "--weights", weights["combined"], "-o", tmp_path / "c.png",
                               "--prior", tmp_path / "bad.npy", "--device", "cpu", "-q", "--json")
    assert code == 1  # a per-file failure of the batch, reported with the file
    assert "does not sum to 1" in json.loads(stdout.splitlines()[0])["error"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kernel", "gaussian:1"], "--kernel does not apply to SFT-GAN"),
        (["--noise", "3", "--boundary", "wrap"], "--noise, --boundary do not apply"),
        (["--scale", "2"], "×4 only, not --scale 2"),
        (["--prior", "category:1", "--prior-classes", "x.txt"], "--prior-classes applies to a label-image prior"),
        (["--prior", "category:x"], "expected category:N"),
        (["--prior", "nowhere.npy"], "no such file or folder"),
    ],
)
def test_options_that_do_not_apply(cli, tmp_path: Path, weights: dict[str, Path], extra: list[str], message: str) -> None:
    picture(tmp_path / "p.png", h=8, w=8)
    code, _, stderr = cli("sr", tmp_path / "p.png", "--weights", weights["combined"], "-o", tmp_path / "o.png", *extra)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_generator_only_needs_a_prior_and_usrnet_refuses_prior_options(cli, tmp_path: Path, weights: dict[str, Path]) -> None:
    picture(tmp_path / "p.png", h=8, w=8)
    code, _, stderr = cli("sr", tmp_path / "p.png", "--weights", weights["generator"], "-o", tmp_path / "o.png")
    assert code == 2 and "generator without a prior network" in stderr
    usrnet = build_model("usrnet", {"n_iter": 1, "h_nc": 4, "nc": (4, 4, 4, 4), "nb": 1})
    save_file(usrnet.state_dict(), str(tmp_path / "u.safetensors"), metadata={"arch": "usrnet"})
    code, _, stderr = cli("sr", tmp_path / "p.png", "--weights", tmp_path / "u.safetensors", "-o", tmp_path / "o.png", "--save-prior")
    assert code == 2 and "apply to SFT-GAN models" in stderr


def test_train_commands(cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"{i}.png")
    code, stdout, stderr = cli("train", "sftgan-prior", "--data", data, "--patch", "32", "--batch", "2", "--steps", "2",
                               "--categories", "2", "--cluster-samples", "20", "--arch-config", "nf=4", "--arch-config", "nb=1",
                               "-o", tmp_path / "prior", "--val", data, "--val-every", "2", "--device", "cpu")
    assert code == 0, stderr
    assert stdout.strip() == str(tmp_path / "prior" / "ckpt-0000002")
    assert "validation category accuracy" in stderr
    code, stdout, stderr = cli("train", "sftgan", "--stage", "1", "--prior-model", tmp_path / "prior", "--data", data,
                               "--patch", "32", "--batch", "2", "--steps", "1", "--arch-config", "nf=4", "--arch-config", "nb=1",
                               "--arch-config", "cond_hidden=4", "-o", tmp_path / "s1", "--device", "cpu", "-q")
    assert code == 0, stderr
    assert stdout.strip() == str(tmp_path / "s1" / "ckpt-0000001")
    code, _, stderr = cli("train", "sftgan", "--stage", "2", "--data", data, "-o", tmp_path / "s2")
    assert code == 2 and "give --prior-model" in stderr


def test_model_by_name_from_the_weights_store(cli, tmp_path: Path, weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from restore_cli.engine.weights import ModelEntry, add_manifest_entry, sha256_file

    store = tmp_path / "store"
    store.mkdir()
    (store / "sftgan.safetensors").write_bytes(weights["combined"].read_bytes())
    add_manifest_entry(ModelEntry(name="sftgan", file="sftgan.safetensors", sha256=sha256_file(store / "sftgan.safetensors"),
                                  arch="sftgan", config=SMALL, task="sr-texture", scales=[4]), store)
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(store))
    picture(tmp_path / "p.png", h=8, w=10)
    code, stdout, stderr = cli("sr", tmp_path / "p.png", "--model", "sftgan", "-o", tmp_path / "o.png", "--json", "--device", "cpu", "-q")
    assert code == 0, stderr
    assert json.loads(stdout.splitlines()[0])["model"] == "sftgan" and read(tmp_path / "o.png").shape == (32, 40, 3)
    (store / "sftgan.safetensors").write_bytes(weights["generator"].read_bytes())  # tampered: refused by its sha256
    code, _, stderr = cli("sr", tmp_path / "p.png", "--model", "sftgan", "-o", tmp_path / "o2.png")
    assert code == 2 and "sha256 mismatch" in stderr
