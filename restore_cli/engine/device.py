"""Device and precision selection, validated once at the edge.

`--device auto` takes CUDA when present, else the CPU. `--precision auto` takes bf16 (or fp16
where bf16 is unsupported) on CUDA. On the CPU it takes bf16 only where the processor has native
bf16 instructions (AVX512-BF16 or AMX) and the manifest records a PSNR loss of the model against
fp32 below `CPU_BF16_MAX_LOSS_DB`; otherwise fp32. Measured on an AVX2-only EPYC, bf16 autocast
made convolutions 3-10x slower while channels_last alone made fp32 1.7x faster, so channels_last
is always used. Half precision (fp16) is never used on the CPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Literal

import torch

from restore_cli.errors import RestoreError

DeviceSpec = str  # "auto" | "cpu" | "cuda" | "cuda:N"
PrecisionSpec = Literal["auto", "fp32", "bf16", "fp16"]

CPU_BF16_MAX_LOSS_DB = 0.05

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Placement:
    """Where and how a model runs: device and autocast dtype (None = plain fp32); models and
    inputs always use the channels_last memory format."""

    device: torch.device
    precision: Literal["fp32", "bf16", "fp16"]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.precision == "fp32" else _DTYPES[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def describe(self) -> str:
        return f"{self.device} {self.precision} channels_last"


def select_device(spec: DeviceSpec = "auto") -> torch.device:
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RestoreError(f"--device {spec}: CUDA is not available (this torch build or machine has no usable GPU)")
        index = 0 if spec == "cuda" else spec.split(":", 1)[1]
        try:
            index = int(index)
        except ValueError:
            raise RestoreError(f"--device {spec}: expected cuda:N with an integer N") from None
        if not 0 <= index < torch.cuda.device_count():
            raise RestoreError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(f"cuda:{index}")
    raise RestoreError(f"--device {spec}: expected auto, cpu, cuda or cuda:N")


def select_precision(spec: PrecisionSpec, device: torch.device, cpu_bf16_loss_db: float | None = None) -> Placement:
    """Resolve `--precision`; `cpu_bf16_loss_db` is the model's measured PSNR loss of bf16 vs fp32."""
    if spec not in ("auto", "fp32", "bf16", "fp16"):
        raise RestoreError(f"--precision {spec}: expected auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        if spec == "auto":
            spec = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Placement(device, spec)  # type: ignore[arg-type]
    if spec == "fp16":
        raise RestoreError("--precision fp16 is not supported on the CPU (use bf16 or fp32)")
    if spec == "auto":
        ok = cpu_has_native_bf16() and cpu_bf16_loss_db is not None and cpu_bf16_loss_db < CPU_BF16_MAX_LOSS_DB
        spec = "bf16" if ok else "fp32"
    return Placement(device, spec)  # type: ignore[arg-type]


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: where bf16 convolutions can beat fp32 on the CPU."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM or a failed CPU allocation."""
    if isinstance(exc, torch.OutOfMemoryError) or isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                               or "not enough memory" in text)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory for activations on `device` (CUDA: free device memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


@contextlib.contextmanager
def inference_mode() -> Iterator[None]:
    with torch.inference_mode():
        yield
