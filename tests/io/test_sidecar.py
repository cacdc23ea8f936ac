from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import restore_cli
from restore_cli.errors import RestoreError
from restore_cli.io.sidecar import SIDECAR_FORMAT, DegradationRecord, read_sidecar, write_sidecar


def _record(**changes: object) -> DegradationRecord:
    base = DegradationRecord(
        scale=4,
        kernel="gaussian:1.6,25",
        kernel_taps=[[0.25, 0.25], [0.125, 0.375]],
        noise=7.65,
        seed=0,
        jpeg_quality=None,
        boundary="wrap",
        down="direct",
        preset="usrnet",
        source="tests/data/sample.png",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    record = _record()
    write_sidecar(tmp_path / "s.json", record)
    assert read_sidecar(tmp_path / "s.json") == record
    document = json.loads((tmp_path / "s.json").read_text())
    assert document["format"] == SIDECAR_FORMAT == "restore-degradation/1"
    assert document["version"] == restore_cli.__version__
    assert document["kernel_taps"] == [[0.25, 0.25], [0.125, 0.375]]


def test_round_trip_with_nulls_and_array_taps(tmp_path: Path) -> None:
    taps = np.random.default_rng(0).random((5, 3))
    record = _record(kernel_taps=taps, seed=None, preset=None, jpeg_quality=37.5, noise=0.0, scale=1)
    write_sidecar(tmp_path / "s.json", record)
    back = read_sidecar(tmp_path / "s.json")
    assert back.seed is None and back.preset is None and back.jpeg_quality == 37.5 and back.scale == 1
    np.testing.assert_array_equal(back.kernel_array(), taps)  # float64 survives JSON exactly
    write_sidecar(tmp_path / "n.json", _record(kernel_taps=None))
    assert read_sidecar(tmp_path / "n.json").kernel_array() is None


def test_nan_noise_is_refused_on_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_sidecar(tmp_path / "s.json", _record(noise=float("nan")))
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def _write_document(path: Path, **changes: object) -> None:
    document = {"format": SIDECAR_FORMAT, "version": "0.0.1", **json.loads(json.dumps(_record().__dict__))}
    for key, value in changes.items():
        if value is ...:
            del document[key]
        else:
            document[key] = value
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"scale": ...}, "missing field(s): scale"),
        ({"noise": ..., "source": ...}, "missing field(s): noise, source"),
        ({"format": ...}, "not a degradation sidecar"),
        ({"format": "restore-degradation/9"}, "unsupported sidecar format"),
        ({"scale": "4"}, "'scale' must be an integer"),
        ({"scale": True}, "'scale' must be an integer"),
        ({"scale": 0}, "'scale' must be an integer"),
        ({"noise": -1}, "'noise' must be a number"),
        ({"seed": 1.5}, "'seed' must be an integer or null"),
        ({"jpeg_quality": 0}, "'jpeg_quality'"),
        ({"kernel": 3}, "'kernel' must be a string"),
        ({"preset": 3}, "'preset' must be a string or null"),
        ({"kernel_taps": [[1, 2], [3]]}, "rectangular"),
        ({"kernel_taps": [[1, "x"]]}, "finite numbers"),
        ({"kernel_taps": [[0, 0]]}, "positive sum"),
        ({"kernel_taps": []}, "rectangular"),
    ],
)
def test_invalid_fields(tmp_path: Path, changes: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    _write_document(path, **changes)
    with pytest.raises(RestoreError) as info:
        read_sidecar(path)
    assert message in str(info.value) and info.value.path == str(path)


def test_extra_keys_are_ignored(tmp_path: Path) -> None:
    _write_document(tmp_path / "x.json", future_field={"anything": 1})
    assert read_sidecar(tmp_path / "x.json") == _record()


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"noise": NaN}', "not a degradation sidecar"),
    ],
)
def test_invalid_json(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "s.json").write_text(content)
    with pytest.raises(RestoreError, match=message) as info:
        read_sidecar(tmp_path / "s.json")
    assert "s.json" in str(info.value) and "\n" not in str(info.value)


def test_nan_in_json_is_refused(tmp_path: Path) -> None:
    _write_document(tmp_path / "s.json")
    text = (tmp_path / "s.json").read_text().replace('"noise": 7.65', '"noise": NaN')
    (tmp_path / "s.json").write_text(text)
    with pytest.raises(RestoreError, match="'noise' must be a number"):
        read_sidecar(tmp_path / "s.json")


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(RestoreError, match="sidecar file not found"):
        read_sidecar(tmp_path / "none.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RestoreError, match="not UTF-8"):
        read_sidecar(tmp_path / "bin.json")
