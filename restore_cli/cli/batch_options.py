"""Turn the shared batch options of a subcommand into jobs and run them with a reporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import typer

from restore_cli.cli.common import existing_policy
from restore_cli.cli.reporting import ConsoleReporter
from restore_cli.engine.batch import Job, OutputPlan, expand_inputs, plan_jobs, run_batch


def run_image_batch(
    *,
    label: str,
    inputs: list[str],
    output: Path | None,
    recursive: bool,
    suffix: str,
    format: str,
    skip_existing: bool,
    overwrite: bool,
    json_output: bool,
    quiet: bool,
    verbose: bool,
    process: Callable[[Job], dict[str, Any] | None],
    companions: tuple[str, ...] = (),
) -> None:
    """Plan, run and report; exits with 0 (all done), 1 (some failed) or 130 (interrupted).
    `companions`: suffixes of the files `process` writes beside each output (`Job.sibling`)."""
    existing = existing_policy(skip_existing, overwrite)
    plan = OutputPlan(output=output, suffix=suffix, format=format, existing=existing, companions=companions)
    jobs = plan_jobs(expand_inputs(inputs, recursive), plan)
    reporter = ConsoleReporter(label, json_output=json_output, quiet=quiet, verbose=verbose)
    summary = run_batch(jobs, process, reporter, existing=existing, verbose_errors=verbose)
    raise typer.Exit(summary.exit_code)
