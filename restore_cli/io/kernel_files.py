"""Blur kernels from the command line: generator specs, or .npy / .png / .bmp / .mat files.

`load_kernel(spec)` returns a 2-D float64 kernel summing to 1 and a canonical description for
sidecars and reports. Generator specs (`gaussian:SIGMA`, `aniso:L1,L2,THETA`, `motion:SEED`,
`random:SEED`) are made by `restore_cli.ops.kernels`; everything else is a file:

- `.npy`: a 2-D real array (small negative taps are allowed, as in USRNet's bicubic
  approximations; the sum must be positive);
- `.png` / `.bmp`: a gray image (RGB is converted to gray), normalised to sum 1;
- `.mat`, optionally `file.mat:N` with a 1-based index: MATLAB v5 (scipy) or v7.3/HDF5 (h5py),
  variable `kernels` (a cell array, or a numeric h×w or h×w×N array) or the file's only variable.

`save_kernel` writes .npy (exact) or .png (16-bit gray scaled to max = 65535, so it loses the
absolute scale and quantises small taps; the loader re-normalises to sum 1).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from restore_cli.errors import RestoreError
from restore_cli.io.atomic import atomic_write_bytes

KERNEL_FILE_SUFFIXES: tuple[str, ...] = (".npy", ".png", ".bmp", ".mat")
# A trailing ":<digits>" after ".mat" is an index; any other colon (a Windows drive) is the path's.
_MAT_INDEX = re.compile(r"^(?P<path>.+\.mat):(?P<index>\d+)$", re.IGNORECASE)
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def split_mat_index(spec: str) -> tuple[str, int | None]:
    """("file.mat", 3) for "file.mat:3"; (spec, None) otherwise ("C:\\k\\a.mat" stays whole)."""
    match = _MAT_INDEX.match(spec)
    if match is None:
        return spec, None
    return match.group("path"), int(match.group("index"))


def _validated(kernel: np.ndarray, source: Path, what: str = "kernel") -> np.ndarray:
    """A float64 copy normalised to sum 1; refuses non-2-D, empty, non-finite or sum ≤ 0."""
    array = np.asarray(kernel)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise RestoreError(f"{what} is not a numeric array (dtype {array.dtype})", source)
    if np.iscomplexobj(array):
        raise RestoreError(f"{what} has complex values", source)
    if array.ndim != 2:
        raise RestoreError(f"{what} must be a 2-D array, got shape {array.shape}", source)
    if array.size == 0:
        raise RestoreError(f"{what} is empty", source)
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise RestoreError(f"{what} has non-finite values (NaN or inf)", source)
    total = float(array.sum())
    if not total > 0:
        raise RestoreError(f"{what} sums to {total:g}; a blur kernel must have a positive sum", source)
    return array / total


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise RestoreError(f"not a readable .npy array ({' '.join(str(error).split())})", path) from None
    if isinstance(array, np.lib.npyio.NpzFile):  # np.load accepts .npz content too
        array.close()
        raise RestoreError("is an .npz archive; save the kernel as a single .npy array", path)
    return _validated(array, path)


def _load_image_kernel(path: Path) -> np.ndarray:
    from restore_cli.io.images import read_image

    image = read_image(path, max_pixels=4096 * 4096)
    pixels = image.pixels.astype(np.float64)
    if pixels.shape[2] == 3:
        gray = pixels @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma, as Pillow's "L"
    else:
        gray = pixels[:, :, 0]
    return _validated(gray, path, "kernel image")


def _mat_kernels_v5(path: Path) -> list[np.ndarray]:
    import scipy.io

    try:
        contents = scipy.io.loadmat(str(path))
    except NotImplementedError:  # v7.3: scipy says "use HDF reader"
        return _mat_kernels_hdf5(path)
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError, ...
        raise RestoreError(f"not a readable MATLAB .mat file ({' '.join(str(error).split())})", path) from None
    variables = {name: value for name, value in contents.items() if not name.startswith("__")}
    if "kernels" in variables:
        value = variables["kernels"]
    elif len(variables) == 1:
        value = next(iter(variables.values()))
    else:
        names = ", ".join(sorted(variables)) or "none"
        raise RestoreError(f"has no variable 'kernels' and not exactly one variable (found: {names})", path)
    value = np.asarray(value)
    if value.dtype == object:  # a cell array: MATLAB's linear (column-major) order
        return [np.asarray(cell) for cell in value.ravel(order="F")]
    if value.ndim == 3:  # h×w×N stack
        return [value[:, :, i] for i in range(value.shape[2])]
    return [value]


def _mat_kernels_hdf5(path: Path) -> list[np.ndarray]:
    """Kernels from a MATLAB v7.3 file. HDF5 holds MATLAB arrays transposed (row-major)."""
    try:
        import h5py
    except ImportError:
        raise RestoreError("is a MATLAB v7.3 (HDF5) file; reading it needs h5py (pip install h5py)", path) from None
    try:
        with h5py.File(path, "r") as handle:
            names = [name for name in handle.keys() if not name.startswith("#")]
            if "kernels" in handle:
                name = "kernels"
            elif len(names) == 1:
                name = names[0]
            else:
                found = ", ".join(sorted(names)) or "none"
                raise RestoreError(f"has no variable 'kernels' and not exactly one variable (found: {found})", path)
            dataset = handle[name]
            if not isinstance(dataset, h5py.Dataset):
                raise RestoreError(f"variable '{name}' is not an array or a cell array", path)
            if h5py.check_dtype(ref=dataset.dtype) is not None:
                # A cell array: the transposed HDF5 array in C order is MATLAB's column-major order.
                return [np.asarray(handle[ref][()]).T for ref in np.asarray(dataset[()]).ravel()]
            value = np.asarray(dataset[()])
            if value.ndim == 3:  # MATLAB h×w×N is stored N×w×h
                return [value[i].T for i in range(value.shape[0])]
            return [value.T]
    except RestoreError:
        raise
    except Exception as error:  # OSError for a damaged file, KeyError for a dangling reference
        raise RestoreError(f"not a readable MATLAB v7.3 .mat file ({' '.join(str(error).split())})", path) from None


def read_mat_kernels(path: Path) -> list[np.ndarray]:
    """Every kernel of a MATLAB .mat file (v5 or v7.3) as stored: not validated or normalised
    (benchmark protocols use the stored taps exactly)."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(520)
    if head[512:520] == _HDF5_SIGNATURE or head.startswith(_HDF5_SIGNATURE):
        return _mat_kernels_hdf5(path)
    return _mat_kernels_v5(path)


