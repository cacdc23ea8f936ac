"""Evaluation reports: per-image scores, averages, the protocol that produced them, and their
tables (Rich on stderr, Markdown for README), plus the side-by-side comparison of two reports.

A report is self-describing: its JSON holds the settings (with their table placement), the
methods and the table layout, so `--compare` and re-rendering need no protocol code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restore_cli.errors import RestoreError

REPORT_FORMAT = 1
METRIC_TITLES: dict[str, str] = {"psnr": "PSNR", "ssim": "SSIM", "psnr_b": "PSNR-B", "lsd_hf": "LSD-HF (dB)",
                                 "hf_db": "HF energy (dB)"}
METRIC_DIGITS: dict[str, int] = {"psnr": 2, "ssim": 4, "psnr_b": 2, "lsd_hf": 2, "hf_db": 2}


def _clean_number(value: float | None) -> float | None:
    """JSON has no infinity: identical images (PSNR = ∞) are stored as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def mean(values: list[float | None]) -> float | None:
    """Arithmetic mean; None (an infinite PSNR) makes it infinite, shown as 'inf'."""
    if not values:
        return None
    if any(v is None for v in values):
        return math.inf
    return sum(v for v in values if v is not None) / len(values)


@dataclass
class Report:
    protocol: str
    protocol_details: dict[str, Any]
    data: dict[str, Any]
    settings: list[dict[str, Any]]
    methods: list[dict[str, Any]]
    metrics: list[str]
    records: list[dict[str, Any]]
    layout: dict[str, Any]
    software: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)  # device, precision, wall time, command

    # -- derived ---------------------------------------------------------------------------
    def averages(self) -> list[dict[str, Any]]:
        """Per (setting, method): the mean of every metric over the images, and the count."""
        buckets: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for record in self.records:
            buckets.setdefault((record["setting"], record["method"]), []).append(record)
        out = []
        for setting in self.settings:
            for method in self.methods:
                rows = buckets.get((setting["name"], method["key"]))
                if not rows:
                    continue
                entry: dict[str, Any] = {"setting": setting["name"], "method": method["key"], "count": len(rows)}
                for metric in self.metrics:
                    entry[metric] = mean([r.get(metric) for r in rows])
                out.append(entry)
        return out

    def average_of(self, setting: str, method: str, metric: str) -> float | None:
        for entry in self.averages():
            if entry["setting"] == setting and entry["method"] == method:
                return entry[metric]
        return None

    # -- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        averages = [{k: (_clean_number(v) if k in self.metrics else v) for k, v in a.items()} for a in self.averages()]
        records = [{k: (_clean_number(v) if k in self.metrics else v) for k, v in r.items()} for r in self.records]
        return {
            "format": REPORT_FORMAT,
            "protocol": self.protocol,
            "protocol_details": self.protocol_details,
            "data": self.data,
            "settings": self.settings,
            "methods": self.methods,
            "metrics": self.metrics,
            "layout": self.layout,
            "averages": averages,
            "summaries": [_clean_summary(s) for s in wide_summaries(self)],
            "records": records,
            "software": self.software,
            "run": self.run,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str | Path | None = None) -> "Report":
        try:
            if data.get("format") != REPORT_FORMAT:
                raise RestoreError(f"not a `restore eval` report of format {REPORT_FORMAT} (format {data.get('format')!r})", source)
            return cls(protocol=data["protocol"], protocol_details=data["protocol_details"], data=data["data"],
                       settings=data["settings"], methods=data["methods"], metrics=data["metrics"],
                       records=data["records"], layout=data["layout"], software=data.get("software", {}),
                       run=data.get("run", {}))
        except (KeyError, TypeError, AttributeError) as exc:
            raise RestoreError(f"not a `restore eval` report (missing {exc})", source) from None


def _clean_summary(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (_clean_number(v) if k == "value" else v) for k, v in summary.items()}


def read_report(path: Path) -> Report:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RestoreError("report file not found", path) from None
    except OSError as exc:
        raise RestoreError(f"cannot read the report ({exc.strerror})", path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RestoreError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path) from None
    if not isinstance(data, dict):
        raise RestoreError("not a `restore eval` report (not a JSON object)", path)
    return Report.from_json(data, path)


def report_json_text(report: Report) -> str:
    return json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n"


# -- tables ------------------------------------------------------------------------------------


@dataclass
class TableData:
    """A table as plain strings: rendered to Rich (stderr) and Markdown (README) alike."""

    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric_from: int = 1  # columns from this index on are right-aligned numbers


def format_value(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.{METRIC_DIGITS.get(metric, 2)}f}"


