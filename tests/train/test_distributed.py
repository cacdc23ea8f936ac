"""Two training processes on the CPU (gloo), started as torchrun would start them (RANK,
WORLD_SIZE, MASTER_ADDR/PORT in the environment): DDP keeps the weights identical."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from restore_cli.train.trainer import TrainConfig, build_training_model

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from restore_cli.train.trainer import TrainConfig, run_training

    torch.set_num_threads(1)
    config = TrainConfig.from_json(json.loads(Path(sys.argv[1]).read_text()))
    result = run_training(config)
    out = Path(sys.argv[2])
    save_file({k: v.contiguous() for k, v in result.model_state.items()}, str(out / f"rank{result.rank}.safetensors"))
    (out / f"rank{result.rank}.json").write_text(json.dumps({"losses": result.losses, "step": result.step}))
    """
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_cpu_processes_keep_identical_weights(tmp_path: Path) -> None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(data / f"{i}.png")
    config = TrainConfig(
        task="denoiser", data=(data,), output=tmp_path / "run", arch_config={"nc": [8, 16, 16, 16], "nb": 1},
        patch=16, batch=2, steps=3, lr=1e-2, milestones=(100,), seed=4,
    )
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_json()))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, str(script), str(config_file), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for proc in procs:
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output.decode(errors="replace")[-3000:]

    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    init = build_training_model(config).state_dict()
    assert w0.keys() == w1.keys() == init.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    assert any(not torch.equal(w0[key], init[key]) for key in w0)
    # Each rank trained on its own patches, so their losses differ; only rank 0 wrote checkpoints.
    l0 = json.loads((tmp_path / "rank0.json").read_text())["losses"]
    l1 = json.loads((tmp_path / "rank1.json").read_text())["losses"]
    assert len(l0) == len(l1) == 3 and l0 != l1
    state = json.loads((tmp_path / "run" / "ckpt-0000003" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["rng"][0] != state["rng"][1]
    saved = load_file(str(tmp_path / "run" / "ckpt-0000003" / "model.safetensors"))
    assert all(torch.equal(saved[key], w0[key]) for key in w0)
