from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from restore_cli.errors import RestoreError
from restore_cli.io import kernel_files
from restore_cli.io.kernel_files import load_kernel, save_kernel, split_mat_index

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
KERNELS = SHARED / "datasets" / "kernels"


def _shared_kernels() -> Path:
    if not KERNELS.is_dir():
        pytest.skip(f"../shared not found: {KERNELS}")
    return KERNELS


def _asymmetric(h: int, w: int, seed: int) -> np.ndarray:
    """A non-negative kernel with no symmetry, so that a transposition or flip would show."""
    k = np.random.default_rng(seed).random((h, w))
    k[0, -1] += 5.0
    return k


# ------------------------------------------------------------------------------------------
# .npy and image files


def test_npy_round_trip_and_normalisation(tmp_path: Path) -> None:
    k = _asymmetric(7, 5, 0)
    save_kernel(tmp_path / "k.npy", k)
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"), k)  # stored exactly, not normalised
    loaded, description = load_kernel(str(tmp_path / "k.npy"))
    assert description == str(tmp_path / "k.npy") and loaded.dtype == np.float64
    np.testing.assert_allclose(loaded, k / k.sum(), rtol=1e-15)


def test_npy_allows_small_negative_taps(tmp_path: Path) -> None:
    k = np.full((5, 5), 0.05)
    k[0, 0] = -0.01  # like USRNet's bicubic approximations
    np.save(tmp_path / "neg.npy", k)
    loaded, _ = load_kernel(str(tmp_path / "neg.npy"))
    assert loaded.min() < 0 and loaded.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "array,message",
    [
        (np.zeros((3, 3)), "positive sum"),
        (-np.ones((3, 3)), "positive sum"),
        (np.array([[1.0, np.nan], [1.0, 1.0]]), "non-finite"),
        (np.ones((3, 3, 3)), "2-D"),
        (np.ones(5), "2-D"),
        (np.ones((0, 3)), "empty"),
        (np.ones((2, 2), dtype=complex), "complex"),
    ],
)
def test_npy_bad_content(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(RestoreError, match=message) as info:
        load_kernel(str(path))
    assert info.value.path == str(path)


def test_npy_not_an_array(tmp_path: Path) -> None:
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(RestoreError, match="not a readable .npy") as info:
        load_kernel(str(tmp_path / "junk.npy"))
    assert "junk.npy" in str(info.value)


def test_png_round_trip_is_16_bit_and_renormalised(tmp_path: Path) -> None:
    k = _asymmetric(9, 11, 1)
    save_kernel(tmp_path / "k.png", k)
    with Image.open(tmp_path / "k.png") as im:  # Pillow: 16-bit gray, max tap 65535
        stored = np.asarray(im).astype(np.int64)
    assert stored.max() == 65535
    np.testing.assert_array_equal(stored, np.rint(k / k.max() * 65535).astype(np.int64))
    loaded, _ = load_kernel(str(tmp_path / "k.png"))
    np.testing.assert_allclose(loaded, k / k.sum(), atol=1e-6)


def test_rgb_image_kernel_is_converted_to_gray(tmp_path: Path) -> None:
    gray = (_asymmetric(5, 6, 2) * 30).astype(np.uint8)
    Image.fromarray(np.dstack([gray] * 3)).save(tmp_path / "k.bmp")
    loaded, _ = load_kernel(str(tmp_path / "k.bmp"))
    np.testing.assert_allclose(loaded, gray / gray.sum(), atol=1e-7)


def test_black_image_and_negative_png_are_refused(tmp_path: Path) -> None:
    Image.new("L", (5, 5)).save(tmp_path / "black.png")
    with pytest.raises(RestoreError, match="positive sum"):
        load_kernel(str(tmp_path / "black.png"))
    with pytest.raises(RestoreError, match="negative taps"):
        save_kernel(tmp_path / "neg.png", np.array([[1.0, -0.1]]))
    with pytest.raises(RestoreError, match="use .npy or .png"):
        save_kernel(tmp_path / "k.txt", np.ones((3, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["black.png"]


# ------------------------------------------------------------------------------------------
# .mat files


def test_mat_v5_cell_array_and_indices(tmp_path: Path) -> None:
    kernels = [_asymmetric(5, 5, 3), _asymmetric(7, 3, 4), _asymmetric(9, 9, 5)]
    cells = np.empty((1, 3), dtype=object)
    for i, k in enumerate(kernels):
        cells[0, i] = k
    path = tmp_path / "set.mat"
    scipy.io.savemat(path, {"kernels": cells})
    for i, k in enumerate(kernels, start=1):
        loaded, description = load_kernel(f"{path}:{i}")
        assert description == f"{path}:{i}"
        np.testing.assert_allclose(loaded, k / k.sum(), rtol=1e-12)
    with pytest.raises(RestoreError, match=r"set.mat has 3 kernels; index 4 is out of range"):
        load_kernel(f"{path}:4")
    with pytest.raises(RestoreError, match=r"index 0 is out of range"):
        load_kernel(f"{path}:0")
    with pytest.raises(RestoreError, match=r"set.mat has 3 kernels; choose one"):
        load_kernel(str(path))


def test_mat_v5_single_array_and_stack(tmp_path: Path) -> None:
    k = _asymmetric(6, 4, 6)
    scipy.io.savemat(tmp_path / "one.mat", {"blur": k})
    loaded, description = load_kernel(str(tmp_path / "one.mat"))
    assert description == str(tmp_path / "one.mat")
    np.testing.assert_allclose(loaded, k / k.sum(), rtol=1e-12)
    stack = np.dstack([_asymmetric(5, 5, 7), _asymmetric(5, 5, 8)])  # h×w×N
    scipy.io.savemat(tmp_path / "stack.mat", {"kernels": stack})
    loaded, _ = load_kernel(f"{tmp_path / 'stack.mat'}:2")
    np.testing.assert_allclose(loaded, stack[:, :, 1] / stack[:, :, 1].sum(), rtol=1e-12)
    scipy.io.savemat(tmp_path / "two.mat", {"a": k, "b": k})
    with pytest.raises(RestoreError, match="no variable 'kernels'"):
        load_kernel(str(tmp_path / "two.mat"))
    (tmp_path / "junk.mat").write_bytes(b"MATLAB? no" * 20)
    with pytest.raises(RestoreError, match="not a readable MATLAB") as info:
        load_kernel(str(tmp_path / "junk.mat"))
    assert "junk.mat" in str(info.value)


def _write_v73(path: Path, kernels: list[np.ndarray]) -> None:
    """A MATLAB v7.3-style file: 512-byte user block, cell array of object references, each
    array stored transposed as MATLAB does."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as handle:
        refs = handle.create_group("#refs#")
        cell = handle.create_dataset("kernels", shape=(len(kernels), 1), dtype=h5py.ref_dtype)
        cell.attrs["MATLAB_class"] = np.bytes_(b"cell")
        for i, k in enumerate(kernels):
            refs.create_dataset(f"k{i}", data=k.T)
            cell[i, 0] = refs[f"k{i}"].ref
    with path.open("r+b") as raw:
        raw.write(b"MATLAB 7.3 MAT-file, written by a test".ljust(116))


def test_mat_v73_hdf5_cell_array(tmp_path: Path) -> None:
    kernels = [_asymmetric(5, 7, 9), _asymmetric(3, 3, 10)]
    path = tmp_path / "v73.mat"
    _write_v73(path, kernels)
    for i, k in enumerate(kernels, start=1):
        loaded, _ = load_kernel(f"{path}:{i}")
        np.testing.assert_allclose(loaded, k / k.sum(), rtol=1e-12)  # transposed back
    with pytest.raises(RestoreError, match="v73.mat has 2 kernels; index 3 is out of range"):
        load_kernel(f"{path}:3")


def test_mat_v73_without_h5py_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v73.mat"
    _write_v73(path, [np.ones((3, 3))])
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)  # makes `import h5py` fail
    with pytest.raises(RestoreError, match="needs h5py"):
        load_kernel(str(path))


def test_usrnet_kernels_12(tmp_path: Path) -> None:
    path = _shared_kernels() / "kernels_12.mat"
    loaded, description = load_kernel(f"{path}:1")
    assert loaded.shape == (25, 25) and loaded.sum() == pytest.approx(1.0, abs=1e-12)
    assert description.endswith("kernels_12.mat:1")
    reference = scipy.io.loadmat(path)["kernels"][0, 0].astype(np.float64)
    np.testing.assert_allclose(loaded, reference / reference.sum(), rtol=1e-12)
    with pytest.raises(RestoreError, match=r"kernels_12.mat has 12 kernels; index 13 is out of range"):
        load_kernel(f"{path}:13")


def test_levin09_hdf5(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    directory = _shared_kernels()
    sizes = [load_kernel(f"{directory / 'Levin09.mat'}:{i}")[0].shape for i in range(1, 9)]
    assert sizes == [(s, s) for s in (19, 17, 15, 27, 13, 21, 23, 23)]  # MANIFEST.md
    first, _ = load_kernel(f"{directory / 'Levin09.mat'}:1")
    assert first.sum() == pytest.approx(1.0, abs=1e-12)
    # ANCHORS §1.7: kernels_12 #9 is Levin #8 zero-padded by one pixel; this pins the orientation
    # (a transposed read of the HDF5 data would differ by about 0.07).
    levin8, _ = load_kernel(f"{directory / 'Levin09.mat'}:8")
    usrnet9, _ = load_kernel(f"{directory / 'kernels_12.mat'}:9")
    np.testing.assert_allclose(np.pad(levin8, 1), usrnet9, atol=1e-7)


# ------------------------------------------------------------------------------------------
# Specs


def test_split_mat_index_keeps_windows_drives() -> None:
    assert split_mat_index("kernels_12.mat:3") == ("kernels_12.mat", 3)
    assert split_mat_index(r"C:\kernels\k.mat:12") == (r"C:\kernels\k.mat", 12)
    assert split_mat_index(r"C:\kernels\k.mat") == (r"C:\kernels\k.mat", None)
    assert split_mat_index(r"D:\k.npy") == (r"D:\k.npy", None)
    assert split_mat_index("a.MAT:2") == ("a.MAT", 2)
    assert split_mat_index("a.mat:x") == ("a.mat:x", None)


def test_windows_path_is_a_missing_file_not_a_spec() -> None:
    with pytest.raises(RestoreError, match="kernel file not found") as info:
        load_kernel(r"C:\no\such\kernel.npy")
    assert info.value.path == r"C:\no\such\kernel.npy"


def test_generator_specs_are_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_kernel_from_spec(spec: str) -> tuple[np.ndarray, str]:
        calls.append(spec)
        if spec.endswith("-1"):
            raise ValueError(f"kernel spec {spec!r}: sigma must be > 0")
        return np.full((3, 3), 1 / 9), "gaussian:1,3"

    monkeypatch.setattr(
        kernel_files, "_generators", lambda: (lambda s: s.startswith("gaussian:"), fake_kernel_from_spec)
    )
    kernel, description = load_kernel("gaussian:1")
    assert description == "gaussian:1,3" and kernel.shape == (3, 3) and calls == ["gaussian:1"]
    with pytest.raises(RestoreError, match="sigma must be > 0") as info:
        load_kernel("gaussian:-1")
    assert "\n" not in str(info.value)


def test_real_generator_spec() -> None:
    kernel, description = load_kernel("gaussian:1.6")
    assert kernel.shape == (25, 25) and kernel.sum() == pytest.approx(1.0)
    assert description.startswith("gaussian:1.6")
    with pytest.raises(RestoreError):
        load_kernel("gaussian:abc")


@pytest.mark.parametrize("spec,message", [("", "empty"), ("box", "not a kernel spec"), ("k.txt", "not a kernel spec")])
def test_unknown_specs(spec: str, message: str) -> None:
    with pytest.raises(RestoreError, match=message):
        load_kernel(spec)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(RestoreError, match="kernel file not found"):
        load_kernel(str(tmp_path / "missing.mat:2"))
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(RestoreError, match="is a directory"):
        load_kernel(str(tmp_path / "dir.npy"))
