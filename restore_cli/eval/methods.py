"""The things an evaluation compares: trained models run through the engine, and baselines.

A `Method` maps a `Case` (the degraded input and what is known about it) to a restored
1×C×H×W tensor on the [0, 1] scale at the reference's size; the runner quantises and scores it.
Model methods are built by one factory per protocol (`MODEL_FACTORIES`), so a protocol whose
model does not exist yet (toolchain: `toolchain_model`, jpeg: `jpeg_model`) is one function to
fill in later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from restore_cli.errors import RestoreError
from restore_cli.eval.degradations import Case
from restore_cli.eval.settings import MODEL_TASK, EvalConfig, ProtocolName


class Method:
    """Base class: `key` identifies the method in records and across reports (e.g. "model",
    "bicubic"); `label` is what tables show; `kind` is "model" or "baseline"."""

    key: str = ""
    label: str = ""
    kind: str = "baseline"
    definition: str = ""
    save_outputs: bool = True  # False for the "input" baseline: its output is the input itself

    def restore(self, case: Case) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "kind": self.kind, "definition": self.definition}


@dataclass
class ModelSpec:
    """One model the user asked for: a registry name or a weights file."""

    name: str | None = None
    weights: Path | None = None

    @property
    def label(self) -> str:
        if self.weights is not None:
            return Path(self.weights).stem
        return self.name or "default"


@dataclass
class EngineOptions:
    device: str = "auto"
    precision: str = "fp32"
    tile: int | None = 0
    tile_overlap: int = 32


class ModelMethod(Method):
    """A model from the registry or a weights file, run by the engine's `Restorer` (tiling, device,
    precision, gray/colour adaptation). `runner(restorer, case)` is the protocol's call."""

    kind = "model"

    def __init__(self, key: str, spec: ModelSpec, task: str, engine: EngineOptions,
                 runner: Callable[[Any, Case], Tensor], log: Callable[[str], None] | None = None) -> None:
        from restore_cli.engine.restore import TileRequest
        from restore_cli.engine.session import ModelChoice, RestorerCache

        self.key = key
        self.spec = spec
        self.label = spec.label
        self.runner = runner
        choice = ModelChoice(task=task, name=spec.name, weights=spec.weights, device=engine.device,
                             precision=engine.precision, tiles=TileRequest(engine.tile, engine.tile_overlap))
        self.cache = RestorerCache(choice, log=log)
        self.used: dict[int, Any] = {}  # channels → Restorer

    def restore(self, case: Case) -> Tensor:
        channels = int(case.degraded.shape[1])
        restorer = self.cache.for_channels(channels)
        self.used[channels] = restorer
        if self.spec.name is None and self.spec.weights is None:
            self.label = restorer.model.name
        return self.runner(restorer, case)

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        data["models"] = [model_record(r.model, r.placement, channels) for channels, r in sorted(self.used.items())]
        return data


