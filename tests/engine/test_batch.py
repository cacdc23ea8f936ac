"""The batch runner without the CLI: input expansion, output planning, per-file errors,
existing-output policies and Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restore_cli.engine.batch import (
    BatchSummary,
    FileResult,
    Job,
    OutputPlan,
    expand_inputs,
    leftover_temps,
    plan_jobs,
    run_batch,
)
from restore_cli.errors import RestoreError
from restore_cli.io.atomic import atomic_write, atomic_write_bytes


class RecordingReporter:
    """A BatchReporter that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def start(self, total: int) -> None:
        self.calls.append(("start", total))

    def file_done(self, result: FileResult) -> None:
        self.calls.append(("file_done", result))

    def finish(self, summary: BatchSummary) -> None:
        self.calls.append(("finish", summary))


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for name in ("b.png", "a.jpg", "sub/c.tif", "sub/deep/d.webp", ".hidden.png", "notes.txt", "sub/.e.png"):
        touch(root / name)
    return root


def names(pairs: list[tuple[Path, Path]], base: Path) -> list[str]:
    return [p.relative_to(base).as_posix() for p, _ in pairs]


# --------------------------------------------------------------------------------------------
# expand_inputs


def test_folder_gives_its_images_sorted_without_hidden_or_other_files(tree: Path) -> None:
    assert names(expand_inputs([str(tree)]), tree) == ["a.jpg", "b.png"]
    assert names(expand_inputs([str(tree)], recursive=True), tree) == ["a.jpg", "b.png", "sub/c.tif", "sub/deep/d.webp"]
    assert all(base == tree for _, base in expand_inputs([str(tree)], recursive=True))


def test_explicit_files_are_taken_as_given_and_duplicates_dropped(tree: Path) -> None:
    pairs = expand_inputs([str(tree / "notes.txt"), str(tree), str(tree / "b.png")])
    assert names(pairs, tree) == ["notes.txt", "a.jpg", "b.png"]
    assert pairs[0][1] == tree  # a plain file's base is its folder


def test_globs_and_list_files(tree: Path, tmp_path: Path) -> None:
    pairs = expand_inputs([str(tree / "**" / "*.png")], recursive=True)
    assert names(pairs, tree) == ["b.png"]  # glob skips hidden names, as the shell does
    pairs = expand_inputs([str(tree / "*" / "*.tif")])
    assert names(pairs, tree) == ["sub/c.tif"] and pairs[0][1] == tree  # base = the fixed part
    listing = touch(tmp_path / "list.txt", f"# a comment\n\n  {tree / 'sub' / 'c.tif'}  \n{tree}\n".encode())
    assert names(expand_inputs([f"@{listing}"]), tree) == ["sub/c.tif", "a.jpg", "b.png"]


@pytest.mark.parametrize("item", ["missing.png", "*.nothing", "@missing-list.txt"])
def test_inputs_that_do_not_exist_are_user_errors(tmp_path: Path, item: str) -> None:
    with pytest.raises(RestoreError):
        expand_inputs([str(tmp_path / item) if not item.startswith("@") else f"@{tmp_path / item[1:]}"])


# --------------------------------------------------------------------------------------------
# plan_jobs