def _load_mat(path: Path, index: int | None, spec_path: str) -> tuple[np.ndarray, str]:
    kernels = read_mat_kernels(path)
    count = len(kernels)
    if count == 0:
        raise RestoreError("holds no kernels", path)
    if index is None:
        if count > 1:
            raise RestoreError(f"{path.name} has {count} kernels; choose one with {spec_path}:N (N = 1…{count})", path)
        index = 1
    if not 1 <= index <= count:
        raise RestoreError(f"{path.name} has {count} kernels; index {index} is out of range (1…{count})", path)
    kernel = _validated(kernels[index - 1], path, f"kernel {index}")
    description = f"{spec_path}:{index}" if count > 1 else spec_path
    return kernel, description


def _generators() -> tuple[Callable[[str], bool], Callable[[str], tuple[np.ndarray, str]]]:
    """(is_generator_spec, kernel_from_spec) of restore_cli.ops.kernels, imported when needed."""
    from restore_cli.ops import kernels

    return kernels.is_generator_spec, kernels.kernel_from_spec


def load_kernel(spec: str) -> tuple[np.ndarray, str]:
    """A blur kernel (2-D float64, sum 1) and its canonical description, from a spec or a file."""
    spec = str(spec).strip()
    if not spec:
        raise RestoreError("empty kernel spec")
    is_generator_spec, kernel_from_spec = _generators()
    if is_generator_spec(spec):
        try:
            kernel, description = kernel_from_spec(spec)
        except ValueError as error:
            message = " ".join(str(error).split())
            raise RestoreError(message if spec in message else f"kernel spec {spec!r}: {message}") from None
        return np.asarray(kernel, dtype=np.float64), description
    file_part, index = split_mat_index(spec)
    path = Path(file_part)
    suffix = path.suffix.lower()
    if suffix not in KERNEL_FILE_SUFFIXES:
        raise RestoreError(
            f"not a kernel spec or kernel file: {spec!r} (use gaussian:SIGMA, aniso:L1,L2,THETA, "
            "motion:SEED, random:SEED, or a .npy, .png, .bmp or .mat file; .mat files take :N)"
        )
    if not path.exists():
        raise RestoreError("kernel file not found", path)
    if path.is_dir():
        raise RestoreError("is a directory, not a kernel file", path)
    try:
        if suffix == ".mat":
            return _load_mat(path, index, file_part)
        if suffix == ".npy":
            return _load_npy(path), file_part
        return _load_image_kernel(path), file_part
    except PermissionError:
        raise RestoreError("cannot read: permission denied", path) from None


def save_kernel(path: Path, k: np.ndarray) -> None:
    """Write a kernel as .npy (exact, float64) or .png (16-bit gray, max tap = 65535).

    A PNG loses the absolute scale (the loader re-normalises to sum 1) and quantises taps to
    1/65535 of the largest one; it cannot hold negative taps.
    """
    path = Path(path)
    kernel = np.asarray(k, dtype=np.float64)
    if kernel.ndim != 2 or kernel.size == 0 or not np.all(np.isfinite(kernel)):
        raise ValueError(f"a kernel must be a non-empty finite 2-D array, got shape {kernel.shape}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, kernel, allow_pickle=False)
        atomic_write_bytes(path, buffer.getvalue())
    elif suffix == ".png":
        from restore_cli.io.images import ImageData, write_image

        if kernel.min() < 0:
            raise RestoreError("a PNG kernel cannot hold negative taps; save it as .npy", path)
        peak = kernel.max()
        if not peak > 0:
            raise RestoreError("kernel is all zeros", path)
        pixels = (kernel / peak).astype(np.float32)[:, :, None]
        write_image(path, ImageData(pixels, None, 16, None, None, "png"), format="png")
    else:
        raise RestoreError(f"unsupported kernel file type {path.suffix or '(none)'}; use .npy or .png", path)
