"""What the training configurations (frozen dataclasses) share: their JSON form as stored in a
checkpoint, step numbers given as fractions of the run, and the settings a resumed run may not
change."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")

MILESTONES_HINT = "(give --milestones as step numbers to extend --steps)"


def config_to_json(config: Any) -> dict[str, Any]:
    """Every field of a config dataclass, paths as strings and tuples as lists."""
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[f.name] = value
    return out


def config_from_json(cls: type[C], data: dict[str, Any], tuple_fields: Iterable[str]) -> C:
    """The config of `cls` stored as `data` (unknown keys ignored; `tuple_fields` back to tuples)."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in known}
    for name in tuple_fields:
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return cls(**values)


def as_step(value: float, steps: int) -> int:
    """A fraction of `steps` (< 1) or a step number (≥ 1) as a step number."""
    return int(round(value * steps)) if value < 1 else int(value)


def changed_settings(stored: Any, current: Any, free: frozenset[str]) -> list[str]:
    """"name old → new" for every field outside `free` in which `current` differs from `stored`."""
    differences = []
    for f in fields(stored):
        if f.name in free:
            continue
        a, b = getattr(stored, f.name), getattr(current, f.name)
        if a != b:
            differences.append(f"{f.name} {a!r} → {b!r}")
    return differences


def milestone_change(stored: Any, current: Any) -> list[str]:
    """The difference of the resolved learning-rate milestones, if any (a fraction of a changed
    --steps moves them)."""
    before, after = stored.resolved_milestones(), current.resolved_milestones()
    if before == after:
        return []
    return [f"milestones {list(before)} → {list(after)} {MILESTONES_HINT}"]
