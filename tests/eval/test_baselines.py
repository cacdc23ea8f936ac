"""Baselines: which protocol gets which, and that each computes what its definition says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from restore_cli.eval.baselines import BicubicBaseline, InputBaseline, LeastSquaresBaseline, baseline_methods
from restore_cli.eval.degradations import Case
from restore_cli.eval.protocols import build_config
from restore_cli.eval.settings import ProtocolName, Setting
from restore_cli.ops.resize import matlab_imresize
from restore_cli.ops.wiener import alpha_from_sigma


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "a.png")
    np.save(tmp_path / "k.npy", np.ones((3, 3)))
    return folder


@pytest.mark.parametrize(
    "protocol,keys",
    [
        (ProtocolName.denoise, ["input"]),
        (ProtocolName.sfm_sweep, ["input"]),
        (ProtocolName.toolchain, ["input"]),
        (ProtocolName.jpeg, ["input"]),
        (ProtocolName.usrnet_table1, ["bicubic", "least-squares"]),
        (ProtocolName.bicubic_sr, ["bicubic", "least-squares"]),
        (ProtocolName.deblur, ["wiener"]),
    ],
)
def test_each_protocol_gets_its_baselines(data: Path, protocol: ProtocolName, keys: list[str]) -> None:
    kernels = None
    if protocol in (ProtocolName.usrnet_table1, ProtocolName.deblur):
        kernels = data.parent / "k.npy"
    if protocol is ProtocolName.bicubic_sr:
        import scipy.io

        cells = np.empty((1, 3), dtype=object)
        for i in range(3):
            cells[0, i] = np.ones((3, 3)) / 9
        scipy.io.savemat(data.parent / "b.mat", {"kernels": cells})
        kernels = data.parent / "b.mat"
    config = build_config(protocol, data, kernels=kernels, baseline=True)
    assert [m.key for m in baseline_methods(config)] == keys
    assert baseline_methods(build_config(protocol, data, kernels=kernels)) == []


def sr_case(scale: int, sigma: float) -> Case:
    rng = np.random.default_rng(0)
    hr = rng.uniform(0, 1, (3, 12 * scale, 10 * scale))
    g = np.exp(-0.5 * (np.arange(-3, 4) / 1.2) ** 2)
    k = np.outer(g, g) / np.outer(g, g).sum()
    lr = np.stack([ndimage.convolve(c, k, mode="wrap")[::scale, ::scale] for c in hr])
    lr = lr + rng.normal(0, sigma, lr.shape)
    setting = Setting("s", "s", scale=scale, noise=sigma * 255)
    return Case("x", setting, torch.from_numpy(hr * 255), torch.from_numpy(lr)[None].float(), kernel=k,
                scale=scale, sigma=sigma)


def test_input_and_bicubic_baselines() -> None:
    case = sr_case(1, 0.0)
    assert InputBaseline().restore(case) is case.degraded
    assert InputBaseline().save_outputs is False
    case = sr_case(3, 0.0)
    out = BicubicBaseline().restore(case)
    assert out.shape == (1, 3, 36, 30)
    torch.testing.assert_close(out, matlab_imresize(case.degraded.double(), scale=3.0))


def brute_force(case: Case, alpha: float, x0: np.ndarray) -> np.ndarray:
    """argmin ‖y − (x⊛k)↓s‖² + α‖x − x0‖² per channel by a dense solve."""
    _, h, w = case.reference.shape
    s = case.scale
    columns = []
    for j in range(h * w):
        e = np.zeros(h * w)
        e[j] = 1
        columns.append(ndimage.convolve(e.reshape(h, w), case.kernel, mode="wrap")[::s, ::s].ravel())
    a = np.stack(columns, axis=1)
    y = case.degraded[0].double().numpy()
    lhs = a.T @ a + alpha * np.eye(h * w)
    return np.stack([np.linalg.solve(lhs, a.T @ y[c].ravel() + alpha * x0[c].ravel()).reshape(h, w) for c in range(3)])


@pytest.mark.parametrize("scale,sigma", [(1, 7.65 / 255), (2, 0.0)])
def test_least_squares_baseline_solves_its_stated_problem(scale: int, sigma: float) -> None:
    case = sr_case(scale, sigma)
    method = LeastSquaresBaseline(200.0, scale_one=scale == 1)
    assert method.key == ("wiener" if scale == 1 else "least-squares")
    out = method.restore(case)[0].numpy()
    alpha = alpha_from_sigma(sigma, factor=200.0)
    x0 = case.degraded[0].double().numpy() if scale == 1 else matlab_imresize(case.degraded.double(), scale=float(scale))[0].numpy()
    np.testing.assert_allclose(out, brute_force(case, alpha, x0), atol=1e-8)


def test_least_squares_beats_bicubic_on_blurred_input() -> None:
    case = sr_case(2, 0.0)
    ref = case.reference.numpy() / 255
    err_bicubic = np.mean((BicubicBaseline().restore(case)[0].numpy() - ref) ** 2)
    err_ls = np.mean((LeastSquaresBaseline(200.0, scale_one=False).restore(case)[0].numpy() - ref) ** 2)
    assert err_ls < err_bicubic
