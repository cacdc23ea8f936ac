"""Architecture-table entries of the toolchain models (merged into `restore_cli.models.architectures`).

- `toolbox`: the twelve RL-Restore tools in one module (keys tool01.… tool12.), config {channels};
- `toolchain-agent`: the LSTM agent, config {channels, tools, patch, hidden};
- `generic-cnn`: the plain residual CNN of the toolbox's size, config {channels, width, depth}.

Configs are read back from tensor shapes; the agent's patch side is only known up to
⌈patch/16⌉ from its FC layer, so the reader returns 16·⌈patch/16⌉ − 1 (63 for the reference).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from restore_cli.models.toolchain import TOOL_SPECS, GenericCNN, Toolbox, ToolchainAgent, tool_key

_TOOLBOX: dict[str, Any] = {"channels": 3}
_AGENT: dict[str, Any] = {"channels": 3, "tools": len(TOOL_SPECS), "patch": 63, "hidden": 50}
_GENERIC: dict[str, Any] = {"channels": 3, "width": 63, "depth": 14}


def _shape(state_dict: Mapping[str, Tensor], key: str, arch: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise ValueError(f"state dict is not in the {arch!r} layout: missing key {key!r}")
    return tuple(state_dict[key].shape)


def _read_toolbox(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    channels = {_shape(state_dict, f"{tool_key(i)}.{'conv1' if spec.kind == '3-layer' else 'head'}.weight", "toolbox")[1]
                for i, spec in enumerate(TOOL_SPECS)}
    if len(channels) != 1:
        raise ValueError(f"state dict is not in the 'toolbox' layout: tools take different channel counts {sorted(channels)}")
    return {"channels": channels.pop()}


def _read_agent(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    conv1 = _shape(state_dict, "conv1.weight", "toolchain-agent")
    fc = _shape(state_dict, "fc.weight", "toolchain-agent")
    q = _shape(state_dict, "q.weight", "toolchain-agent")
    side2, remainder = divmod(fc[1], 24)
    side = int(round(side2 ** 0.5))
    if remainder or side * side != side2:
        raise ValueError(f"state dict is not in the 'toolchain-agent' layout: fc takes {fc[1]} features, not 24·s²")
    return {"channels": conv1[1], "tools": q[0] - 1, "patch": 16 * side - 1, "hidden": q[1]}


def _read_generic(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    pattern = re.compile(r"^body\.(\d+)\.weight$")
    indices = sorted(int(m.group(1)) for key in state_dict if (m := pattern.match(key)))
    if not indices:
        raise ValueError("state dict is not in the 'generic-cnn' layout: no body.N.weight")
    first = _shape(state_dict, f"body.{indices[0]}.weight", "generic-cnn")
    return {"channels": first[1], "width": first[0], "depth": len(indices)}


def _build_toolbox(config: dict[str, Any]) -> nn.Module:
    return Toolbox(channels=config["channels"])


def _build_agent(config: dict[str, Any]) -> nn.Module:
    return ToolchainAgent(channels=config["channels"], tools=config["tools"], patch=config["patch"], hidden=config["hidden"])


def _build_generic(config: dict[str, Any]) -> nn.Module:
    return GenericCNN(channels=config["channels"], width=config["width"], depth=config["depth"])


def _entries(architecture: type) -> dict[str, Any]:
    return {
        "toolbox": architecture(
            name="toolbox",
            build=_build_toolbox,
            default_config=MappingProxyType(_TOOLBOX),
            read_config=_read_toolbox,
            description="RL-Restore toolbox: 12 residual CNNs (blur, noise, JPEG × 4 strengths) as tool01…tool12",
            task="toolchain",
        ),
        "toolchain-agent": architecture(
            name="toolchain-agent",
            build=_build_agent,
            default_config=MappingProxyType(_AGENT),
            read_config=_read_agent,
            description="RL-Restore agent: 4 strided convs, FC 32, LSTM 50, Q-values for 12 tools + stop",
            task="toolchain",
        ),
        "generic-cnn": architecture(
            name="generic-cnn",
            build=_build_generic,
            default_config=MappingProxyType(_GENERIC),
            read_config=_read_generic,
            description="plain residual CNN of the toolbox's size (comparison baseline for mixed distortions)",
            task="toolchain-baseline",
        ),
    }


# Both tables exist before the architecture table is imported: that module defines
# `Architecture`, then imports this one and merges these tables into its own.
ARCHITECTURES: dict[str, Any] = {}
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "toolbox": ("toolbox", dict(_TOOLBOX)),
    "toolchain-agent": ("toolchain-agent", dict(_AGENT)),
    "generic-cnn": ("generic-cnn", dict(_GENERIC)),
}

from restore_cli.models import architectures as _table  # noqa: E402

ARCHITECTURES.update(_entries(_table.Architecture))
# Imported on its own first, this module was merged into the table while still empty.
for _name, _entry in ARCHITECTURES.items():
    _table.ARCHITECTURES.setdefault(_name, _entry)
