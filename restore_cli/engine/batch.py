"""The batch runner shared by every image subcommand.

It expands inputs (files, folders, globs, `@list.txt`), maps each input to its output path
(mirroring the input tree under `-o DIR`), applies the existing-output policy, runs one job per
file so that one bad file never stops the batch, and reports each result to a `BatchReporter`.
Writes themselves are atomic (see `restore_cli.io.atomic`), so an interrupted batch leaves no
partial file and `--skip-existing` resumes it.
"""

from __future__ import annotations

import glob
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from restore_cli.errors import RestoreError
from restore_cli.io.images import SUPPORTED_SUFFIXES

ExistingPolicy = Literal["error", "skip", "overwrite"]
Status = Literal["ok", "skipped", "failed"]

FORMAT_SUFFIX = {"png": ".png", "jpg": ".jpg", "tif": ".tif", "webp": ".webp", "bmp": ".bmp"}


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes."""

    source: Path
    target: Path
    companions: tuple[str, ...] = ()  # suffixes of the files written beside the output (`sibling`)

    def sibling(self, suffix: str) -> Path:
        """A companion file of the output (sidecar, mask, spectrum): same stem, other suffix."""
        return self.target.with_name(self.target.stem + suffix)

    @property
    def written(self) -> tuple[Path, ...]:
        """Every file the job writes: the output, then its companions."""
        return (self.target, *(self.sibling(c) for c in self.companions))


@dataclass
class FileResult:
    source: Path
    target: Path | None
    status: Status
    error: str | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "input": str(self.source),
            "output": None if self.target is None else str(self.target),
            "status": self.status,
            "seconds": round(self.seconds, 4),
        }
        if self.error is not None:
            data["error"] = self.error
        data.update(self.details)
        return data


@dataclass
class BatchSummary:
    results: list[FileResult]
    interrupted: bool = False
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.count("failed") else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": {
                "total": len(self.results),
                "ok": self.count("ok"),
                "skipped": self.count("skipped"),
                "failed": self.count("failed"),
                "interrupted": self.interrupted,
                "seconds": round(self.seconds, 3),
            }
        }


class BatchReporter(Protocol):
    def start(self, total: int) -> None: ...
    def file_done(self, result: FileResult) -> None: ...
    def finish(self, summary: BatchSummary) -> None: ...


@dataclass(frozen=True)
class OutputPlan:
    """How outputs are named: `-o` (folder or single file), suffix, format, existing policy."""

    output: Path | None = None
    suffix: str = ""
    format: str = "same"
    existing: ExistingPolicy = "error"
    companions: tuple[str, ...] = ()  # files written beside each output (`Job.sibling` suffixes)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


def _glob_base(pattern: str) -> Path:
    """The longest leading part of a glob pattern without wildcards."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts:
        if _has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def expand_inputs(inputs: list[str], recursive: bool = False) -> list[tuple[Path, Path]]:
    """Return (file, base) pairs; `file.relative_to(base)` is what `-o DIR` mirrors.

    A folder gives its image files (all levels with `recursive`); a glob gives its matches; a
    plain file is taken as given (its base is its folder, whatever its suffix, so that a bad
    file named explicitly is reported rather than silently ignored); `@list.txt` reads one
    entry per line. Duplicates are dropped, order is kept.
    """
    pairs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()

    def add(path: Path, base: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            pairs.append((path, base))

    def folder_files(folder: Path) -> list[Path]:
        walker = folder.rglob("*") if recursive else folder.iterdir()
        files = [p for p in walker if p.is_file() and not p.name.startswith(".")]
        return sorted(files, key=lambda p: p.relative_to(folder).as_posix())

    for item in inputs:
        if item.startswith("@"):
            list_path = Path(item[1:])
            try:
                lines = list_path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise RestoreError(f"cannot read the input list ({exc.strerror or exc})", list_path) from None
            entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
            for sub, base in expand_inputs(entries, recursive):
                add(sub, base)
            continue
        path = Path(item)
        if path.is_dir():
            for file in folder_files(path):
                # Inside folders only files with an image suffix are inputs; a bad image with an
                # image suffix is still an input (and is reported as failed).
                if _is_image(file):
                    add(file, path)
        elif path.is_file():
            add(path, path.parent)
        elif _has_magic(item):
            matches = sorted(glob.glob(item, recursive=recursive))
            if not matches:
                raise RestoreError("no file matches this pattern", item)
            base = _glob_base(item)
            for match in matches:
                match_path = Path(match)
                if match_path.is_file():
                    add(match_path, base)
        else:
            raise RestoreError("no such file or folder", item)
    return pairs


def _target_name(source: Path, plan: OutputPlan) -> str:
    suffix = source.suffix if plan.format == "same" else FORMAT_SUFFIX[plan.format]
    return f"{source.stem}{plan.suffix}{suffix}"


def plan_jobs(pairs: list[tuple[Path, Path]], plan: OutputPlan) -> list[Job]:
    """Map inputs to outputs; refuses plans in which an output or a companion file (sidecar,
    mask) would overwrite an input or another output, and `-o FILE` with several inputs."""
    if not pairs:
        raise RestoreError("no input images found")
    single_file_output = (
        plan.output is not None
        and not plan.output.is_dir()
        and plan.output.suffix.lower() in SUPPORTED_SUFFIXES
    )
    if single_file_output and len(pairs) > 1:
        raise RestoreError(f"-o names one image file, but {len(pairs)} inputs were given; give a folder", plan.output)
    inputs = {source.resolve() for source, _ in pairs}
    jobs: list[Job] = []
    targets: dict[Path, Path] = {}
    for source, base in pairs:
        if single_file_output:
            assert plan.output is not None
            target = plan.output
        elif plan.output is not None:
            try:
                relative = source.parent.resolve().relative_to(base.resolve())
            except ValueError:
                relative = Path()
            target = plan.output / relative / _target_name(source, plan)
        else:
            target = source.parent / _target_name(source, plan)
        job = Job(source=source, target=target, companions=plan.companions)
        for written in job.written:
            resolved = written.resolve()
            if resolved in inputs:
                what = "the output" if written == target else f"{written} (written beside the output)"
                raise RestoreError(f"{what} would overwrite an input; give -o or another --suffix", source)
            if resolved in targets:
                raise RestoreError(f"two inputs map to the same output {written} (also {targets[resolved]})", source)
            targets[resolved] = source
        jobs.append(job)
    return jobs


def leftover_temps(folder: Path) -> list[Path]:
    """Temporary files that an interrupted write could have left (there should be none)."""
    from restore_cli.io.atomic import TEMP_PREFIX, TEMP_SUFFIX

    return [p for p in folder.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")]


def run_batch(
    jobs: list[Job],
    process: Callable[[Job], dict[str, Any] | None],
    reporter: BatchReporter,
    existing: ExistingPolicy = "error",
    verbose_errors: bool = False,
) -> BatchSummary:
    """Run `process` on every job; `process` writes `job.written` (atomically) itself and may
    return details for the report. A job any of whose files exists is skipped or failed
    (`existing`) unless it is "overwrite". Errors are per file; Ctrl-C ends the batch cleanly."""
    results: list[FileResult] = []
    summary = BatchSummary(results)
    started = time.perf_counter()
    reporter.start(len(jobs))
    try:
        for job in jobs:
            t0 = time.perf_counter()
            present = [p for p in job.written if p.exists()]
            if present and existing != "overwrite":
                if existing == "skip":
                    result = FileResult(job.source, job.target, "skipped", details={"reason": "output exists"})
                    results.append(result)
                    reporter.file_done(result)
                    continue
                if existing == "error":
                    result = FileResult(
                        job.source, job.target, "failed",
                        error=f"{present[0]}: {'output' if present[0] == job.target else 'companion file'} exists (use --overwrite or --skip-existing)",
                    )
                    results.append(result)
                    reporter.file_done(result)
                    continue
            try:
                job.target.parent.mkdir(parents=True, exist_ok=True)
                details = process(job) or {}
                result = FileResult(job.source, job.target, "ok", seconds=time.perf_counter() - t0, details=details)
            except RestoreError as exc:
                message = str(exc) if exc.path else f"{job.source}: {exc}"
                result = FileResult(job.source, None, "failed", error=message, seconds=time.perf_counter() - t0)
            except Exception as exc:  # one file's failure (even a bug) must not lose the rest of the batch
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                if verbose_errors:
                    detail += "\n" + traceback.format_exc()
                result = FileResult(job.source, None, "failed", error=f"{job.source}: {detail}",
                                    seconds=time.perf_counter() - t0)
            results.append(result)
            reporter.file_done(result)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.perf_counter() - started
    reporter.finish(summary)
    return summary

