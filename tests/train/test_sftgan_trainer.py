"""SFT-GAN training on tiny data: the prior network learns the derived categories, stage 1 and
stage 2 run, stage 2 trains SFT layers at 5× and holds the trunk during warm-up, resume is exact,
and the export loads through the registry."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from scipy import ndimage

from restore_cli.engine.registry import find_entry, load_entry
from restore_cli.engine.weights import load_manifest
from restore_cli.errors import RestoreError
from restore_cli.models.sft import SFTGAN
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.sftgan_data import IGNORE, clusters_of, gan_batch, lr_from_hr
from restore_cli.train.sftgan_config import SftganTrainConfig
from restore_cli.train.sftgan_export import export_sftgan_checkpoint
from restore_cli.train.sftgan_trainer import load_prior_network, run_sftgan_training
from restore_cli.ops.resize import matlab_imresize
from restore_cli.train.data import load_image_set

GENERATOR = {"nf": 8, "nb": 1, "cond_nc": 8, "cond_hidden": 8, "sft_hidden": 8}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_two_textures(folder: Path, count: int = 4, size: int = 64) -> Path:
    """Half flat bluish images, half green noise: two obvious categories."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        if i % 2 == 0:
            a = np.array([0.45, 0.6, 0.85]) + ndimage.gaussian_filter(rng.normal(0, 0.02, (size, size, 3)), (6, 6, 0))
        else:
            a = np.array([0.25, 0.5, 0.15]) + rng.normal(0, 0.15, (size, size, 1))
        Image.fromarray(np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def config(task: str, data: Path, output: Path, **overrides: Any) -> SftganTrainConfig:
    base: dict[str, Any] = dict(task=task, data=(data,), output=output, patch=32, batch=4, steps=4, milestones=(1000,),
                                log_every=2, checkpoint_every=1000, seed=1)
    if task == "sftgan-prior":
        base.update(categories=2, cluster_samples=40, arch_config={"nf": 8, "nb": 2}, lr=1e-2)
    base.update(overrides)
    return SftganTrainConfig(**base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sftgan")
    data = write_two_textures(root / "data")
    prior = run_sftgan_training(config("sftgan-prior", data, root / "prior", steps=40, val=data, val_every=40))
    stage1 = run_sftgan_training(config("sftgan", data, root / "s1", prior_model=root / "prior", arch_config=GENERATOR,
                                        steps=6, lr=2e-3))
    stage2 = run_sftgan_training(config("sftgan", data, root / "s2", stage=2, init=root / "s1", d_nf=4, steps=4,
                                        trunk_warmup=2, val=data, val_every=4, val_max_size=64))
    torch.set_num_threads(before)
    assert prior.step == 40 and stage1.step == 6 and stage2.step == 4
    return {"root": root, "data": data, "prior": root / "prior", "s1": root / "s1", "s2": root / "s2",
            "prior_losses": prior.losses, "s1_losses": stage1.losses, "s2_losses": stage2.losses}  # type: ignore[dict-item]


def log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_prior_network_learns_the_derived_categories(runs: dict[str, Any]) -> None:
    losses = np.array(runs["prior_losses"])
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()
    val = [r for r in log(runs["prior"]) if r["kind"] == "val"][-1]
    assert val["accuracy"] >= 0.9
    prior = load_prior_network(runs["prior"])
    clusters = clusters_of(prior)
    assert clusters.centres.shape == (2, 11) and np.all(np.isfinite(clusters.centres))
    assert not np.allclose(clusters.centres[0], clusters.centres[1])  # the categories are stored with the network
    described = [r for r in log(runs["prior"]) if r["kind"] == "categories"][0]["descriptions"]
    assert len(described) == 2 and described[0].endswith("flat") and "green" in described[1]


def test_stage_one_and_two_train_the_generator(runs: dict[str, Any]) -> None:
    assert all(np.isfinite(runs["s1_losses"])) and all(np.isfinite(runs["s2_losses"]))
    train = [r for r in log(runs["s2"]) if r["kind"] == "train"]
    assert {"pixel", "feature", "gan", "category", "d_real", "d_fake", "d_category"} <= set(train[-1]["losses"])
    val = [r for r in log(runs["s2"]) if r["kind"] == "val"][-1]
    assert np.isfinite(val["psnr"]) and np.isfinite(val["lsd_high"])
    s1 = ckpt.load_checkpoint(runs["s1"])
    s2 = ckpt.load_checkpoint(runs["s2"])
    assert not any(k.startswith("discriminator.") for k in s1.model)
    assert any(k.startswith("discriminator.stages.3") for k in s2.model)
    groups = {g["name"]: g for g in s2.optimizer["param_groups"]}
    assert groups["generator-sft"]["lr"] == pytest.approx(5 * groups["generator-trunk"]["lr"])
    # The prior network is frozen: identical in the prior run, stage 1 and stage 2.
    prior = ckpt.read_model_tensors(runs["prior"])
    for key, value in prior.items():
        assert torch.equal(s1.model[f"prior.{key}"], value) and torch.equal(s2.model[f"prior.{key}"], value), key


def test_stage_two_holds_the_trunk_during_warm_up(runs: dict[str, Any]) -> None:
    out = runs["root"] / "warm"
    run_sftgan_training(config("sftgan", runs["data"], out, stage=2, init=runs["s1"], d_nf=4, steps=2, trunk_warmup=100))
    before, after = ckpt.read_model_tensors(runs["s1"]), ckpt.read_model_tensors(out)
    trunk = [k for k in before if k.startswith("generator.") and "SFT_" not in k and ".CondNet." not in k]
    sft = [k for k in before if "SFT_" in k or ".CondNet." in k]
    assert trunk and sft
    assert all(torch.equal(before[k], after[k]) for k in trunk)
    assert any(not torch.equal(before[k], after[k]) for k in sft)


def test_stage_two_resume_is_bit_exact(runs: dict[str, Any]) -> None:
    data, root = runs["data"], runs["root"]
    common = dict(stage=2, init=runs["s1"], d_nf=4, trunk_warmup=1)
    straight = run_sftgan_training(config("sftgan", data, root / "r-a", steps=4, **common))
    run_sftgan_training(config("sftgan", data, root / "r-b", steps=2, **common))
    resumed = run_sftgan_training(config("sftgan", data, root / "r-b", steps=4, resume=root / "r-b", **common))
    assert resumed.losses == straight.losses[2:]
    a, b = ckpt.load_checkpoint(root / "r-a"), ckpt.load_checkpoint(root / "r-b")
    assert a.model.keys() == b.model.keys()
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    with pytest.raises(RestoreError, match="gan_weight"):
        run_sftgan_training(config("sftgan", data, root / "r-b", steps=6, resume=root / "r-b", gan_weight=1.0, **common))


def test_export_loads_through_the_registry(runs: dict[str, Any]) -> None:
    store = runs["root"] / "store"
    result = export_sftgan_checkpoint(runs["s2"], "sftgan-test", store)
    entry = load_manifest(store)["sftgan-test"]
    assert entry.arch == "sftgan" and entry.task == "sr-texture" and entry.scales == [4]
    assert entry.training["stage"] == 2 and entry.training["losses"]["discriminator_feature_matching"] == 1.0
    assert len(entry.training["categories"]) == 2
    # The record names the stages it came from: stage 1 (from the prior run) and the prior run.
    stage1 = entry.training["init"]
    assert stage1["stage"] == 1 and stage1["losses"] == {"pixel_l1": 1.0}
    assert stage1["prior_model"]["task"] == "sftgan-prior" and stage1["prior_model"]["steps"] > 0
    with safe_open(str(result.weights), framework="pt") as handle:
        keys = list(handle.keys())
        assert handle.metadata()["arch"] == "sftgan"
    assert keys and not any(k.startswith("discriminator.") for k in keys)
    model = load_entry(find_entry("sftgan-test", store), store)
    assert isinstance(model.module, SFTGAN)
    checkpoint = ckpt.read_model_tensors(runs["s2"])
    for key, value in model.module.state_dict().items():
        assert torch.equal(value, checkpoint[key]), key
    with torch.no_grad():
        assert model.module(torch.rand(1, 3, 6, 5)).shape == (1, 3, 24, 20)
    prior = export_sftgan_checkpoint(runs["prior"], "sftgan-prior-test", store)
    assert prior.entry.arch == "sftgan-prior" and load_entry(find_entry("sftgan-prior-test", store), store).arch == "sftgan-prior"
    with pytest.raises(RestoreError, match="already exists"):
        export_sftgan_checkpoint(runs["s2"], "sftgan-test", store)
    # The generic `restore train export` entry point dispatches SFT-GAN runs here too.
    from restore_cli.train.export import export_checkpoint

    generic = export_checkpoint(runs["s2"], "sftgan-generic", store)
    assert generic.entry.arch == "sftgan" and generic.entry.sha256 != ""
    # An exported model initialises a further stage-2 run.
    run_sftgan_training(config("sftgan", runs["data"], runs["root"] / "from-file", stage=2, init=result.weights, d_nf=4, steps=1))


def test_batches_lr_and_patch_categories(runs: dict[str, Any]) -> None:
    images = load_image_set([runs["data"]], 3, min_size=32)
    prior = load_prior_network(runs["prior"])
    batch = gan_batch(images, 6, 32, np.random.default_rng(0), clusters_of(prior))
    assert batch.lr.shape == (6, 3, 8, 8) and batch.hr.shape == (6, 3, 32, 32)
    expected = torch.round(matlab_imresize(batch.hr.double(), scale=0.25).clamp(0, 1) * 255) / 255
    torch.testing.assert_close(batch.lr, expected.float())
    torch.testing.assert_close(lr_from_hr(batch.hr), batch.lr)
    assert set(batch.category.tolist()) <= {0, 1, IGNORE}
    flat = batch.hr.std(dim=(2, 3)).mean(dim=1) < 0.05
    assert 0 < int(flat.sum()) < 6
    flat_categories = {int(c) for c, f in zip(batch.category, flat) if f}
    noisy_categories = {int(c) for c, f in zip(batch.category, flat) if not f}
    assert len(flat_categories) == len(noisy_categories) == 1 and flat_categories != noisy_categories


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(task="sftgan"), "give --prior-model"),
        (dict(task="sftgan", prior_model="p", init="i"), "do not combine"),
        (dict(task="sftgan-prior", init="i"), "apply to `train sftgan` only"),
        (dict(task="sftgan-prior", patch=40), "multiple of 16"),
        (dict(task="sftgan-prior", cluster_samples=5), "at least 10 per category"),
        (dict(task="sftgan", prior_model="p", arch_config={"nc": 4}), "no option 'nc'"),
        (dict(task="sftgan", prior_model="p", arch_config={"preset": "usrnet"}), "unknown sftgan preset"),
        (dict(task="sftgan", prior_model="p", stage=3), "--stage must be 1 or 2"),
    ],
)
def test_config_errors(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = dict(data=(tmp_path,), output=tmp_path / "o")
    values.update(overrides)
    with pytest.raises(RestoreError, match=message):
        SftganTrainConfig(**values)


def test_defaults_follow_the_recipe(tmp_path: Path) -> None:
    stage2 = SftganTrainConfig(task="sftgan", data=(tmp_path,), output=tmp_path, stage=2, init=tmp_path, steps=600_000,
                               trunk_warmup=20_000)
    assert stage2.lr == 1e-4 and stage2.d_lr == 1e-4 and stage2.sft_lr_factor == 5.0 and stage2.warmup_steps() == 20_000
    assert stage2.gan_weight == 5e-3 and stage2.category_weight == 5e-3 and stage2.patch == 96 and stage2.batch == 16
    assert SftganTrainConfig(task="sftgan", data=(tmp_path,), output=tmp_path, prior_model=tmp_path).lr == 2e-4
    small = SftganTrainConfig(task="sftgan", data=(tmp_path,), output=tmp_path, prior_model=tmp_path, arch_config={"preset": "sftgan-small"})
    assert small.generator_config(8)["nf"] == 32 and small.generator_config(8)["nb"] == 8


WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from restore_cli.train.sftgan_config import SftganTrainConfig
    from restore_cli.train.sftgan_trainer import run_sftgan_training

    torch.set_num_threads(1)
    config = SftganTrainConfig.from_json(json.loads(Path(sys.argv[1]).read_text()))
    result = run_sftgan_training(config)
    save_file({k: v.contiguous() for k, v in result.model_state.items()}, str(Path(sys.argv[2]) / f"rank{result.rank}.safetensors"))
    """
)


@pytest.mark.slow  # two processes start torch (about 10 s on 2 cores); run with -m slow
def test_stage_two_with_two_processes_keeps_identical_weights(runs: dict[str, Any], tmp_path: Path) -> None:
    """DDP on the CPU (gloo), started as torchrun would: generator and discriminator parameters stay
    identical across processes (BatchNorm running statistics are per process between steps)."""
    from safetensors.torch import load_file

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    cfg = config("sftgan", runs["data"], tmp_path / "run", stage=2, init=runs["s1"], d_nf=4, steps=2, batch=2, trunk_warmup=1)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_json()))
    (tmp_path / "worker.py").write_text(WORKER)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    repo = Path(__file__).resolve().parents[2]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "config.json"), str(tmp_path)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for proc in procs:
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output.decode(errors="replace")[-3000:]
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    parameters = [k for k in w0 if "running_" not in k and "num_batches_tracked" not in k]
    assert any(k.startswith("discriminator.") for k in parameters) and any(k.startswith("generator.") for k in parameters)
    for key in parameters:
        assert torch.equal(w0[key], w1[key]), key
    start = ckpt.read_model_tensors(runs["s1"])
    assert not torch.equal(w0["generator.sft_branch.0.sft0.SFT_scale_conv1.weight"], start["generator.sft_branch.0.sft0.SFT_scale_conv1.weight"])


def test_export_keeps_the_record_of_the_stage_one_it_started_from(runs: dict[str, Any]) -> None:
    """The init record is read when stage 2 starts and carried by its checkpoints: resuming and
    exporting after the stage-1 run was trained on (or removed) still names the stage 1 it started from."""
    data, root = runs["data"], runs["root"]
    source = root / "s1-moving"
    shutil.copytree(runs["s1"], source)
    common = dict(stage=2, init=source, d_nf=4, trunk_warmup=1)
    run_sftgan_training(config("sftgan", data, root / "carried", steps=1, **common))
    shutil.rmtree(source)
    run_sftgan_training(config("sftgan", data, root / "carried", steps=2, resume=root / "carried", **common))
    entry = export_sftgan_checkpoint(root / "carried", "carried", root / "carried-store").entry
    stage1 = entry.training["init"]
    assert "unavailable" not in stage1
    assert stage1["stage"] == 1 and stage1["steps"] == 6
    assert stage1["prior_model"]["task"] == "sftgan-prior" and stage1["prior_model"]["steps"] == 40
    assert entry.training["steps"] == 2