def model_record(model: Any, placement: Any, channels: int) -> dict[str, Any]:
    """What a report says of one loaded model: name, architecture, weights and hash, placement."""
    return {
        "channels": channels, "name": model.name, "arch": model.arch, "config": _jsonable(model.config),
        "weights": None if model.weights_path is None else str(model.weights_path), "sha256": model.sha256,
        "device": str(placement.device), "precision": placement.precision,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# -- what each protocol asks of a model ------------------------------------------------------


def run_denoiser(config: EvalConfig) -> Callable[[Any, Case], Tensor]:
    def run(restorer: Any, case: Case) -> Tensor:
        sigma = case.sigma
        if config.model_sigma == "estimate":
            from restore_cli.ops.noise_estimation import estimate_noise_sigma

            sigma = float(estimate_noise_sigma(case.degraded[0].double()))
            case.details["model_sigma_255"] = round(sigma * 255.0, 4)
        return restorer.denoise(case.degraded, sigma)

    return run


def run_usrnet(config: EvalConfig) -> Callable[[Any, Case], Tensor]:
    def run(restorer: Any, case: Case) -> Tensor:
        assert case.kernel is not None
        return restorer.super_resolve(case.degraded, case.kernel, case.scale, case.sigma, pad_mode=config.pad_mode)

    return run


ModelFactory = Callable[[EvalConfig, str, ModelSpec, EngineOptions, "Callable[[str], None] | None"], Method]


def engine_model(run: Callable[[EvalConfig], Callable[[Any, Case], Tensor]]) -> ModelFactory:
    """A factory of `ModelMethod`s for models the engine's `Restorer` runs (denoisers, USRNet)."""

    def build(config: EvalConfig, key: str, spec: ModelSpec, engine: EngineOptions,
              log: Callable[[str], None] | None) -> Method:
        return ModelMethod(key, spec, MODEL_TASK[config.protocol], engine, run(config), log)

    return build


class ToolchainMethod(Method):
    """The RL-Restore toolchain (issue 6): the agent (the named model or weights file; default the
    shipped `toolchain-agent`) with its shipped toolbox, voting over 63×63 patches per step."""

    kind = "model"

    def __init__(self, key: str, spec: ModelSpec, engine: EngineOptions, log: Callable[[str], None] | None) -> None:
        from restore_cli.engine.restore import TileRequest
        from restore_cli.engine.toolchain import load_toolchain

        self.key = key
        self.spec = spec
        self.runner = load_toolchain(None, spec.weights or spec.name, device=engine.device, precision=engine.precision,
                                     tiles=TileRequest(engine.tile, engine.tile_overlap), log=log)
        self.label = spec.label if (spec.name or spec.weights) else "toolchain"

    def restore(self, case: Case) -> Tensor:
        y, chain = self.runner.run(case.degraded)
        case.details["chain"] = chain.names
        return y

    def describe(self) -> dict[str, Any]:
        """Both files the chains come from (the toolbox and the agent), so that a report names the
        pair it measured."""
        data = super().describe()
        channels = self.runner.channels
        data["models"] = [model_record(self.runner.toolbox, self.runner.placement, channels),
                          model_record(self.runner.agent_model, self.runner.placement, channels)]
        return data


class FixedChainMethod(Method):
    """One fixed chain of tools applied to every input, with the toolbox of a toolchain model: a
    chain the user names (`--chain`), or the best fixed chain recorded with the agent at training
    (`--baseline`), which is RL-Restore's "best single chain" comparison."""

    kind = "baseline"

    def __init__(self, runner: Any, chain: tuple[int, ...], recorded: bool) -> None:
        from restore_cli.engine.toolchain import chain_text

        self.runner = runner
        self.chain = chain
        text = chain_text(chain)
        self.key = "fixed-chain" if recorded else f"chain:{text}"
        arrow = " → ".join(text.split(","))
        self.label = f"Fixed chain {arrow} (train-best)" if recorded else f"Chain {arrow}"
        self.definition = (f"the tools {arrow} of toolbox '{runner.toolbox.name}' on every input"
                           + (", the best single chain on the agent's training patches (recorded at training)" if recorded else ""))

    def restore(self, case: Case) -> Tensor:
        return self.runner.run_chain(case.degraded, self.chain)


class NoStopMethod(Method):
    """The stop ablation: the agent of a toolchain model with its stop action masked out, so that
    every chain runs the full number of steps."""

    kind = "ablation"

    def __init__(self, method: ToolchainMethod) -> None:
        self.runner = method.runner.without_stop()
        self.key = f"{method.key}-no-stop"
        self.label = f"{method.label}, no stop"
        self.definition = f"the agent of {method.label} with the stop action masked out ({self.runner.max_steps} tools always)"

    def restore(self, case: Case) -> Tensor:
        y, chain = self.runner.run(case.degraded)
        case.details[f"chain_{self.key}"] = chain.names
        return y


def toolchain_extra_methods(config: EvalConfig, methods: list[Method], chains: list[str],
                            ablate_stop: bool = False) -> list[Method]:
    """toolchain: each agent with its stop action masked out (`--ablate-stop`), the fixed chains
    asked for with `--chain`, and with --baseline the agent's recorded best fixed chain, all run
    with the toolbox of the first toolchain model."""
    if config.protocol is not ProtocolName.toolchain:
        if chains or ablate_stop:
            raise RestoreError(f"{'--chain' if chains else '--ablate-stop'} is a toolchain option")
        return []
    from restore_cli.engine.toolchain import parse_chain

    parsed = [parse_chain(text) for text in chains]
    agents = [m for m in methods if isinstance(m, ToolchainMethod)]
    if not agents:
        if parsed or ablate_stop:
            raise RestoreError(f"{'--chain' if parsed else '--ablate-stop'} runs the toolchain model: drop --no-model")
        return []
    out: list[Method] = [NoStopMethod(m) for m in agents] if ablate_stop else []
    runner = agents[0].runner
    recorded = runner.fixed_chain if config.baseline else None
    if recorded:
        out.append(FixedChainMethod(runner, recorded, recorded=True))
    seen = {recorded} if recorded else set()
    for chain in parsed:
        if chain not in seen:
            out.append(FixedChainMethod(runner, chain, recorded=False))
            seen.add(chain)
    return out


class GenericCNNMethod(Method):
    """The generic CNN baseline of issue 6 (one residual CNN of the toolbox's size trained on
    mixed distortions), named like any model (`--model NAME` or `--weights FILE`)."""

    kind = "model"

    def __init__(self, key: str, spec: ModelSpec, engine: EngineOptions) -> None:
        from restore_cli.engine.toolchain import load_generic

        self.key = key
        self.spec = spec
        self.runner = load_generic(spec.name, spec.weights, device=engine.device, precision=engine.precision)
        self.label = spec.label

    def restore(self, case: Case) -> Tensor:
        return self.runner.run(case.degraded)

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        data["models"] = [model_record(self.runner.model, self.runner.placement, self.runner.channels)]
        return data


def toolchain_model(config: EvalConfig, key: str, spec: ModelSpec, engine: EngineOptions,
                    log: Callable[[str], None] | None) -> Method:
    """The RL-Restore toolchain on `case.degraded` (RGB in [0, 1]), or the generic CNN baseline
    when the named model is one."""
    from restore_cli.engine.toolchain import GENERIC_ARCH, model_arch

    if model_arch(spec.name, spec.weights) == GENERIC_ARCH:
        return GenericCNNMethod(key, spec, engine)
    return ToolchainMethod(key, spec, engine, log)


class SftganMethod(Method):
    """An SFT-GAN model (`restore sr --model sftgan`) on the LR input `case.degraded`: its own prior
    network's categories, or one category forced on every pixel (`category`, the prior swap).
    Several methods may share one loaded model (`resolver`)."""

    kind = "model"

    def __init__(self, key: str, spec: ModelSpec, engine: EngineOptions, category: int | None = None,
                 resolver: Any = None, log: Callable[[str], None] | None = None) -> None:
        from restore_cli.engine.restore import TileRequest
        from restore_cli.engine.sftgan import PriorRequest, open_texture_resolver

        self.key = key
        self.spec = spec
        self.resolver = resolver or open_texture_resolver(spec.name, spec.weights, engine.device, engine.precision,
                                                          TileRequest(engine.tile, engine.tile_overlap), log)
        self.request = PriorRequest() if category is None else PriorRequest(kind="category", category=category)
        base = spec.label if (spec.name or spec.weights) else self.resolver.model.name
        self.label = base if category is None else f"{base} category {category}"
        self.definition = f"SFT-GAN ×4, prior: {self.request.describe()}"

    def restore(self, case: Case) -> Tensor:
        from restore_cli.engine.sftgan import super_resolve_texture

        return super_resolve_texture(self.resolver, case.degraded, self.request)[0]

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        data["prior"] = self.request.describe()
        data["models"] = [model_record(self.resolver.model, self.resolver.placement, channels=3)]
        return data


def texture_model(config: EvalConfig, key: str, spec: ModelSpec, engine: EngineOptions,
                  log: Callable[[str], None] | None) -> Method:
    """texture-sr: an SFT-GAN model (the default, `sftgan`) or a PSNR-trained USRNet for comparison."""
    from restore_cli.engine.sftgan import texture_architecture

    if spec.name is None and spec.weights is None:
        spec = ModelSpec(name="sftgan")
    if texture_architecture(spec.name, spec.weights) is not None:
        return SftganMethod(key, spec, engine, log=log)
    return ModelMethod(key, spec, MODEL_TASK[config.protocol], engine, run_usrnet(config), log)


def prior_swap_methods(config: EvalConfig, methods: list[Method]) -> list[Method]:
    """texture-sr --prior-swap: each SFT-GAN model again with every category forced everywhere."""
    if not config.prior_swap:
        return []
    extra: list[Method] = []
    for method in methods:
        if isinstance(method, SftganMethod):
            for k in range(method.resolver.categories):
                extra.append(SftganMethod(f"{method.key}-c{k}", method.spec, EngineOptions(), category=k,
                                          resolver=method.resolver))
    if not extra:
        raise RestoreError("--prior-swap needs an SFT-GAN model (e.g. --model sftgan)")
    return extra


def jpeg_model(config: EvalConfig, key: str, spec: ModelSpec, engine: EngineOptions,
               log: Callable[[str], None] | None) -> Method:
    """Where a JPEG artefact-removal model plugs in: return a `Method` restoring `case.degraded`
    (1×1×H×W gray in [0, 1], the decoded JPEG of quality `case.setting.quality`)."""
    raise RestoreError("JPEG artefact-removal models are not available yet; run with --baseline for the input rows")


#: One model factory per protocol: (config, key, spec, engine, log) → Method.
MODEL_FACTORIES: dict[ProtocolName, ModelFactory] = {
    ProtocolName.denoise: engine_model(run_denoiser),
    ProtocolName.sfm_sweep: engine_model(run_denoiser),
    ProtocolName.usrnet_table1: engine_model(run_usrnet),
    ProtocolName.bicubic_sr: engine_model(run_usrnet),
    ProtocolName.deblur: engine_model(run_usrnet),
    ProtocolName.toolchain: toolchain_model,
    ProtocolName.jpeg: jpeg_model,
    ProtocolName.texture_sr: texture_model,
}

#: Protocols with no model yet: with --baseline and no model named, they run the baselines only.
NO_MODEL_YET: frozenset[ProtocolName] = frozenset({ProtocolName.jpeg})


def model_methods(config: EvalConfig, specs: list[ModelSpec], engine: EngineOptions,
                  log: Callable[[str], None] | None = None) -> list[Method]:
    """The model methods of a run: one per spec (keys "model", "model2", …); the task's default
    model when none is given. Empty for protocols without a model when only baselines are asked."""
    if config.protocol in NO_MODEL_YET and not specs and config.baseline:
        return []
    factory = MODEL_FACTORIES[config.protocol]
    methods = [factory(config, "model" if i == 0 else f"model{i + 1}", spec, engine, log)
               for i, spec in enumerate(specs or [ModelSpec()])]
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        for i, method in enumerate(methods):
            method.label = f"{method.label} ({i + 1})"
    return methods


def restored_to_reference_size(y: Tensor, case: Case) -> Tensor:
    """The restored tensor cut to the reference's H×W (the model may pad); a size mismatch
    beyond that is a bug in the method."""
    h, w = case.reference.shape[-2:]
    if y.shape[-2] < h or y.shape[-1] < w:
        raise RuntimeError(f"restored image is {tuple(y.shape[-2:])}, smaller than the reference {h}×{w}")
    return y[..., :h, :w].to(torch.float32)
