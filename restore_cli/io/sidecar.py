"""JSON sidecars that record how `restore degrade` made an image, so `restore sr --params` can undo it.

A sidecar is a JSON object with `"format": "restore-degradation/1"`, the tool version that wrote
it, and the fields of `DegradationRecord`. The kernel taps are stored too, so that the sidecar
is enough on its own even when the kernel came from a file that later moved. Unknown keys are
ignored on reading (newer writers may add some); missing or mistyped fields are errors.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from restore_cli.errors import RestoreError
from restore_cli.io.atomic import atomic_write_text

SIDECAR_FORMAT = "restore-degradation/1"


@dataclass
class DegradationRecord:
    """How an output was degraded: y = (x ⊗ k)↓s + n, optionally followed by JPEG."""

    scale: int  # down-sampling factor s (1 = blur only)
    kernel: str  # canonical kernel description: generator spec or file path (with :N for .mat)
    kernel_taps: list[list[float]] | None  # the kernel itself, rows of taps (self-contained)
    noise: float  # AWGN σ on the 0–255 scale
    seed: int | None  # noise seed, None if unseeded
    jpeg_quality: float | None  # JPEG quality applied after noise, None if none
    boundary: str  # blur boundary handling, e.g. "wrap", "reflect"
    down: str  # down-sampler, e.g. "direct", "bicubic"
    preset: str | None  # named recipe the values came from, if any
    source: str  # the input image path

    def kernel_array(self) -> np.ndarray | None:
        """The stored taps as a 2-D float64 array, or None if none were stored."""
        return None if self.kernel_taps is None else np.asarray(self.kernel_taps, dtype=np.float64)


def _taps_from_array(taps: Any) -> list[list[float]] | None:
    if taps is None:
        return None
    array = np.asarray(taps, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"kernel_taps must be 2-D, got shape {array.shape}")
    return [[float(v) for v in row] for row in array]


def write_sidecar(path: Path, record: DegradationRecord) -> None:
    """Write `record` as a JSON sidecar (atomically); kernel taps may be given as an array."""
    from restore_cli import __version__

    body = asdict(record)
    body["kernel_taps"] = _taps_from_array(record.kernel_taps)
    document = {"format": SIDECAR_FORMAT, "version": __version__, **body}
    # allow_nan=False: NaN/inf would make the file invalid JSON for other readers.
    # Kernel taps go one row per line; the rest is ordinary indented JSON.
    taps = document.pop("kernel_taps")
    text = json.dumps(document, indent=2, allow_nan=False)
    rows = "null" if taps is None else "[\n" + ",\n".join(
        "    " + json.dumps(row, allow_nan=False) for row in taps) + "\n  ]"
    text = text[:-2] + f',\n  "kernel_taps": {rows}\n}}'
    atomic_write_text(Path(path), text + "\n")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _check(document: dict[str, Any], path: Path) -> DegradationRecord:
    names = [f.name for f in fields(DegradationRecord)]
    missing = [name for name in names if name not in document]
    if missing:
        raise RestoreError(f"sidecar is missing field(s): {', '.join(missing)}", path)

    def bad(name: str, expected: str) -> RestoreError:
        return RestoreError(f"sidecar field '{name}' must be {expected}, got {document[name]!r}", path)

    if not _is_int(document["scale"]) or document["scale"] < 1:
        raise bad("scale", "an integer ≥ 1")
    for name in ("kernel", "boundary", "down", "source"):
        if not isinstance(document[name], str):
            raise bad(name, "a string")
    if document["preset"] is not None and not isinstance(document["preset"], str):
        raise bad("preset", "a string or null")
    if not _is_number(document["noise"]) or document["noise"] < 0:
        raise bad("noise", "a number ≥ 0")
    if document["seed"] is not None and not _is_int(document["seed"]):
        raise bad("seed", "an integer or null")
    quality = document["jpeg_quality"]
    if quality is not None and not (_is_number(quality) and 0 < quality <= 100):
        raise bad("jpeg_quality", "a number in (0, 100] or null")
    taps = document["kernel_taps"]
    if taps is not None:
        rows_ok = isinstance(taps, list) and len(taps) > 0 and all(isinstance(row, list) for row in taps)
        if not rows_ok or len({len(row) for row in taps}) != 1 or len(taps[0]) == 0:
            raise bad("kernel_taps", "a non-empty rectangular list of rows")
        if not all(_is_number(v) for row in taps for v in row):
            raise bad("kernel_taps", "finite numbers")
        if not sum(float(v) for row in taps for v in row) > 0:
            raise RestoreError("sidecar field 'kernel_taps' must have a positive sum", path)
    return DegradationRecord(
        scale=int(document["scale"]),
        kernel=document["kernel"],
        kernel_taps=None if taps is None else [[float(v) for v in row] for row in taps],
        noise=float(document["noise"]),
        seed=document["seed"],
        jpeg_quality=None if quality is None else float(quality),
        boundary=document["boundary"],
        down=document["down"],
        preset=document["preset"],
        source=document["source"],
    )


def read_sidecar(path: Path) -> DegradationRecord:
    """Read and validate a sidecar written by `write_sidecar` (any tool version of this format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RestoreError("sidecar file not found", path) from None
    except IsADirectoryError:
        raise RestoreError("is a directory, not a sidecar file", path) from None
    except UnicodeDecodeError:
        raise RestoreError("sidecar is not UTF-8 text (not a JSON file)", path) from None
    except OSError as error:
        raise RestoreError(f"cannot read: {error.strerror or error}", path) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise RestoreError(f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}", path) from None
    if not isinstance(document, dict):
        raise RestoreError("sidecar must be a JSON object", path)
    found = document.get("format")
    if found != SIDECAR_FORMAT:
        if found is None:
            raise RestoreError(f"not a degradation sidecar (no \"format\": \"{SIDECAR_FORMAT}\")", path)
        raise RestoreError(f"unsupported sidecar format {found!r} (this version reads {SIDECAR_FORMAT})", path)
    return _check(document, path)
