"""The architecture table: one place that maps an architecture name to its builder, its default
hyper-parameters and a reader that recovers those hyper-parameters from a state dict's tensor
shapes (spandrel-style), so that a weights file needs no side-car config.

Configs are plain dicts (widths `nc` as a tuple of ints). `build_model` merges the given config
over the defaults and rejects unknown keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from restore_cli.models.resunet import NoiseMapDenoiser
from restore_cli.models.usrnet import USRNet


@dataclass(frozen=True)
class Architecture:
    """One network family: `build(config)` makes a randomly initialised module,
    `infer_config(state_dict)` reads the config back from tensor shapes."""

    name: str
    build: Callable[[dict[str, Any]], nn.Module]
    default_config: Mapping[str, Any]
    read_config: Callable[[Mapping[str, Tensor]], dict[str, Any]]
    description: str = ""
    task: str = ""  # the command that runs it: "sr", "denoise", "toolchain", ...

    def infer_config(self, state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
        """Hyper-parameters of a state dict in this architecture's layout (ValueError if it is not)."""
        return self.read_config(state_dict)

    def full_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` merged over the defaults; ValueError on keys the architecture does not know."""
        unknown = sorted(set(config) - set(self.default_config))
        if unknown:
            raise ValueError(f"architecture {self.name!r} has no option(s) {unknown}; known: {sorted(self.default_config)}")
        merged = {**self.default_config, **config}
        if "nc" in merged:
            merged["nc"] = tuple(int(c) for c in merged["nc"])
        return merged


def _shape(state_dict: Mapping[str, Tensor], key: str, arch: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise ValueError(f"state dict is not in the {arch!r} layout: missing key {key!r}")
    return tuple(state_dict[key].shape)


def _read_resunet(state_dict: Mapping[str, Tensor], prefix: str, arch: str) -> dict[str, Any]:
    """in_nc, out_nc, nc (4 widths) and nb of a ResUNet whose keys start with `prefix`."""
    head = _shape(state_dict, f"{prefix}m_head.weight", arch)
    block = re.compile(re.escape(prefix) + r"m_down1\.(\d+)\.res\.0\.weight$")
    nb = sum(1 for key in state_dict if block.match(key))
    if nb == 0:
        raise ValueError(f"state dict is not in the {arch!r} layout: no residual blocks under {prefix}m_down1")
    widths = [head[0]] + [_shape(state_dict, f"{prefix}m_down{i}.{nb}.weight", arch)[0] for i in (1, 2, 3)]
    tail = _shape(state_dict, f"{prefix}m_tail.weight", arch)
    return {"in_nc": head[1], "out_nc": tail[0], "nc": tuple(widths), "nb": nb}


def _read_usrnet(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    prior = _read_resunet(state_dict, "p.", "usrnet")
    h_first = _shape(state_dict, "h.mlp.0.weight", "usrnet")
    h_last = _shape(state_dict, "h.mlp.4.weight", "usrnet")
    if h_last[0] % 2:
        raise ValueError(f"state dict is not in the 'usrnet' layout: h.mlp.4 has an odd number of outputs ({h_last[0]})")
    return {"n_iter": h_last[0] // 2, "h_nc": h_first[0], **prior}


def _read_denoiser(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    net = _read_resunet(state_dict, "", "resunet-denoiser")
    if net["in_nc"] != net["out_nc"] + 1:
        raise ValueError(
            f"state dict is not a noise-map denoiser: head takes {net['in_nc']} channels, tail gives {net['out_nc']}"
        )
    return {"channels": net["out_nc"], "nc": net["nc"], "nb": net["nb"]}


def _build_usrnet(config: dict[str, Any]) -> nn.Module:
    return USRNet(
        n_iter=config["n_iter"],
        h_nc=config["h_nc"],
        in_nc=config["in_nc"],
        out_nc=config["out_nc"],
        nc=config["nc"],
        nb=config["nb"],
    )


def _build_denoiser(config: dict[str, Any]) -> nn.Module:
    return NoiseMapDenoiser(channels=config["channels"], nc=config["nc"], nb=config["nb"])


_USRNET_FULL: dict[str, Any] = {"n_iter": 8, "h_nc": 64, "in_nc": 4, "out_nc": 3, "nc": (64, 128, 256, 512), "nb": 2}
_USRNET_TINY: dict[str, Any] = {"n_iter": 6, "h_nc": 32, "in_nc": 4, "out_nc": 3, "nc": (16, 32, 64, 64), "nb": 2}
_DRUNET_COLOR: dict[str, Any] = {"channels": 3, "nc": (64, 128, 256, 512), "nb": 4}
_DRUNET_GRAY: dict[str, Any] = {"channels": 1, "nc": (64, 128, 256, 512), "nb": 4}

ARCHITECTURES: dict[str, Architecture] = {
    "usrnet": Architecture(
        name="usrnet",
        build=_build_usrnet,
        default_config=MappingProxyType(_USRNET_FULL),
        read_config=_read_usrnet,
        description="USRNet deep unfolding SR (data step D, ResUNet prior p, hyper-network h)",
        task="sr",
    ),
    "resunet-denoiser": Architecture(
        name="resunet-denoiser",
        build=_build_denoiser,
        default_config=MappingProxyType(_DRUNET_COLOR),
        read_config=_read_denoiser,
        description="ResUNet on [image, σ map] (DRUNet layout); non-blind Gaussian denoiser",
        task="denoise",
    ),
}

# The RL-Restore toolbox/agent and SFT-GAN families keep their entries in their own modules.
from restore_cli.models import sftgan_architectures, toolchain_architectures  # noqa: E402

ARCHITECTURES.update(toolchain_architectures.ARCHITECTURES)
ARCHITECTURES.update(sftgan_architectures.ARCHITECTURES)

# Named configurations: preset name → (architecture, full config). USRGAN(-tiny) weights use the
# usrnet(-tiny) configs; DRUNet is the resunet-denoiser with nb = 4.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "usrnet": ("usrnet", dict(_USRNET_FULL)),
    "usrnet-tiny": ("usrnet", dict(_USRNET_TINY)),
    "drunet": ("resunet-denoiser", dict(_DRUNET_COLOR)),
    "drunet-gray": ("resunet-denoiser", dict(_DRUNET_GRAY)),
    **toolchain_architectures.PRESETS,
    **sftgan_architectures.PRESETS,
}


def get_architecture(arch: str) -> Architecture:
    """The table entry for `arch`; KeyError naming the known architectures otherwise."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


def build_model(arch: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """A randomly initialised `arch` with `config` merged over its defaults."""
    architecture = get_architecture(arch)
    return architecture.build(architecture.full_config(config or {}))
