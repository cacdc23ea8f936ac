"""Architecture-table entries of the SFT-GAN family (merged into `restore_cli.models.architectures`).

- `sftgan`: the runnable model, generator and prior network in one state dict (`generator.*`,
  `prior.*`), so that a shipped model can never pair a generator with categories it was not
  trained on. Config keys: the generator's, plus `prior_nf`, `prior_nb`, `features`.
- `sftgan-generator`: the generator alone, in the reference PyTorch layout (`SFT_Net`), e.g. the
  released OST weights imported with `restore models import … --arch sftgan-generator`; it runs
  with a user-supplied prior (`restore sr --prior FILE`).
- `sftgan-prior`: the category prior network alone (what `restore train sftgan-prior` makes).

All three serve `restore sr` (task TEXTURE_TASK); the engine dispatches on the architecture.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from restore_cli.models.sft import SFTGAN, CategoryPriorNet, SFTGenerator

TEXTURE_TASK = "sr-texture"

_GENERATOR: dict[str, Any] = {
    "in_nc": 3, "out_nc": 3, "categories": 8, "nf": 64, "nb": 16, "cond_nc": 32, "cond_hidden": 128, "sft_hidden": 32,
}
_GENERATOR_SMALL: dict[str, Any] = {**_GENERATOR, "nf": 32, "nb": 8}
_PRIOR: dict[str, Any] = {"in_nc": 3, "categories": 8, "nf": 32, "nb": 6, "features": 11}
_PRIOR_KEYS = {"nf": "prior_nf", "nb": "prior_nb", "features": "features"}


def _shape(state_dict: Mapping[str, Tensor], key: str, arch: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise ValueError(f"state dict is not in the {arch!r} layout: missing key {key!r}")
    return tuple(state_dict[key].shape)


def read_generator_config(state_dict: Mapping[str, Tensor], prefix: str = "", arch: str = "sftgan-generator") -> dict[str, Any]:
    """Generator hyper-parameters from tensor shapes (keys under `prefix`)."""
    head = _shape(state_dict, f"{prefix}conv0.weight", arch)
    block = re.compile(re.escape(prefix) + r"sft_branch\.(\d+)\.sft0\.SFT_scale_conv0\.weight$")
    nb = sum(1 for key in state_dict if block.match(key))
    if nb == 0:
        raise ValueError(f"state dict is not in the {arch!r} layout: no SFT residual blocks under {prefix}sft_branch")
    sft = _shape(state_dict, f"{prefix}sft_branch.0.sft0.SFT_scale_conv0.weight", arch)
    cond_in = _shape(state_dict, f"{prefix}CondNet.0.weight", arch)
    cond_out = _shape(state_dict, f"{prefix}CondNet.8.weight", arch)
    tail = _shape(state_dict, f"{prefix}HR_branch.8.weight", arch)
    _shape(state_dict, f"{prefix}sft_branch.{nb + 1}.weight", arch)  # the conv after the last SFT layer
    return {"in_nc": head[1], "out_nc": tail[0], "categories": cond_in[1], "nf": head[0], "nb": nb,
            "cond_nc": cond_out[0], "cond_hidden": cond_in[0], "sft_hidden": sft[0]}


def read_prior_config(state_dict: Mapping[str, Tensor], prefix: str = "", arch: str = "sftgan-prior") -> dict[str, Any]:
    """Prior-network hyper-parameters from tensor shapes (keys under `prefix`)."""
    head = _shape(state_dict, f"{prefix}head.weight", arch)
    tail = _shape(state_dict, f"{prefix}tail.weight", arch)
    centres = _shape(state_dict, f"{prefix}centres", arch)
    body = re.compile(re.escape(prefix) + r"body\.(\d+)\.weight$")
    nb = sum(1 for key in state_dict if body.match(key))
    return {"in_nc": head[1], "categories": tail[0], "nf": head[0], "nb": nb, "features": centres[1]}


def _read_sftgan(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    generator = read_generator_config(state_dict, "generator.", "sftgan")
    prior = read_prior_config(state_dict, "prior.", "sftgan")
    if prior["categories"] != generator["categories"] or prior["in_nc"] != generator["in_nc"]:
        raise ValueError(f"state dict is not a consistent 'sftgan' model: generator {generator}, prior {prior}")
    return {**generator, **{combined: prior[key] for key, combined in _PRIOR_KEYS.items()}}


def split_sftgan_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A combined `sftgan` config → (generator config, prior config)."""
    generator = {key: config[key] for key in _GENERATOR}
    prior = {"in_nc": config["in_nc"], "categories": config["categories"],
             **{key: config[combined] for key, combined in _PRIOR_KEYS.items()}}
    return generator, prior


def combined_config(generator: Mapping[str, Any], prior: Mapping[str, Any]) -> dict[str, Any]:
    """(generator config, prior config) → the combined `sftgan` config."""
    return {**{key: generator[key] for key in _GENERATOR}, **{combined: prior[key] for key, combined in _PRIOR_KEYS.items()}}


def _build_generator(config: dict[str, Any]) -> nn.Module:
    return SFTGenerator(**config)


def _build_prior(config: dict[str, Any]) -> nn.Module:
    return CategoryPriorNet(**config)


def _build_sftgan(config: dict[str, Any]) -> nn.Module:
    generator, prior = split_sftgan_config(config)
    return SFTGAN(SFTGenerator(**generator), CategoryPriorNet(**prior))


_SFTGAN = combined_config(_GENERATOR, _PRIOR)
_SFTGAN_SMALL = combined_config(_GENERATOR_SMALL, _PRIOR)


# Defined before the table module is imported (it reads PRESETS while importing this module).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "sftgan": ("sftgan", dict(_SFTGAN)),
    "sftgan-small": ("sftgan", dict(_SFTGAN_SMALL)),
    "sftgan-generator": ("sftgan-generator", dict(_GENERATOR)),
    "sftgan-prior": ("sftgan-prior", dict(_PRIOR)),
}
ARCHITECTURES: dict[str, Any] = {}

from restore_cli.models import architectures as _table  # noqa: E402  (see above)

ARCHITECTURES.update({
    "sftgan": _table.Architecture(
        name="sftgan",
        build=_build_sftgan,
        default_config=MappingProxyType(_SFTGAN),
        read_config=_read_sftgan,
        description="SFT-GAN ×4 generator with its category prior network (texture-realistic SR)",
        task=TEXTURE_TASK,
    ),
    "sftgan-generator": _table.Architecture(
        name="sftgan-generator",
        build=_build_generator,
        default_config=MappingProxyType(_GENERATOR),
        read_config=read_generator_config,
        description="SFT-GAN ×4 generator alone (reference SFT_Net layout); needs --prior FILE",
        task=TEXTURE_TASK,
    ),
    "sftgan-prior": _table.Architecture(
        name="sftgan-prior",
        build=_build_prior,
        default_config=MappingProxyType(_PRIOR),
        read_config=read_prior_config,
        description="SFT-GAN category prior network (K category logits per LR pixel)",
        task=TEXTURE_TASK,
    ),
})
# When this module is imported before the table, the table copied the still-empty dict: add the
# entries now (a no-op repeat when the table imported this module).
_table.ARCHITECTURES.update(ARCHITECTURES)
