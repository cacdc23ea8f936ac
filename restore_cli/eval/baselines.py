"""Baselines: what a user would otherwise do with the degraded image.

- input: the degraded image itself (denoise, sfm-sweep, toolchain, jpeg);
- bicubic: MATLAB-style bicubic upsampling (×s, a = −0.5) of the LR image (SR protocols);
- wiener (s = 1) / least-squares (s > 1): the regularised least-squares solution
  argmin_x ‖y − (x ⊗ k)↓s‖² + α‖x − x₀‖² with the kernel the model is given, circular
  boundaries, x₀ = the input (s = 1) or its bicubic upsampling (s > 1), and
  α = factor · max(σ, 0.5/255)² (`ops.wiener.alpha_from_sigma`). For s = 1 this is a Wiener
  filter with a flat signal prior of mean x₀; for s > 1 it is USRNet's closed-form data step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from restore_cli.eval.degradations import Case
from restore_cli.eval.methods import Method
from restore_cli.eval.settings import EvalConfig, ProtocolName
from restore_cli.ops.resize import matlab_imresize
from restore_cli.ops.wiener import DEFAULT_SIGMA_FLOOR, alpha_from_sigma, regularised_inverse, wiener_deconvolve


class InputBaseline(Method):
    key = "input"
    label = "Input"
    definition = "the degraded input itself (clamped to [0, 1], ×255, rounded)"
    save_outputs = False

    def restore(self, case: Case) -> Tensor:
        return case.degraded


def bicubic_upsample(case: Case) -> Tensor:
    """MATLAB imresize(y, s, 'bicubic') of the LR input, float64, at the reference's size."""
    y = case.degraded.to(torch.float64)
    if case.scale == 1:
        return y
    h, w = case.reference.shape[-2:]
    return matlab_imresize(y, size=(h, w))


class BicubicBaseline(Method):
    key = "bicubic"
    label = "Bicubic"
    definition = "MATLAB imresize(LR, s, 'bicubic') (cubic a = −0.5, float64); no pixel-shift correction"

    def restore(self, case: Case) -> Tensor:
        return bicubic_upsample(case)


class LeastSquaresBaseline(Method):
    """Wiener deconvolution (s = 1) or the closed-form least-squares SR step (s > 1)."""

    def __init__(self, factor: float, scale_one: bool) -> None:
        self.factor = factor
        self.key = "wiener" if scale_one else "least-squares"
        self.label = "Wiener" if scale_one else "Least squares"
        floor = f"{DEFAULT_SIGMA_FLOOR * 255:g}/255"
        self.definition = (
            f"argmin_x ‖y − (x⊗k)↓s‖² + α‖x − x0‖², circular boundaries, kernel as given to the model, "
            f"x0 = {'the input' if scale_one else 'bicubic upsampling of the input'}, "
            f"α = {factor:g}·max(σ, {floor})² (σ on the [0, 1] scale)"
        )

    def restore(self, case: Case) -> Tensor:
        assert case.kernel is not None
        alpha = alpha_from_sigma(case.sigma, factor=self.factor)
        y = case.degraded.to(torch.float64)
        if case.scale == 1:
            return wiener_deconvolve(y, case.kernel, alpha, x0=y)
        return regularised_inverse(y, case.kernel, case.scale, alpha, bicubic_upsample(case))


def baseline_methods(config: EvalConfig) -> list[Method]:
    """The baselines of a protocol (only with --baseline)."""
    if not config.baseline:
        return []
    p = config.protocol
    if p in (ProtocolName.denoise, ProtocolName.sfm_sweep, ProtocolName.toolchain, ProtocolName.jpeg):
        return [InputBaseline()]
    if p in (ProtocolName.usrnet_table1, ProtocolName.bicubic_sr):
        return [BicubicBaseline(), LeastSquaresBaseline(config.alpha_factor, scale_one=False)]
    if p is ProtocolName.deblur:
        return [LeastSquaresBaseline(config.alpha_factor, scale_one=True)]
    if p is ProtocolName.texture_sr:
        return [BicubicBaseline()]
    return []  # pragma: no cover
