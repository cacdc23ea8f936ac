"""SFT-GAN in the engine: tiled and whole-image runs agree, the prior travels with the tiles at LR
and at HR size, forced and file priors, gray and alpha images, generator-only models, and the
dispatch test that tells `restore sr` which path to take."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from restore_cli.engine.device import Placement
from restore_cli.engine.registry import ResolvedModel
from restore_cli.engine.restore import TileRequest
from restore_cli.engine.sftgan import (
    PriorRequest,
    TextureSuperResolver,
    forced_prior,
    resolve_prior,
    super_resolve_texture_image,
    texture_architecture,
)
from restore_cli.engine.weights import ModelEntry, add_manifest_entry, sha256_file
from restore_cli.errors import RestoreError
from restore_cli.io.images import ImageData
from restore_cli.models.architectures import build_model
from restore_cli.models.sft import upsample_prior

SMALL = {"nf": 16, "nb": 2, "cond_hidden": 16, "prior_nf": 8, "prior_nb": 6}
CPU = Placement(torch.device("cpu"), "fp32")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def resolved(arch: str = "sftgan", config: dict | None = None, seed: int = 0) -> ResolvedModel:
    torch.manual_seed(seed)
    config = dict(SMALL if config is None else config)
    module = build_model(arch, config).eval()
    return ResolvedModel(module, "test", arch, config, "sr-texture", [4], 3, "safe", None, None)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    peak = float(b.max() - b.min())
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def test_tiled_run_agrees_with_the_whole_image() -> None:
    model = resolved()
    whole = TextureSuperResolver(model, CPU, TileRequest(0, 8))
    tiled = TextureSuperResolver(model, CPU, TileRequest(12, 6))
    lr = torch.rand(1, 3, 29, 37)
    p_whole, p_tiled = whole.estimate_prior(lr), tiled.estimate_prior(lr)
    assert p_whole.shape == (1, 8, 29, 37)
    torch.testing.assert_close(p_tiled, p_whole, rtol=0, atol=1e-5)  # context covers the prior network's reach
    y_whole, y_tiled = whole.super_resolve(lr, p_whole), tiled.super_resolve(lr, p_whole)
    assert y_whole.shape == (1, 3, 116, 148)
    assert psnr_db(y_tiled, y_whole) >= 40.0  # the acceptance bound
    # This small generator reaches less than the tile context, so tiles are exact up to float
    # rounding (without context the blended seams give about 42 dB).
    assert psnr_db(y_tiled, y_whole) >= 100.0
    # The same run through the model's own forward (no tiling, no padding) agrees away from the borders.
    with torch.no_grad():
        direct = model.module(lr)
    assert psnr_db(y_whole[..., 40:-40, 40:-40], direct[..., 40:-40, 40:-40]) > 60


def test_prior_at_hr_size_travels_with_the_tiles() -> None:
    model = resolved()
    tiled = TextureSuperResolver(model, CPU, TileRequest(10, 4))
    whole = TextureSuperResolver(model, CPU, TileRequest(0, 4))
    lr = torch.rand(1, 3, 17, 23)
    g = torch.Generator().manual_seed(0)
    hr_prior = torch.softmax(torch.randn(1, 8, 68, 92, generator=g) * 2, dim=1)
    a, b = whole.super_resolve(lr, hr_prior), tiled.super_resolve(lr, hr_prior)
    assert psnr_db(b, a) >= 40.0
    with torch.no_grad():
        direct = model.module.generator(lr, hr_prior)
    assert psnr_db(a[..., 32:-32, 32:-32], direct[..., 32:-32, 32:-32]) > 60
    # A constant prior is the same at LR and HR size (upsampling changes nothing).
    constant = forced_prior(8, (17, 23), 3)
    torch.testing.assert_close(whole.super_resolve(lr, constant), whole.super_resolve(lr, upsample_prior(constant)), atol=1e-5, rtol=0)
    with pytest.raises(RestoreError, match="prior is"):
        whole.super_resolve(lr, torch.rand(1, 8, 18, 23))
    with pytest.raises(RestoreError, match="categories"):
        whole.super_resolve(lr, torch.rand(1, 5, 17, 23))


def test_forced_and_file_priors(tmp_path: Path) -> None:
    resolver = TextureSuperResolver(resolved(), CPU, TileRequest(0))
    lr = torch.rand(1, 3, 6, 9)
    maps, origin = resolve_prior(resolver, PriorRequest(kind="category", category=2), lr)
    assert origin == "category:2" and maps.shape == (1, 8, 6, 9) and float(maps[0, 2].min()) == 1.0
    maps, _ = resolve_prior(resolver, PriorRequest(kind="uniform"), lr)
    torch.testing.assert_close(maps, torch.full((1, 8, 6, 9), 0.125))
    with pytest.raises(RestoreError, match="category 8 is out of range"):
        resolve_prior(resolver, PriorRequest(kind="category", category=8), lr)
    p = np.random.default_rng(0).random((8, 24, 36))
    np.save(tmp_path / "photo.npy", p / p.sum(axis=0))
    maps, origin = resolve_prior(resolver, PriorRequest(kind="folder", path=tmp_path), lr, tmp_path / "in" / "photo.png")
    assert origin == str(tmp_path / "photo.npy") and maps.shape == (1, 8, 24, 36)
    with pytest.raises(RestoreError, match="does not sum to 1"):
        np.save(tmp_path / "bad.npy", p)
        resolve_prior(resolver, PriorRequest(kind="file", path=tmp_path / "bad.npy"), lr)


def test_images_gray_alpha_and_details() -> None:
    resolver = TextureSuperResolver(resolved(), CPU, TileRequest(0))
    rng = np.random.default_rng(1)
    gray = ImageData(pixels=rng.random((6, 7, 1), dtype=np.float32), alpha=rng.random((6, 7), dtype=np.float32),
                     bit_depth=8, icc_profile=None, exif=None, source_format="png")
    result, details, maps = super_resolve_texture_image(resolver, gray, PriorRequest(kind="category", category=1))
    assert result.pixels.shape == (24, 28, 1) and result.alpha is not None and result.alpha.shape == (24, 28)
    assert details["scale"] == 4 and details["prior"] == "category:1" and details["category_shares"][1] == 1.0
    assert maps.shape == (8, 6, 7)
    colour = ImageData(pixels=np.repeat(gray.pixels, 3, axis=2), alpha=None, bit_depth=8, icc_profile=None, exif=None,
                       source_format="png")
    same, _, _ = super_resolve_texture_image(resolver, colour, PriorRequest(kind="category", category=1))
    np.testing.assert_allclose(result.pixels[..., 0], same.pixels.mean(axis=2), atol=1e-6)


def test_generator_only_and_prior_only_models() -> None:
    generator = resolved("sftgan-generator", {"nf": 8, "nb": 1, "cond_hidden": 8})
    resolver = TextureSuperResolver(generator, CPU, TileRequest(0))
    assert not resolver.has_prior_net
    with pytest.raises(RestoreError, match="no prior network"):
        resolver.estimate_prior(torch.rand(1, 3, 5, 5))
    assert resolver.super_resolve(torch.rand(1, 3, 5, 5), forced_prior(8, (5, 5), 0)).shape == (1, 3, 20, 20)
    with pytest.raises(RestoreError, match="prior network only"):
        TextureSuperResolver(resolved("sftgan-prior", {"nf": 4, "nb": 1}), CPU)


def test_dispatch_reads_the_architecture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = resolved()
    save_file(model.module.state_dict(), str(tmp_path / "s.safetensors"), metadata={"arch": "sftgan", "config": json.dumps(SMALL)})
    usr = build_model("usrnet", {"n_iter": 1, "h_nc": 4, "nc": (4, 4, 4, 4), "nb": 1})
    save_file(usr.state_dict(), str(tmp_path / "u.safetensors"), metadata={"arch": "usrnet"})
    assert texture_architecture(None, tmp_path / "s.safetensors") == "sftgan"
    assert texture_architecture(None, tmp_path / "u.safetensors") is None
    assert texture_architecture(None, tmp_path / "missing.safetensors") is None
    assert texture_architecture(None, None) is None
    store = tmp_path / "store"
    store.mkdir()
    (store / "s.safetensors").write_bytes((tmp_path / "s.safetensors").read_bytes())
    add_manifest_entry(ModelEntry(name="sftgan", file="s.safetensors", sha256=sha256_file(store / "s.safetensors"),
                                  arch="sftgan", config=SMALL, task="sr-texture", scales=[4]), store)
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(store))
    assert texture_architecture("sftgan", None) == "sftgan"
    with pytest.raises(RestoreError, match="unknown model"):
        texture_architecture("nope", None)
