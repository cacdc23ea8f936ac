"""`restore models import|list|verify`: pickle state dicts are converted without running code and
give the same outputs as the network they came from; tampered weights fail verification."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from restore_cli.engine.registry import load_weights_file
from restore_cli.engine.weights import ModelEntry, add_manifest_entry, sha256_file
from restore_cli.models.architectures import PRESETS, build_model


class NotATensor:
    def __reduce__(self):  # a pickle that would run code if loaded without weights_only
        return (print, ("pickled code ran",))


def test_import_round_trip_gives_identical_outputs(cli, tmp_path: Path) -> None:
    torch.manual_seed(0)
    arch, config = PRESETS["usrnet-tiny"]
    reference = build_model(arch, config).eval()
    pth = tmp_path / "usrnet_tiny.pth"
    torch.save(reference.state_dict(), pth)
    out = tmp_path / "usrnet_tiny.safetensors"
    code, stdout, stderr = cli("models", "import", pth, "--arch", "usrnet-tiny", "-o", out)
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    imported = load_weights_file(out, "sr").module
    x = torch.rand(1, 3, 12, 16)
    k = torch.rand(1, 1, 7, 7)
    k /= k.sum()
    sigma = torch.full((1, 1, 1, 1), 0.01)
    with torch.inference_mode():
        assert torch.equal(imported(x, k, 2, sigma), reference(x, k, 2, sigma))


def test_import_refuses_code_carrying_pickles(cli, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pth = tmp_path / "evil.pth"
    with open(pth, "wb") as handle:
        pickle.dump({"w": NotATensor()}, handle, protocol=2)
    code, stdout, stderr = cli("models", "import", pth, "--arch", "usrnet-tiny", "-o", tmp_path / "x.safetensors")
    assert code == 2
    assert "pickled code ran" not in stdout + stderr + capsys.readouterr().out
    assert "evil.pth" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()


def test_import_refuses_a_mismatching_architecture(cli, tmp_path: Path) -> None:
    model = build_model("usrnet", {"n_iter": 2, "h_nc": 8, "nc": (8, 8, 8, 8), "nb": 1})
    pth = tmp_path / "small.pth"
    torch.save(model.state_dict(), pth)
    code, _, stderr = cli("models", "import", pth, "--arch", "usrnet-tiny", "-o", tmp_path / "x.safetensors")
    assert code == 2 and "do not match" in stderr
    # The bare architecture name reads the config from the tensor shapes instead.
    code, _, stderr = cli("models", "import", pth, "--arch", "usrnet", "-o", tmp_path / "y.safetensors")
    assert code == 0, stderr


def test_list_and_verify(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path))
    from safetensors.torch import save_file

    config = {"channels": 3, "nc": [8, 8, 8, 8], "nb": 1}
    save_file(build_model("resunet-denoiser", config).state_dict(), str(tmp_path / "d.safetensors"))
    add_manifest_entry(ModelEntry("d", "d.safetensors", sha256_file(tmp_path / "d.safetensors"),
                                  "resunet-denoiser", config, "denoise"), tmp_path)
    code, stdout, _ = cli("models", "list", "--json")
    assert code == 0 and json.loads(stdout)["d"]["arch"] == "resunet-denoiser"
    code, stdout, _ = cli("models", "verify")
    assert code == 0 and stdout.startswith("ok")
    with open(tmp_path / "d.safetensors", "r+b") as handle:
        handle.seek(-2, 2)
        handle.write(b"\x7f\x7f")
    code, stdout, stderr = cli("models", "verify")
    assert code == 1 and "FAILED" in stdout and "sha256 mismatch" in stdout
