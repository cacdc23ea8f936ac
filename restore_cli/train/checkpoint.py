"""Training checkpoints: a directory per step, nothing pickled.

    OUT/ckpt-0000500/model.safetensors      model tensors (fp32, contiguous)
    OUT/ckpt-0000500/optimizer.safetensors  optimizer state tensors, keyed `state.<param>.<name>`
    OUT/ckpt-0000500/state.json             step, config, optimizer hyper-parameters, RNG states …
    OUT/latest                              text file holding the newest checkpoint's name

A checkpoint is written into a hidden temporary directory and renamed into place, then `latest`
is rewritten atomically, so a crash leaves either the old or the new checkpoint, never half of
one. Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from restore_cli.errors import RestoreError
from restore_cli.io.atomic import atomic_write_text

CHECKPOINT_FORMAT = 1
CHECKPOINT_PREFIX = "ckpt-"
LATEST_NAME = "latest"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
_CHECKPOINT_RE = re.compile(r"^ckpt-(\d+)$")


@dataclass
class Checkpoint:
    """A loaded checkpoint: model tensors, the optimizer's state dict, and the JSON state."""

    path: Path
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:07d}"


# --- optimizer state <-> (tensors, JSON) -----------------------------------------------------


def optimizer_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Split `optimizer.state_dict()` into flat tensors (`state.<param>.<name>`) and the JSON-able
    param groups. Non-tensor per-parameter entries are not expected (Adam has none)."""
    tensors: dict[str, Tensor] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if not isinstance(value, Tensor):
                raise TypeError(f"optimizer state {index}.{name} is not a tensor ({type(value).__name__})")
            tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
    groups = [{key: (list(v) if isinstance(v, tuple) else v) for key, v in group.items()} for group in state_dict["param_groups"]]
    return tensors, groups


def optimizer_from_tensors(tensors: dict[str, Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Inverse of `optimizer_to_tensors`: a dict that `optimizer.load_state_dict` accepts."""
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    param_groups = [{key: (tuple(v) if key == "betas" else v) for key, v in group.items()} for group in groups]
    return {"state": state, "param_groups": param_groups}


# --- random number generator states <-> JSON ---------------------------------------------------


def numpy_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The bit generator's state (a JSON-able dict of ints and strings)."""
    return rng.bit_generator.state


def numpy_rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    bit_generator_cls = getattr(np.random, state["bit_generator"])
    bit_generator = bit_generator_cls()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def torch_rng_state(generator: torch.Generator) -> str:
    """A torch generator's state bytes, base64-encoded."""
    return base64.b64encode(generator.get_state().numpy().tobytes()).decode("ascii")


def set_torch_rng_state(generator: torch.Generator, encoded: str) -> None:
    data = np.frombuffer(base64.b64decode(encoded), dtype=np.uint8).copy()
    generator.set_state(torch.from_numpy(data))


def cuda_rng_state(device: torch.device) -> str:
    return base64.b64encode(torch.cuda.get_rng_state(device).numpy().tobytes()).decode("ascii")


def set_cuda_rng_state(device: torch.device, encoded: str) -> None:
    data = np.frombuffer(base64.b64decode(encoded), dtype=np.uint8).copy()
    torch.cuda.set_rng_state(torch.from_numpy(data), device)


# --- files ---------------------------------------------------------------------------------------


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(output: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in a run folder, oldest first."""
    if not output.is_dir():
        return []
    found = []
    for entry in output.iterdir():
        match = _CHECKPOINT_RE.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def save_checkpoint(
    output: Path,
    step: int,
    model: dict[str, Tensor],
    optimizer: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write OUT/ckpt-<step>/ atomically, point OUT/latest at it, keep the newest `keep`."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    final = output / name
    for stale in output.glob(f".{CHECKPOINT_PREFIX}*.tmp-*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = output / f".{name}.tmp-{os.getpid()}"
    tmp.mkdir()
    model_tensors = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in model.items()}
    opt_tensors, groups = optimizer_to_tensors(optimizer)
    save_file(model_tensors, str(tmp / MODEL_FILE), metadata={"format": f"restore-checkpoint/{CHECKPOINT_FORMAT}"})
    save_file(opt_tensors, str(tmp / OPTIMIZER_FILE))
    payload = {"format": CHECKPOINT_FORMAT, "step": step, **state, "optimizer_param_groups": groups}
    (tmp / STATE_FILE).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    for file in (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE):
        _fsync_path(tmp / file)
    if final.exists():  # the same step saved again (e.g. stopped right after a periodic save)
        stale = output / f".{name}.old-{os.getpid()}"
        os.replace(final, stale)
        os.replace(tmp, final)
        shutil.rmtree(stale)
    else:
        os.replace(tmp, final)
    _fsync_path(output)
    atomic_write_text(output / LATEST_NAME, name + "\n")
    if keep > 0:
        for _, old in list_checkpoints(output)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory, or a run folder whose `latest` names one → the checkpoint path."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    latest = path / LATEST_NAME
    if latest.is_file():
        name = latest.read_text(encoding="utf-8").strip()
        target = path / name
        if not (target / STATE_FILE).is_file():
            raise RestoreError(f"'latest' names {name}, which is not a checkpoint", latest)
        return target
    if not path.exists():
        raise RestoreError("checkpoint not found", path)
    raise RestoreError(f"not a checkpoint (no {STATE_FILE}) nor a run folder (no {LATEST_NAME})", path)


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """state.json of a checkpoint (path resolved as in `resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RestoreError(f"cannot read {STATE_FILE} ({exc})", path) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RestoreError(f"unsupported checkpoint format {state.get('format') if isinstance(state, dict) else None!r}", path)
    return state


def read_model_tensors(path: Path) -> dict[str, Tensor]:
    """The model tensors of a checkpoint (path resolved as in `resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    try:
        return load_file(str(path / MODEL_FILE))
    except (SafetensorError, OSError) as exc:
        raise RestoreError(f"cannot read {MODEL_FILE} ({exc})", path) from None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a whole checkpoint (path resolved as in `resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    state = read_checkpoint_state(path)
    model = read_model_tensors(path)
    try:
        opt_tensors = load_file(str(path / OPTIMIZER_FILE))
    except (SafetensorError, OSError) as exc:
        raise RestoreError(f"cannot read {OPTIMIZER_FILE} ({exc})", path) from None
    optimizer = optimizer_from_tensors(opt_tensors, state.pop("optimizer_param_groups"))
    return Checkpoint(path=path, model=model, optimizer=optimizer, state=state)
