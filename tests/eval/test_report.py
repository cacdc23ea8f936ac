"""Reports: averages, the wide Table 1 layout with its avg8/avg12 columns, JSON round trip,
Markdown, and the comparison of two reports, on hand-made numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from restore_cli.errors import RestoreError
from restore_cli.eval.report import (
    Report,
    compare_reports,
    markdown_table,
    read_report,
    report_json_text,
    report_table,
    wide_summaries,
)


def table1_report(offset: float = 0.0, kernels: int = 12) -> Report:
    """Two images, one Table 1 row (×2 σ 0), `kernels` kernels: PSNR of image i, kernel k is
    20 + k + i (+ offset), SSIM 0.5 + k/100."""
    settings = [{"name": f"k{k:02d}_x2_n0", "label": f"×2 σ 0 k{k}", "scale": 2, "noise": 0.0, "crop_border": 4,
                 "modcrop": 8, "kernel_index": k, "group": "×2 σ 0", "column": f"k{k}"} for k in range(1, kernels + 1)]
    records = []
    for k in range(1, kernels + 1):
        for i in range(2):
            records.append({"image": f"im{i}", "setting": f"k{k:02d}_x2_n0", "method": "model",
                            "psnr": 20.0 + k + i + offset, "ssim": 0.5 + k / 100})
    summaries = ([{"label": "avg8", "columns": [f"k{k}" for k in range(1, 9)]}] if kernels > 8 else []) + [
        {"label": f"avg{kernels}", "columns": [f"k{k}" for k in range(1, kernels + 1)]}]
    return Report(
        protocol="usrnet-table1", protocol_details={"channel": "rgb", "crop_border": "s²", "seed": 0},
        data={"name": "set", "count": 2, "images": ["im0.png", "im1.png"]}, settings=settings,
        methods=[{"key": "model", "label": "usrnet", "kind": "model", "definition": ""}], metrics=["psnr", "ssim"],
        records=records, layout={"kind": "wide", "metric": "psnr", "summaries": summaries},
    )


def test_averages_are_per_setting_and_method_means() -> None:
    report = table1_report()
    averages = {a["setting"]: a for a in report.averages()}
    assert averages["k03_x2_n0"]["psnr"] == pytest.approx(23.5)
    assert averages["k03_x2_n0"]["ssim"] == pytest.approx(0.53)
    assert averages["k03_x2_n0"]["count"] == 2


def test_table1_layout_has_kernel_columns_and_avg8_avg12() -> None:
    report = table1_report()
    sums = {s["label"]: s["value"] for s in wide_summaries(report)}
    assert sums["avg8"] == pytest.approx(sum(20.5 + k for k in range(1, 9)) / 8)  # 25.0
    assert sums["avg12"] == pytest.approx(sum(20.5 + k for k in range(1, 13)) / 12)  # 27.0
    table = report_table(report)
    assert table.header == ["Method", "Setting"] + [f"k{k}" for k in range(1, 13)] + ["avg8", "avg12"]
    assert table.rows == [["usrnet", "×2 σ 0"] + [f"{20.5 + k:.2f}" for k in range(1, 13)] + ["25.00", "27.00"]]


def test_avg8_only_when_there_are_more_than_eight_kernels() -> None:
    table = report_table(table1_report(kernels=3))
    assert table.header[-1] == "avg3" and "avg8" not in table.header


def test_long_layout_rows_are_settings_by_methods() -> None:
    report = Report(
        protocol="denoise", protocol_details={"channel": "rgb", "crop_border": 0}, data={"name": "d", "count": 1},
        settings=[{"name": "n15", "label": "σ 15"}, {"name": "n25", "label": "σ 25"}],
        methods=[{"key": "model", "label": "drunet"}, {"key": "input", "label": "Input"}],
        metrics=["psnr", "ssim"],
        records=[{"image": "a", "setting": s, "method": m, "psnr": p, "ssim": 0.9}
                 for s, m, p in (("n15", "model", 33.0), ("n15", "input", 24.6), ("n25", "model", 30.5),
                                 ("n25", "input", 20.2))],
        layout={"kind": "long"},
    )
    table = report_table(report)
    assert table.header == ["Setting", "Method", "PSNR", "SSIM"]
    assert table.rows[0] == ["σ 15", "drunet", "33.00", "0.9000"]
    assert table.rows[3] == ["σ 25", "Input", "20.20", "0.9000"]
    md = markdown_table(table)
    lines = md.splitlines()
    assert lines[0] == "| Setting | Method | PSNR | SSIM |"
    assert lines[1] == "| --- | --- | ---: | ---: |"
    assert lines[2] == "| σ 15 | drunet | 33.00 | 0.9000 |"
    assert lines[-1].startswith("*`restore eval denoise`")


def test_json_round_trip_and_infinite_psnr(tmp_path: Path) -> None:
    report = table1_report(kernels=3)
    report.records[0]["psnr"] = math.inf  # identical images
    text = report_json_text(report)
    data = json.loads(text)  # strict JSON: no Infinity token
    assert "Infinity" not in text
    assert data["records"][0]["psnr"] is None
    assert data["averages"][0]["psnr"] is None and data["averages"][1]["psnr"] == pytest.approx(22.5)
    assert data["summaries"][0]["label"] == "avg3"
    path = tmp_path / "r.json"
    path.write_text(text)
    again = read_report(path)
    assert again.settings == report.settings and again.layout == report.layout
    assert math.isinf(again.averages()[0]["psnr"])  # null read back counts as infinite
    assert report_table(again).rows[0][2] == "inf"


def test_reading_something_else_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"format": 7}')
    with pytest.raises(RestoreError, match="not a `restore eval` report"):
        read_report(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("not json")
    with pytest.raises(RestoreError, match="not valid JSON"):
        read_report(tmp_path / "y.json")
    with pytest.raises(RestoreError, match="not found"):
        read_report(tmp_path / "missing.json")


def test_compare_matches_settings_and_reports_differences() -> None:
    a = table1_report()
    b = table1_report(offset=0.25)
    b.protocol_details = {**b.protocol_details, "seed": 1}
    b.methods = [{**b.methods[0], "label": "usrnet-tiny"}]
    comparison = compare_reports(a, b, "a", "b")
    assert comparison.differences == ["seed: 0 vs 1"]
    assert comparison.table.header == ["Setting", "Method", "PSNR a", "PSNR b", "Δ", "SSIM a", "SSIM b", "Δ"]
    first = comparison.table.rows[0]
    assert first == ["×2 σ 0 k1", "usrnet / usrnet-tiny", "21.50", "21.75", "+0.25", "0.5100", "0.5100", "+0.0000"]
    summary_rows = [r for r in comparison.table.rows if r[0].endswith("avg12")]
    assert summary_rows == [["×2 σ 0 avg12", "usrnet / usrnet-tiny", "27.00", "27.25", "+0.25", "", "", ""]]
    deltas = [r["delta"] for r in comparison.rows if r["metric"] == "psnr"]
    assert len(deltas) == 12 + 2 and all(d == pytest.approx(0.25) for d in deltas)


def test_compare_notes_different_image_sets() -> None:
    a = table1_report(kernels=3)
    b = table1_report(kernels=3)
    b.data = {"name": "set", "count": 1, "images": ["im0.png"]}
    assert any(d.startswith("images:") for d in compare_reports(a, b).differences)


@pytest.mark.parametrize(("channels", "word"), [([1], "gray, border 0"), ([3], "RGB, border 0"), ([1, 3], "RGB, border 0")])
def test_caption_names_gray_data_gray(channels: list[int], word: str) -> None:
    from restore_cli.eval.report import table_caption

    report = Report(
        protocol="denoise", protocol_details={"channel": "rgb", "crop_border": 0, "seed": 0},
        data={"name": "BSD68", "count": 1, "image_channels": channels}, settings=[{"name": "n15", "label": "σ 15"}],
        methods=[{"key": "model", "label": "m"}], metrics=["psnr"],
        records=[{"image": "a", "setting": "n15", "method": "model", "psnr": 30.0}], layout={"kind": "long"},
    )
    assert table_caption(report) == f"`restore eval denoise` · BSD68 (1 images) · {word} · seed 0"