def method_labels(report: Report) -> dict[str, str]:
    return {m["key"]: m["label"] for m in report.methods}


def wide_summaries(report: Report) -> list[dict[str, Any]]:
    """For wide layouts, the summary cells (e.g. avg8/avg12 per Table 1 row): the mean of the
    per-setting averages over the listed columns, per (group, method). Empty for long layouts."""
    if report.layout.get("kind") != "wide":
        return []
    metric = report.layout.get("metric", "psnr")
    averages = {(a["setting"], a["method"]): a for a in report.averages()}
    out = []
    for group in _groups(report):
        for method in report.methods:
            for summary in report.layout.get("summaries", []):
                values = []
                for setting in report.settings:
                    if setting.get("group", "") != group or setting.get("column") not in summary["columns"]:
                        continue
                    entry = averages.get((setting["name"], method["key"]))
                    if entry is not None:
                        values.append(entry[metric])
                if values and len(values) == len(summary["columns"]):
                    finite = [v for v in values if v is not None]
                    value = math.inf if len(finite) < len(values) else sum(finite) / len(finite)
                    out.append({"group": group, "method": method["key"], "label": summary["label"],
                                "metric": metric, "value": value})
    return out


def _groups(report: Report) -> list[str]:
    seen: list[str] = []
    for setting in report.settings:
        group = setting.get("group", "")
        if group not in seen:
            seen.append(group)
    return seen


def _columns(report: Report) -> list[str]:
    seen: list[str] = []
    for setting in report.settings:
        column = setting.get("column", "")
        if column not in seen:
            seen.append(column)
    return seen


def report_table(report: Report) -> TableData:
    """The protocol's table: wide (rows = groups × methods, columns = e.g. kernels or σ, plus
    the summary columns) or long (rows = settings × methods, columns = metrics)."""
    labels = method_labels(report)
    averages = {(a["setting"], a["method"]): a for a in report.averages()}
    caption = table_caption(report)
    if report.layout.get("kind") == "wide":
        metric = report.layout.get("metric", "psnr")
        columns = _columns(report)
        groups = _groups(report)
        show_group = any(groups)
        summaries = {(s["group"], s["method"], s["label"]): s["value"] for s in wide_summaries(report)}
        summary_labels = [s["label"] for s in report.layout.get("summaries", [])
                          if any(k[2] == s["label"] for k in summaries)]
        header = ["Method"] + (["Setting"] if show_group else []) + columns + summary_labels
        rows = []
        by_cell = {(s.get("group", ""), s.get("column", "")): s["name"] for s in report.settings}
        for group in groups:
            for method in report.methods:
                cells = []
                for column in columns:
                    name = by_cell.get((group, column))
                    entry = averages.get((name, method["key"])) if name else None
                    cells.append(format_value(None if entry is None else entry[metric], metric))
                if all(c == "–" for c in cells):
                    continue
                sums = [format_value(summaries.get((group, method["key"], label)), metric) for label in summary_labels]
                rows.append([labels[method["key"]]] + ([group] if show_group else []) + cells + sums)
        title = f"{report.protocol}: {METRIC_TITLES.get(metric, metric)} (dB)" if metric != "ssim" else f"{report.protocol}: SSIM"
        return TableData(title, header, rows, caption, numeric_from=2 if show_group else 1)
    header = ["Setting", "Method"] + [METRIC_TITLES.get(m, m) for m in report.metrics]
    rows = []
    for setting in report.settings:
        for method in report.methods:
            entry = averages.get((setting["name"], method["key"]))
            if entry is None:
                continue
            rows.append([setting["label"], labels[method["key"]]] + [format_value(entry[m], m) for m in report.metrics])
    return TableData(report.protocol, header, rows, caption, numeric_from=2)


def table_caption(report: Report) -> str:
    d = report.protocol_details
    parts = [f"`restore eval {report.protocol}`"]
    data = report.data
    if data.get("name"):
        parts.append(f"{data['name']} ({data.get('count', '?')} images)")
    channel = {"rgb": "RGB", "y": "Y (BT.601)", "gray": "gray"}.get(d.get("channel", ""), d.get("channel", ""))
    if d.get("channel") == "rgb" and data.get("image_channels") == [1]:
        channel = "gray"  # all channels of images that have only one
    if channel:
        parts.append(f"{channel}, border {d.get('crop_border', '?')}")
    if "seed" in d:
        parts.append(f"seed {d['seed']}")
    return " · ".join(parts)