def test_output_folder_mirrors_the_tree_and_suffix_and_format_name_the_files(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    jobs = plan_jobs(expand_inputs([str(tree)], recursive=True), OutputPlan(output=out, suffix="_x2", format="png"))
    assert [j.target for j in jobs] == [out / "a_x2.png", out / "b_x2.png", out / "sub" / "c_x2.png", out / "sub" / "deep" / "d_x2.png"]
    jobs = plan_jobs(expand_inputs([str(tree / "a.jpg")]), OutputPlan(suffix="_s"))
    assert jobs == [Job(tree / "a.jpg", tree / "a_s.jpg")]  # no -o: beside the input, same format
    assert jobs[0].sibling(".json") == tree / "a_s.json"


def test_single_output_file(tree: Path, tmp_path: Path) -> None:
    jobs = plan_jobs(expand_inputs([str(tree / "b.png")]), OutputPlan(output=tmp_path / "r.jpg", suffix="_s"))
    assert jobs == [Job(tree / "b.png", tmp_path / "r.jpg")]
    with pytest.raises(RestoreError, match="2 inputs"):
        plan_jobs(expand_inputs([str(tree / "b.png"), str(tree / "a.jpg")]), OutputPlan(output=tmp_path / "r.jpg"))


@pytest.mark.parametrize("case", ["suffix-empty", "suffix-empty-overwrite", "output-is-input-folder", "companion"])
def test_plans_that_would_overwrite_an_input_are_refused(tree: Path, case: str) -> None:
    pairs = expand_inputs([str(tree / "b.png")])
    plan = {
        "suffix-empty": OutputPlan(suffix=""),
        "suffix-empty-overwrite": OutputPlan(suffix="", existing="overwrite"),
        "output-is-input-folder": OutputPlan(output=tree, suffix=""),
        "companion": OutputPlan(suffix="_s", companions=("_mask.png",)),
    }[case]
    if case == "companion":
        assert len(plan_jobs(pairs, plan)) == 1  # b.png → b_s.png and b_s_mask.png: fine …
        touch(tree / "b_s_mask.png")  # … unless b_s_mask.png is itself an input
        pairs = expand_inputs([str(tree / "b.png"), str(tree / "b_s_mask.png")])
    with pytest.raises(RestoreError, match="overwrite an input"):
        plan_jobs(pairs, plan)


def test_colliding_outputs_are_refused(tree: Path, tmp_path: Path) -> None:
    touch(tree / "a.png")
    pairs = expand_inputs([str(tree / "a.png"), str(tree / "a.jpg")])
    with pytest.raises(RestoreError, match="same output"):
        plan_jobs(pairs, OutputPlan(output=tmp_path / "o", suffix="_d", format="png"))
    with pytest.raises(RestoreError, match=r"a_d\.json"):
        plan_jobs(pairs, OutputPlan(output=tmp_path / "o", suffix="_d", companions=(".json",)))
    assert len(plan_jobs(pairs, OutputPlan(output=tmp_path / "o", suffix="_d"))) == 2  # different formats: fine
    with pytest.raises(RestoreError, match="no input"):
        plan_jobs([], OutputPlan())


# --------------------------------------------------------------------------------------------
# run_batch


def jobs_in(tmp_path: Path, count: int) -> list[Job]:
    return [Job(tmp_path / f"in{i}.png", tmp_path / "out" / f"out{i}.png") for i in range(count)]


def test_errors_are_per_file_and_the_batch_goes_on(tmp_path: Path) -> None:
    jobs = jobs_in(tmp_path, 4)
    failures = {1: RestoreError("truncated image data", jobs[1].source), 2: KeyError("odd shape")}

    def process(job: Job) -> dict:
        index = jobs.index(job)
        if index in failures:
            raise failures[index]
        atomic_write_bytes(job.target, b"done")
        return {"index": index}

    reporter = RecordingReporter()
    summary = run_batch(jobs, process, reporter)
    assert [r.status for r in summary.results] == ["ok", "failed", "failed", "ok"]
    assert summary.exit_code == 1 and not summary.interrupted
    assert summary.results[1].error == f"{jobs[1].source}: truncated image data"
    assert str(jobs[2].source) in summary.results[2].error and "odd shape" in summary.results[2].error
    assert summary.results[0].details == {"index": 0}
    assert [c[0] for c in reporter.calls] == ["start"] + ["file_done"] * 4 + ["finish"]
    assert reporter.calls[0] == ("start", 4)
    record = json.loads(json.dumps(summary.results[0].to_json()))
    assert record["status"] == "ok" and record["output"] == str(jobs[0].target) and record["index"] == 0
    assert summary.to_json()["summary"] | {"seconds": 0} == {
        "total": 4, "ok": 2, "skipped": 0, "failed": 2, "interrupted": False, "seconds": 0}


@pytest.mark.parametrize("existing, status, processed, code", [
    ("error", "failed", False, 1),
    ("skip", "skipped", False, 0),
    ("overwrite", "ok", True, 0),
])
def test_existing_output_policies(tmp_path: Path, existing: str, status: str, processed: bool, code: int) -> None:
    (job,) = jobs_in(tmp_path, 1)
    touch(job.target, b"old")
    seen: list[Job] = []

    def process(j: Job) -> None:
        seen.append(j)
        atomic_write_bytes(j.target, b"new")

    summary = run_batch([job], process, RecordingReporter(), existing=existing)  # type: ignore[arg-type]
    assert summary.results[0].status == status
    assert summary.exit_code == code
    assert bool(seen) == processed
    assert job.target.read_bytes() == (b"new" if processed else b"old")


def test_ctrl_c_ends_the_batch_cleanly(tmp_path: Path) -> None:
    jobs = jobs_in(tmp_path, 3)
    seen: list[Job] = []

    def process(job: Job) -> None:
        seen.append(job)
        if len(seen) == 2:
            with atomic_write(job.target) as handle:
                handle.write(b"half an image")
                raise KeyboardInterrupt
        atomic_write_bytes(job.target, b"done")

    reporter = RecordingReporter()
    summary = run_batch(jobs, process, reporter)
    assert summary.interrupted and summary.exit_code == 130
    assert seen == jobs[:2]  # the third job never started
    assert [r.status for r in summary.results] == ["ok"]
    assert reporter.calls[-1] == ("finish", summary)
    assert jobs[0].target.read_bytes() == b"done"
    assert not jobs[1].target.exists() and not jobs[2].target.exists()
    assert leftover_temps(tmp_path) == []
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []
