"""The training loop: learning, exact resume, clean stops, prior initialisation, configuration."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy import ndimage

from restore_cli.errors import RestoreError
from restore_cli.train.run_loop import learning_rate_at
from restore_cli.train.trainer import (
    TrainConfig,
    build_training_model,
    initialise_model,
    load_init_weights,
    run_training,
)

TINY_DENOISER = {"nc": [8, 16, 16, 16], "nb": 1}
TINY_USRNET = {"nc": [8, 16, 16, 16], "nb": 1, "n_iter": 2, "h_nc": 8}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one intra-op thread, and stay fast when the machine is busy
    (two OpenMP threads on a loaded 2-core machine were measured 10× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_smooth_images(folder: Path, count: int = 4, size: int = 48, seed: int = 0) -> Path:
    """Smooth colour images (an easy, learnable target) as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        a = ndimage.gaussian_filter(rng.random((size, size, 3)), (3, 3, 0))
        a = (a - a.min()) / (a.max() - a.min())
        Image.fromarray(np.rint(a * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def tiny_config(task: str, data: Path, output: Path, **overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        task=task, data=(data,), output=output, batch=4, lr=2e-3, milestones=(1000,), checkpoint_every=10**6, log_every=5
    )
    if task == "denoiser":
        base.update(arch_config=TINY_DENOISER, patch=16)
    else:
        base.update(arch_config=TINY_USRNET, patch=24, scales=(1, 2))
    base.update(overrides)
    return TrainConfig(**base)


@pytest.mark.parametrize("task", ["denoiser", "usrnet"])
def test_short_run_lowers_the_loss(tmp_path: Path, task: str) -> None:
    data = write_smooth_images(tmp_path / "data")
    config = tiny_config(task, data, tmp_path / "run", steps=60, milestones=(10**6,), seed=3)
    result = run_training(config)
    losses = np.array(result.losses)
    assert result.reason == "completed" and result.step == 60 and len(losses) == 60
    assert losses[-10:].mean() < 0.6 * losses[:10].mean()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(5, 61, 5))
    assert all(r["steps_per_s"] > 0 and r["lr"] == pytest.approx(2e-3) for r in train)


def all_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    model = load_file(str(checkpoint / "model.safetensors"))
    optimizer = load_file(str(checkpoint / "optimizer.safetensors"))
    return {**{f"model.{k}": v for k, v in model.items()}, **{f"opt.{k}": v for k, v in optimizer.items()}}


@pytest.mark.parametrize(
    ("task", "precision", "prefetch"),
    [("denoiser", "fp32", 0), ("usrnet", "fp32", 0), ("usrnet", "bf16", 0), ("denoiser", "fp32", 3)],
)
def test_resume_is_bit_exact(tmp_path: Path, task: str, precision: str, prefetch: int) -> None:
    data = write_smooth_images(tmp_path / "data", count=3, size=32)
    common = dict(milestones=(6,), sfm_rate=0.5, val=data, val_every=3, seed=5, precision=precision, prefetch=prefetch)
    straight = run_training(tiny_config(task, data, tmp_path / "a", steps=8, **common))
    first = run_training(tiny_config(task, data, tmp_path / "b", steps=4, **common))
    assert first.step == 4 and first.checkpoint is not None and first.checkpoint.name == "ckpt-0000004"
    resumed = run_training(tiny_config(task, data, tmp_path / "b", steps=8, resume=tmp_path / "b", **common))
    assert resumed.step == 8 and len(resumed.losses) == 4
    assert resumed.losses == straight.losses[4:] and all(np.isfinite(straight.losses))
    a, b = all_tensors(straight.checkpoint), all_tensors(resumed.checkpoint)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert torch.equal(a[key], b[key]), key
    state_a = json.loads((straight.checkpoint / "state.json").read_text())
    state_b = json.loads((resumed.checkpoint / "state.json").read_text())
    assert state_a["rng"] == state_b["rng"]
    # The log of the resumed run continues the first one without duplicate steps.
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [4, 5, 8]


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_a_used_folder(tmp_path: Path) -> None:
    data = write_smooth_images(tmp_path / "data", count=2, size=32)
    run_training(tiny_config("denoiser", data, tmp_path / "run", steps=2))
    with pytest.raises(RestoreError, match="lr"):
        run_training(tiny_config("denoiser", data, tmp_path / "run", steps=4, lr=1e-3, resume=tmp_path / "run"))
    with pytest.raises(RestoreError, match="milestones .* as step numbers"):
        run_training(tiny_config("denoiser", data, tmp_path / "run", steps=4, milestones=(0.5,), resume=tmp_path / "run"))
    with pytest.raises(RestoreError, match="already holds a training run"):
        run_training(tiny_config("denoiser", data, tmp_path / "run", steps=4))
    write_smooth_images(tmp_path / "other", count=2, size=32, seed=9)
    with pytest.raises(RestoreError, match="training images differ"):
        run_training(tiny_config("denoiser", tmp_path / "other", tmp_path / "run", steps=4, resume=tmp_path / "run"))


class InterruptAt:
    """Observer that sends this process SIGINT after a given step, as Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.records: list[dict[str, Any]] = []

    def on_start(self, info: Any) -> None:
        pass

    def on_step(self, step: int, loss: float) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)

    def on_record(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def on_finish(self, result: Any) -> None:
        pass


def test_ctrl_c_and_time_limit_stop_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    data = write_smooth_images(tmp_path / "data", count=2, size=32)
    previous = signal.getsignal(signal.SIGINT)
    observer = InterruptAt(3)
    result = run_training(tiny_config("denoiser", data, tmp_path / "int", steps=50), observer)
    assert result.reason == "interrupted" and result.step == 3
    assert result.checkpoint == tmp_path / "int" / "ckpt-0000003"
    assert {"kind": "checkpoint", "step": 3, "path": str(result.checkpoint)} in observer.records
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is removed again

    result = run_training(tiny_config("denoiser", data, tmp_path / "time", steps=50, time_limit=1e-6))
    assert result.reason == "time_limit" and result.step == 1
    assert (tmp_path / "time" / "latest").read_text().strip() == "ckpt-0000001"


def test_learning_rate_follows_multistep_lr() -> None:
    # Independent statement: torch's MultiStepLR stepped once per optimizer step.
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 5], gamma=0.5)
    for step in range(8):
        assert learning_rate_at(step, 0.1, (3, 5), 0.5) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        scheduler.step()
    config = TrainConfig(task="denoiser", data=("x",), output="o", steps=1000, milestones=(0.5, 0.75, 900))
    assert config.resolved_milestones() == (500, 750, 900)


def save_denoiser(path: Path, channels: int, config: dict[str, Any] = TINY_DENOISER, seed: int = 0) -> torch.nn.Module:
    from restore_cli.models.architectures import build_model

    torch.manual_seed(seed)
    denoiser = build_model("resunet-denoiser", {"channels": channels, **config})
    save_file({k: v.contiguous() for k, v in denoiser.state_dict().items()}, str(path), metadata={"arch": "resunet-denoiser"})
    return denoiser


def test_init_prior_loads_a_denoiser_into_the_usrnet_prior(tmp_path: Path) -> None:
    path = tmp_path / "dn.safetensors"
    denoiser = save_denoiser(path, 3)
    config = tiny_config("usrnet", tmp_path, tmp_path / "run", init_weights=path)
    model = build_training_model(config)
    assert load_init_weights(model, config) == "exact"
    for key, value in denoiser.state_dict().items():
        assert torch.equal(model.p.state_dict()[key], value)

    save_denoiser(path, 3, {"nc": [8, 16, 16, 32], "nb": 1})
    with pytest.raises(RestoreError, match="--init does not fit"):
        load_init_weights(build_training_model(config), config)
    (tmp_path / "h.safetensors").write_bytes(b"")
    with pytest.raises(RestoreError, match="h.safetensors"):
        load_init_weights(build_training_model(config), tiny_config("usrnet", tmp_path, tmp_path / "run", init_weights=tmp_path / "h.safetensors"))


def test_init_from_a_usrnet_file_fine_tunes_prior_and_h(tmp_path: Path) -> None:
    from restore_cli.models.architectures import build_model

    torch.manual_seed(5)
    source = build_model("usrnet", {"in_nc": 4, "out_nc": 3, **TINY_USRNET})
    path = tmp_path / "usrnet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path), metadata={"arch": "usrnet"})
    config = tiny_config("usrnet", tmp_path, tmp_path / "run", init_weights=path)
    model = build_training_model(config)
    assert load_init_weights(model, config) == "exact"
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    with pytest.raises(RestoreError, match="--init-hyper dpir would replace the H"):
        load_init_weights(build_training_model(config), tiny_config("usrnet", tmp_path, tmp_path / "run", init_weights=path, init_hyper="dpir"))
    wider = tiny_config("usrnet", tmp_path, tmp_path / "run", init_weights=path, arch_config={**TINY_USRNET, "h_nc": 16})
    with pytest.raises(RestoreError, match=r"--init does not fit .* of another shape"):
        load_init_weights(build_training_model(wider), wider)


@pytest.mark.parametrize(("source", "target"), [(3, 1), (1, 3)])
def test_init_converts_between_colour_and_gray_exactly_on_gray_images(tmp_path: Path, source: int, target: int) -> None:
    # Gray from colour: D_gray(x) = mean_c D_rgb([x, x, x]); colour from gray: D_rgb([x, x, x]) = D_gray(x) per channel.
    path = tmp_path / "dn.safetensors"
    old = save_denoiser(path, source, seed=5).eval()
    config = tiny_config("denoiser", tmp_path, tmp_path / "run", channels=target, init_weights=path)
    new = build_training_model(config).eval()
    assert load_init_weights(new, config) == "converted"
    gray = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if source == 3:
            want = old(gray.expand(-1, 3, -1, -1), 0.1).mean(dim=1, keepdim=True)
            got = new(gray, 0.1)
        else:
            want = old(gray, 0.1).expand(-1, 3, -1, -1)
            got = new(gray.expand(-1, 3, -1, -1), 0.1)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, gray.expand_as(got), atol=1e-2)  # the network does something


def test_dpir_schedule_and_the_fitted_hyper_network(tmp_path: Path) -> None:
    from restore_cli.train.init import hyper_schedule

    sigma = torch.tensor([0.0, 7.65 / 255, 25 / 255, 0.0])
    scale = torch.tensor([2.0, 3.0, 1.0, 4.0])
    alpha, level = hyper_schedule(sigma, scale, 8)
    # Independent statement: levels geometric from 49/255 to max(s, 255σ)/255, α = 0.23 max(σ, 1/255)²/level².
    for i in range(4):
        last = max(float(scale[i]), 255 * float(sigma[i])) / 255
        want = np.geomspace(49 / 255, last, 8)
        assert np.allclose(level[i].numpy(), want, rtol=1e-9)
        assert np.allclose(alpha[i].numpy(), 0.23 * max(float(sigma[i]), 1 / 255) ** 2 / want**2, rtol=1e-9)
    config = tiny_config("usrnet", tmp_path, tmp_path / "run", arch_config={**TINY_USRNET, "n_iter": 4, "h_nc": 32}, scales=(1, 2, 3), init_hyper="dpir")
    model = build_training_model(config)
    before_alpha, _ = model.hyper_parameters(7.65 / 255, 3)
    initialise_model(model, config)
    with torch.no_grad():
        got_alpha, got_beta = model.hyper_parameters(torch.tensor([[7.65 / 255], [25 / 255]]), 3, n=2)
    want_alpha, want_beta = hyper_schedule(torch.tensor([7.65 / 255, 25 / 255]), torch.tensor([3.0, 3.0]), 4)
    assert torch.allclose(got_beta.flatten(1).double(), want_beta, rtol=0.35)
    assert torch.allclose(got_alpha.flatten(1).double(), want_alpha, rtol=0.35)
    assert not torch.allclose(before_alpha.flatten(1).double(), want_alpha[:1], rtol=0.35)


def test_freeze_prior_trains_only_the_hyper_network(tmp_path: Path) -> None:
    data = write_smooth_images(tmp_path / "data")
    path = tmp_path / "dn.safetensors"
    denoiser = save_denoiser(path, 3)
    config = tiny_config("usrnet", data, tmp_path / "run", steps=6, init_weights=path, freeze_prior=True, checkpoint_every=6)
    run_training(config)
    weights = load_file(str(tmp_path / "run" / "ckpt-0000006" / "model.safetensors"))
    for key, value in denoiser.state_dict().items():
        assert torch.equal(weights[f"p.{key}"], value), key
    fresh = build_training_model(config).state_dict()
    changed = [k for k in fresh if k.startswith("h.") and not torch.equal(fresh[k], weights[k])]
    assert changed, "H did not move"


def test_export_records_the_init_weights_and_their_history_across_a_resume(tmp_path: Path) -> None:
    """--init-prior from a weights store: the export names that file's sha256 and nests its own
    training record, read when the run started, even after the file was replaced and the run resumed."""
    from restore_cli.engine.weights import ModelEntry, add_manifest_entry, sha256_file
    from restore_cli.train.export import export_checkpoint

    data = write_smooth_images(tmp_path / "data")
    store = tmp_path / "store"
    store.mkdir()
    path = store / "dn.safetensors"
    save_denoiser(path, 3)
    sha = sha256_file(path)
    add_manifest_entry(ModelEntry(name="dn", file="dn.safetensors", sha256=sha, arch="resunet-denoiser", config={},
                                  task="denoise", training={"steps": 5, "seed": 9}), store)
    config = tiny_config("usrnet", data, tmp_path / "run", steps=2, init_weights=path, freeze_prior=True)
    run_training(config)
    path.write_bytes(b"replaced")
    run_training(tiny_config("usrnet", data, tmp_path / "run", steps=4, init_weights=path, freeze_prior=True,
                             resume=tmp_path / "run"))
    entry = export_checkpoint(tmp_path / "run", "u", tmp_path / "out").entry
    assert entry.training["steps"] == 4
    assert entry.training["init"] == {"weights": str(path), "sha256": sha, "name": "dn", "training": {"steps": 5, "seed": 9}}


def test_init_record_finds_a_copy_of_a_store_file_in_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weights file copied out of the store (to keep it while the store's file is re-exported) is
    still named by the store's manifest entry with the same sha256; an unknown file gets no name."""
    import shutil

    from restore_cli.engine.weights import ModelEntry, add_manifest_entry, sha256_file
    from restore_cli.train.model_export import weights_record

    store = tmp_path / "store"
    store.mkdir()
    save_denoiser(store / "dn.safetensors", 3)
    sha = sha256_file(store / "dn.safetensors")
    add_manifest_entry(ModelEntry(name="dn", file="dn.safetensors", sha256=sha, arch="resunet-denoiser", config={},
                                  task="denoise", training={"steps": 7}), store)
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(store))
    (tmp_path / "copies").mkdir()
    copy = shutil.copy(store / "dn.safetensors", tmp_path / "copies" / "dn-old.safetensors")
    assert weights_record(copy) == {"weights": str(copy), "sha256": sha, "name": "dn", "training": {"steps": 7}}
    other = tmp_path / "copies" / "other.safetensors"
    save_denoiser(other, 1)
    assert weights_record(other) == {"weights": str(other), "sha256": sha256_file(other)}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"arch_config": {"width": 3}}, "no option 'width'"),
        ({"arch_config": {"channels": 1}}, "set by --channels"),
        ({"arch_config": {"nc": [8, 16]}}, "4 positive integers"),
        ({"arch_config": {"preset": "usrnet-tiny"}}, "unknown resunet-denoiser preset"),
        ({"noise_range": (30, 10)}, "noise-range"),
        ({"milestones": (1.5,)}, "milestones"),
        ({"freeze_prior": True}, "usrnet training only"),
        ({"init_hyper": "dpir"}, "usrnet training only"),
        ({"channels": 2}, "channels"),
    ],
)
def test_bad_settings_are_user_errors(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(RestoreError, match=match):
        TrainConfig(task="denoiser", data=("x",), output="o", **overrides)


def test_usrnet_patch_must_divide_by_every_scale() -> None:
    with pytest.raises(RestoreError, match="not divisible"):
        TrainConfig(task="usrnet", data=("x",), output="o", patch=20, scales=(1, 3))
    config = TrainConfig(task="usrnet", data=("x",), output="o", channels=1, arch_config={"preset": "usrnet-tiny"})
    assert config.model_config()["in_nc"] == 2 and config.model_config()["nc"] == (16, 32, 64, 64)
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_freeze_prior_needs_an_initial_prior() -> None:
    with pytest.raises(RestoreError, match="--freeze-prior needs --init"):
        TrainConfig(task="usrnet", data=("x",), output="o", freeze_prior=True)