def markdown_table(table: TableData) -> str:
    """GitHub Markdown: the table, numbers right-aligned, then the caption in italics."""
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if i < table.numeric_from else "---:" for i in range(len(table.header))]
    lines = [row(table.header), "| " + " | ".join(align) + " |"] + [row(r) for r in table.rows]
    if table.caption:
        lines += ["", f"*{table.caption}*"]
    return "\n".join(lines) + "\n"


def rich_table(table: TableData):
    from rich.table import Table

    out = Table(title=table.title, caption=table.caption or None, show_lines=False)
    for i, name in enumerate(table.header):
        out.add_column(name, justify="right" if i >= table.numeric_from else "left", no_wrap=True)
    for r in table.rows:
        out.add_row(*r)
    return out


# -- comparison ---------------------------------------------------------------------------------


@dataclass
class Comparison:
    table: TableData
    differences: list[str]  # protocol fields that differ between the two reports
    rows: list[dict[str, Any]]  # machine-readable: setting, method, metric, a, b, delta


def _report_summary(report: Report) -> str:
    labels = ", ".join(m["label"] for m in report.methods)
    return f"{report.data.get('name', '?')} ({report.data.get('count', '?')} images): {labels}"


def _delta(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isinf(a) or math.isinf(b):
        return None
    return b - a


def compare_reports(a: Report, b: Report, name_a: str = "A", name_b: str = "B") -> Comparison:
    """Averages of two reports side by side, matched on (setting name, method key), with B − A;
    for wide layouts the summary cells too. Lists the protocol fields that differ."""
    differences = []
    if a.protocol != b.protocol:
        differences.append(f"protocol: {a.protocol} vs {b.protocol}")
    for key in sorted(set(a.protocol_details) | set(b.protocol_details)):
        va, vb = a.protocol_details.get(key), b.protocol_details.get(key)
        if va != vb:
            differences.append(f"{key}: {va} vs {vb}")
    if a.data.get("images") != b.data.get("images"):
        differences.append(f"images: {a.data.get('count')} from {a.data.get('name')} vs {b.data.get('count')} from {b.data.get('name')}")
    defs_a = {m["key"]: m.get("definition", "") for m in a.methods}
    for m in b.methods:
        if m["key"] in defs_a and defs_a[m["key"]] != m.get("definition", ""):
            differences.append(f"method {m['key']}: {defs_a[m['key']]} vs {m.get('definition', '')}")
    models_a = {m["key"]: [mm.get("sha256") for mm in m.get("models", [])] for m in a.methods}
    for m in b.methods:
        shas = [mm.get("sha256") for mm in m.get("models", [])]
        if m["key"] in models_a and shas and models_a[m["key"]] and models_a[m["key"]] != shas:
            differences.append(f"method {m['key']}: different weights (sha256)")
    labels_a, labels_b = method_labels(a), method_labels(b)
    metrics = [m for m in a.metrics if m in b.metrics]
    avg_a = {(e["setting"], e["method"]): e for e in a.averages()}
    avg_b = {(e["setting"], e["method"]): e for e in b.averages()}
    setting_labels = {s["name"]: s["label"] for s in a.settings}
    header = ["Setting", "Method"]
    for m in metrics:
        title = METRIC_TITLES.get(m, m)
        header += [f"{title} {name_a}", f"{title} {name_b}", "Δ"]
    rows: list[list[str]] = []
    machine: list[dict[str, Any]] = []

    def method_label(key: str) -> str:
        la, lb = labels_a.get(key, key), labels_b.get(key, key)
        return la if la == lb else f"{la} / {lb}"

    for setting in a.settings:
        for method in a.methods:
            key = (setting["name"], method["key"])
            if key not in avg_a or key not in avg_b:
                continue
            cells = [setting_labels[setting["name"]], method_label(method["key"])]
            for m in metrics:
                va, vb = avg_a[key][m], avg_b[key][m]
                d = _delta(va, vb)
                cells += [format_value(va, m), format_value(vb, m), "–" if d is None else f"{d:+.{METRIC_DIGITS.get(m, 2)}f}"]
                machine.append({"setting": setting["name"], "method": method["key"], "metric": m,
                                "a": _clean_number(va), "b": _clean_number(vb), "delta": d})
            rows.append(cells)
    sums_b = {(s["group"], s["method"], s["label"]): s for s in wide_summaries(b)}
    for s in wide_summaries(a):
        other = sums_b.get((s["group"], s["method"], s["label"]))
        if other is None:
            continue
        metric = s["metric"]
        d = _delta(s["value"], other["value"])
        cells = [f"{s['group']} {s['label']}".strip(), method_label(s["method"])]
        for m in metrics:
            if m == metric:
                cells += [format_value(s["value"], m), format_value(other["value"], m),
                          "–" if d is None else f"{d:+.{METRIC_DIGITS.get(m, 2)}f}"]
            else:
                cells += ["", "", ""]
        rows.append(cells)
        machine.append({"setting": f"{s['group']} {s['label']}".strip(), "method": s["method"], "metric": metric,
                        "a": _clean_number(s["value"]), "b": _clean_number(other["value"]), "delta": d})
    caption = (f"{name_a} = {_report_summary(a)}; {name_b} = {_report_summary(b)}; Δ = {name_b} − {name_a}")
    table = TableData(f"compare: {a.protocol} vs {b.protocol}", header, rows, caption, numeric_from=2)
    return Comparison(table, differences, machine)


# -- merging the parts of a sharded run ----------------------------------------------------


def _method_identity(method: dict[str, Any]) -> tuple[Any, ...]:
    """What must agree between parts: the method, its weights and their precision (not the device
    or the path the weights were read from)."""
    models = tuple((m.get("name"), m.get("arch"), m.get("sha256"), m.get("precision")) for m in method.get("models", []))
    return (method["key"], method.get("label"), method.get("kind"), method.get("definition", ""), models)


def merge_reports(parts: list[tuple[Report, str]]) -> Report:
    """One report from the parts of a run split with `--shard K/N` (or any disjoint image sets of
    the same data): the same protocol, settings, metrics and methods (weights by sha256, and
    precision) are required; records are joined, averages recomputed over all images."""
    if len(parts) < 2:
        raise RestoreError("--merge takes at least two reports")
    first, first_name = parts[0]
    seen: dict[str, str] = {}
    for report, name in parts:
        checks = (
            ("protocol", report.protocol, first.protocol),
            ("protocol settings", report.protocol_details, first.protocol_details),
            ("settings", report.settings, first.settings),
            ("metrics", report.metrics, first.metrics),
            ("data set", report.data.get("name"), first.data.get("name")),
            ("--limit", report.data.get("limit"), first.data.get("limit")),
            ("methods", [_method_identity(m) for m in report.methods], [_method_identity(m) for m in first.methods]),
        )
        for what, value, expected in checks:
            if value != expected:
                raise RestoreError(f"cannot merge: its {what} differ from those of {first_name}", name)
        for image in report.data.get("images", []):
            if image in seen:
                raise RestoreError(f"cannot merge: image {image} is also in {seen[image]}", name)
            seen[image] = name
    method_order = {m["key"]: i for i, m in enumerate(first.methods)}
    setting_order = {s["name"]: i for i, s in enumerate(first.settings)}
    records = sorted((r for report, _ in parts for r in report.records),
                     key=lambda r: (r["image"], setting_order.get(r["setting"], 0), method_order.get(r["method"], 0)))
    data = {key: value for key, value in first.data.items() if key not in ("shard", "images", "count", "items")}
    data["images"] = sorted(seen)
    data["count"] = len(seen)
    data["image_channels"] = sorted({c for report, _ in parts for c in report.data.get("image_channels", [])})
    if all("items" in report.data for report, _ in parts):
        data["items"] = sum(int(report.data["items"]) for report, _ in parts)
    data["merged_from"] = [{"file": name, "shard": report.data.get("shard"), "count": report.data.get("count")}
                           for report, name in parts]
    method_time: dict[str, float] = {}
    for report, _ in parts:
        for key, seconds in report.run.get("method_time_s", {}).items():
            method_time[key] = round(method_time.get(key, 0.0) + float(seconds), 3)
    run = {
        "started": min(str(report.run.get("started", "")) for report, _ in parts),
        "wall_time_s": round(sum(float(report.run.get("wall_time_s", 0.0)) for report, _ in parts), 3),
        "method_time_s": method_time,
        "device": ", ".join(sorted({str(report.run.get("device", "?")) for report, _ in parts})),
        "precision": ", ".join(sorted({str(report.run.get("precision", "?")) for report, _ in parts})),
        "command": "restore eval --merge " + " ".join(name for _, name in parts),
        "parts": [{"file": name, "command": report.run.get("command"), "started": report.run.get("started"),
                   "wall_time_s": report.run.get("wall_time_s"), "device": report.run.get("device")}
                  for report, name in parts],
    }
    return Report(protocol=first.protocol, protocol_details=first.protocol_details, data=data, settings=first.settings,
                  methods=first.methods, metrics=first.metrics, records=records, layout=first.layout,
                  software=first.software, run=run)
