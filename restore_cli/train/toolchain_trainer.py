"""Training the RL-Restore toolchain (ANCHORS 4.1–4.5): the tools, their joint fine-tuning, a
generic CNN for comparison, and the agent (recurrent deep Q-learning, or regression to searched
returns).

`restore train tools` (`ToolsConfig`, `run_tools_training`):
- single (default): every step trains all twelve tools, each on its own batch of 63×63 patches
  with one distortion drawn uniformly over its range (`TOOL_SPECS`), MSE to the clean patch.
  One Adam over the toolbox equals twelve independent ones (the losses share no parameter).
- joint (`--joint --agent A --init T`): the paper's joint training. Each step the frozen agent
  plays greedy chains on a batch of mixed-distortion patches; the MSE of each chain's final
  patch to the clean one is back-propagated through the chain into the tools it used, plus the
  single-distortion loss of one tool (round robin), weighted by `single_weight`, so that tools
  keep their specialities. Alternate with `restore train agent` (ANCHORS 4.4, Algorithm 1).
- generic (`--generic`): the generic CNN on mixed-distortion patches with the same steps.

`restore train agent` (`AgentConfig`, `run_agent_training`), tools frozen:
- dqn: DRQN as in the reference (ANCHORS 4.3): episodes of ≤ 3 steps, reward = PSNR gain of each
  step, episodes end at stop, at the step limit or when PSNR falls below its start, patches above
  50 dB skipped; ε-greedy; replay of whole episodes; minibatches of 32 episodes grouped by length,
  each group weighted by its share; y = r + γ·max Q_target(s′) (y = r at the end); Huber loss;
  Adam with lr halving continuously per `lr_half_life` steps down to `lr_floor`; target copied
  every `target_every` steps. Steps count transitions (environment steps), as in the reference.
  Episodes are played `parallel` at a time; the learner then catches up with the train steps and
  target copies that fell due meanwhile. Differences: the replay holds `replay` transitions
  (float16; 20,000 by default, the reference's 500,000 would take 12 GB), and acting uses the
  network of the round's start.
- search (faster): for each training patch a beam search over chains (every tool at the start,
  then every tool after the `beam` best states of each depth) gives Q-targets r + γ·V(next) with
  V = max(0, best child) where the child was expanded, 0 (stop) otherwise; the agent is then
  trained by Huber regression to these targets along the searched paths. Tools run once per
  patch (12·(1 + beam·(max_steps − 1)) runs) and the agent trains on the cache as long as wanted.
  The cache is kept in OUT/search/ chunk by chunk, so an interrupted search resumes by running
  the same command again.

The loop, checkpoints, resume, time limit, progress and the log are `train.run_loop`'s: model
and optimizer in `restore_cli.train.checkpoint` folders, exact resume (random generator states
saved; the DQN's target network and replay memory go into OUT/dqn-<step>.safetensors, written
before the checkpoint that names it). Configuration: `train.toolchain_config`; the DQN learner:
`train.toolchain_dqn`; the search: `train.toolchain_search`; export: `train.toolchain_export`.
"""


from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from restore_cli.engine.device import Placement, select_device
from restore_cli.engine.toolchain import DEFAULT_TOOLBOX, chain_text, greedy_rollout, rank_fixed_chains, resolve_toolchain_model
from restore_cli.errors import RestoreError
from restore_cli.models.toolchain import TOOL_SPECS, ToolchainAgent
from restore_cli.ops.patches import patch_log_mse, patch_psnr
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.data import load_image_set
from restore_cli.train.distributed import DistributedContext
from restore_cli.train.model_export import weights_record
from restore_cli.train.progress import SilentObserver, StopReason, TrainingObserver, TrainResult
from restore_cli.train.run_loop import TrainingRun, built_with_seed, learning_rate_at
from restore_cli.train.toolchain_config import FAMILY, AgentConfig, ToolsConfig, config_mismatches, training_placement
from restore_cli.train.toolchain_data import (
    PatchPairs,
    load_training_patches_source,
    mixed_pairs,
    tool_pairs,
    toolbox_pairs,
    validation_rng,
)
from restore_cli.train.toolchain_dqn import DQNLearner, Episode, ToolboxEnvironment, ToolRunsStopped, epsilon_at
from restore_cli.train.toolchain_search import SearchSet, search_regression_step, search_returns

SEARCH_DIR = "search"
FIXED_CHAIN_FILE = "fixed-chain.json"
FIXED_CHAIN_BEAM = 12
DQN_FILE_RE = re.compile(r"^dqn-(\d+)\.safetensors$")


def tools_loss(kind: str, out: Tensor, target: Tensor) -> Tensor:
    """`--loss`: "mse", the batch MSE, or "psnr", the mean over patches of 10·log10(MSE), which is
    minus the mean patch PSNR the toolchain eval reports: every patch counts alike, where the MSE
    is dominated by the most damaged ones."""
    if kind == "mse":
        return F.mse_loss(out, target)
    return patch_log_mse(out, target).mean()


@torch.no_grad()
def tool_psnrs(toolbox: nn.Module, pairs: list[PatchPairs]) -> list[tuple[float, float]]:
    """Tool i on pairs[i] (its own distortion): (mean PSNR of the output clamped to [0, 1], mean
    PSNR gain over the input) per tool, in dB."""
    results = []
    for index, pair in enumerate(pairs):
        out = toolbox(pair.inputs, index).float().clamp(0.0, 1.0)
        psnr_out = float(patch_psnr(out, pair.targets).mean())
        results.append((psnr_out, psnr_out - float(patch_psnr(pair.inputs, pair.targets).mean())))
    return results


# --- the runs --------------------------------------------------------------------------------------


class _ToolchainRun(TrainingRun):
    """What tools and agent runs share (the loop is `TrainingRun`'s): one process, patches of the
    training images, toolchain checkpoints, `train` (or `explore`) records with the mean loss."""

    task = ""
    divergence_advice = "a lower --lr"
    saves_cuda_rng = False
    saves_grad_scaler = False

    def _select_placement(self) -> Placement:
        return training_placement(self.config.precision, self.device)

    def _load_data(self) -> None:
        cfg = self.config
        self.images, self.data_fingerprint = load_training_patches_source(cfg.data, cfg.channels, cfg.patch)
        self.val_pairs: PatchPairs | None = None

    def _check_checkpoint_kind(self, checkpoint: ckpt.Checkpoint) -> None:
        state = checkpoint.state
        if state.get("family") != FAMILY or state.get("task") != self.task:
            raise RestoreError(f"not a `restore train {self.task}` checkpoint (it is {state.get('family', 'image')}/{state.get('task')})", checkpoint.path)

    def _config_mismatches(self, stored: Any) -> list[str]:
        return config_mismatches(stored, self.config)

    def _new_model(self) -> nn.Module:
        """The run's network, initialised from the seed, on the device."""
        from restore_cli.models.architectures import build_model

        cfg = self.config
        model_config = cfg.model_config()
        return built_with_seed(cfg.seed, lambda: build_model(cfg.arch, model_config)).to(self.device)

    def _load_val(self, severity: str) -> PatchPairs | None:
        cfg = self.config
        if cfg.val is None:
            return None
        images = load_image_set([cfg.val], cfg.channels, min_size=cfg.patch)
        rng, generator = validation_rng()
        return mixed_pairs(images, cfg.val_patches, cfg.patch, severity, rng, generator)

    def _state_identity(self) -> dict[str, Any]:
        cfg = self.config
        return {"family": FAMILY, "task": self.task, "config": cfg.to_json(), "arch": cfg.arch,
                "model_config": cfg.model_config()}

    def _start_fields(self) -> dict[str, Any]:
        return {"device": str(self.device), "precision": self.placement.precision, "images": len(self.images)}

    def _task_label(self) -> str:
        return self.task

    def _val_count(self) -> int:
        if self.val_pairs is None:
            return 0
        shape = self.val_pairs.inputs.shape
        return int(shape[0] * shape[1]) if len(shape) == 5 else int(shape[0])

    def _log_extra(self) -> dict[str, Any]:
        return {}

    def _log_interval(self, interval: list[dict[str, float]], started: float, from_step: int) -> None:
        """A `train` record with the interval's mean loss, or `explore` where no step trained."""
        record: dict[str, Any] = {"kind": "train" if interval else "explore", "step": self.step,
                                  **self._interval_rates(started, from_step), **self._log_extra()}
        if interval:
            record["loss"] = float(np.mean([r["loss"] for r in interval]))
        self._write_log(record)


class _ToolsRun(_ToolchainRun):
    task = "tools"
    config: ToolsConfig

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        cfg = self.config
        self.model = self._new_model()
        if cfg.init is not None and checkpoint is None:
            self._load_init(cfg.init)
        self.model.to(self.device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        self.base_lrs = [cfg.lr]
        self.agent: ToolchainAgent | None = None
        if cfg.mode == "joint":
            assert cfg.agent is not None
            resolved = resolve_toolchain_model(str(cfg.agent), "toolchain-agent", "--agent", "toolchain-agent", "restore train agent")
            self.agent = resolved.module.to(self.device).eval()  # type: ignore[assignment]
            for p in self.agent.parameters():  # type: ignore[union-attr]
                p.requires_grad_(False)
            self.agent_sha256 = resolved.sha256
            if checkpoint is not None and checkpoint.state.get("agent_sha256") != resolved.sha256:
                raise RestoreError("--agent differs from the agent the checkpoint was tuned with", checkpoint.path)
        self.val_pairs = self._load_val(cfg.severity) if cfg.mode != "single" else self._load_tool_val()
        self._produced = checkpoint.step if checkpoint is not None else 0

    def _load_init(self, path: Path) -> None:
        resolved = resolve_toolchain_model(str(path), "toolbox", "--init", "toolbox", "restore train tools")
        self.model.load_state_dict(resolved.module.state_dict())
        self.init_record = (weights_record(resolved.weights_path) if resolved.weights_path is not None
                            else {"name": resolved.name, "sha256": resolved.sha256})

    def _load_tool_val(self) -> PatchPairs | None:
        cfg = self.config
        if cfg.val is None:
            return None
        images = load_image_set([cfg.val], cfg.channels, min_size=cfg.patch)
        rng, generator = validation_rng()
        per_tool = max(1, cfg.val_patches // len(TOOL_SPECS))
        pairs = toolbox_pairs(images, per_tool, cfg.patch, rng, generator)
        return PatchPairs(torch.stack([p.inputs for p in pairs]), torch.stack([p.targets for p in pairs]))

    def _make_batch(self) -> Any:
        cfg = self.config
        if cfg.mode == "single":
            batch: Any = toolbox_pairs(self.images, cfg.batch, cfg.patch, self.rng, self.generator)
        elif cfg.mode == "generic":
            batch = mixed_pairs(self.images, cfg.batch, cfg.patch, cfg.severity, self.rng, self.generator)
        else:
            index = self._produced % len(TOOL_SPECS)
            mixed = mixed_pairs(self.images, cfg.batch, cfg.patch, cfg.severity, self.rng, self.generator)
            single = tool_pairs(self.images, TOOL_SPECS[index], cfg.batch, cfg.patch, self.rng, self.generator)
            batch = (mixed, index, single)
        self._produced += 1
        return batch

    def _before_loop(self) -> None:
        self.model.train()

    def _loss(self, batch: Any) -> Tensor:
        cfg, model, device = self.config, self.model, self.device
        if cfg.mode == "single":
            total = torch.zeros((), device=device)
            for index, pairs in enumerate(batch):
                pairs = pairs.to(device)
                with self.placement.autocast():
                    out = model(pairs.inputs.contiguous(memory_format=torch.channels_last), index)
                total = total + self._criterion(out.float(), pairs.targets)
            return total / len(batch)
        if cfg.mode == "generic":
            pairs = batch.to(device)
            with self.placement.autocast():
                out = model(pairs.inputs.contiguous(memory_format=torch.channels_last))
            return self._criterion(out.float(), pairs.targets)
        mixed, index, single = batch
        chain_loss = self._criterion(self._chain_output(mixed.inputs.to(device)), mixed.targets.to(device))
        single = single.to(device)
        with self.placement.autocast():
            out = model(single.inputs, index)
        return chain_loss + cfg.single_weight * self._criterion(out.float(), single.targets)

    def _criterion(self, out: Tensor, target: Tensor) -> Tensor:
        return tools_loss(self.config.loss, out, target)

    def _chain_output(self, x: Tensor) -> Tensor:
        """The agent's greedy chain on each patch with gradients through the tools it used."""
        agent = self.agent
        assert agent is not None
        n = x.shape[0]
        state = agent.initial_state(n, self.device)
        previous = torch.full((n,), -1, dtype=torch.long, device=self.device)
        alive = torch.ones(n, dtype=torch.bool, device=self.device)
        current = x
        for _ in range(self.config.max_steps):
            with torch.no_grad():
                q, state = agent(current.detach().float(), previous, state)
            choice = q.argmax(dim=1)
            alive = alive & (choice != agent.stop_action)
            if not bool(alive.any()):
                break
            pieces = current.clone()
            for tool in torch.unique(choice[alive]).tolist():
                idx = torch.nonzero(alive & (choice == tool)).flatten()
                with self.placement.autocast():
                    out = self.model(current[idx], int(tool))
                pieces = pieces.index_copy(0, idx, out.float().clamp(0.0, 1.0))
            current = pieces
            previous = torch.where(alive, choice, torch.full_like(choice, -1))
        return current.float()

    def _step(self, batch: Any) -> dict[str, float]:
        loss = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        self._optimizer_step()
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        assert self.val_pairs is not None
        cfg, model = self.config, self.model
        model.eval()
        try:
            if cfg.mode == "single":
                pairs = [PatchPairs(x, y).to(self.device) for x, y in zip(self.val_pairs.inputs, self.val_pairs.targets)]
                outs, gains = zip(*tool_psnrs(model, pairs))
                return {"psnr": float(np.mean(outs)),
                        "gain_per_tool": {spec.name: round(g, 3) for spec, g in zip(TOOL_SPECS, gains)},
                        "protocol": f"{self.val_pairs.inputs.shape[1]} patches per tool in its range, RGB [0,1] PSNR"}
            x, y = self.val_pairs.inputs.to(self.device), self.val_pairs.targets.to(self.device)
            if cfg.mode == "generic":
                out = model(x).float().clamp(0.0, 1.0)
            else:
                out = self._chain_output(x)
            psnr_in, psnr_out = float(patch_psnr(x, y).mean()), float(patch_psnr(out, y).mean())
            return {"psnr": psnr_out, "gain": psnr_out - psnr_in,
                    "protocol": f"{x.shape[0]} {cfg.severity} patches, input {psnr_in:.2f} dB"}
        finally:
            model.train()

    def _state_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"mode": self.config.mode}
        if getattr(self, "agent_sha256", None):
            extra["agent_sha256"] = self.agent_sha256
        return extra


class _AgentRun(_ToolchainRun):
    task = "agent"
    config: AgentConfig

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        cfg = self.config
        toolbox = resolve_toolchain_model(cfg.toolbox, "toolbox", "--toolbox", DEFAULT_TOOLBOX, "restore train tools")
        if int(toolbox.config["channels"]) != cfg.channels:
            raise RestoreError(f"the toolbox takes {toolbox.config['channels']}-channel images; train the agent with --channels {toolbox.config['channels']}")
        self.toolbox_sha256 = toolbox.sha256
        if checkpoint is not None and checkpoint.state.get("toolbox_sha256") != toolbox.sha256:
            raise RestoreError("the toolbox differs from the one the checkpoint was trained with", checkpoint.path)
        self.env = ToolboxEnvironment(toolbox.module, self.images, cfg.patch, cfg.severity, cfg.single_share,
                                      self.device, self.placement, clean_share=cfg.clean_share)
        self.val_pairs = self._load_val(cfg.severity)
        self.model = self._new_model()
        self.agent: ToolchainAgent = self.model  # type: ignore[assignment]
        if cfg.method == "dqn":
            self.learner = DQNLearner(self.agent, self.env, cfg.dqn_settings(), self.device)
            self.optimizer = self.learner.optimizer
            if checkpoint is not None:
                self._load_dqn_file(checkpoint)
        else:
            self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=cfg.lr)  # type: ignore[arg-type]
        self.last_losses: list[float] = []
        self.last_episodes: list[Episode] = []

    # dqn extra state ---------------------------------------------------------------------------------
    def _load_dqn_file(self, checkpoint: ckpt.Checkpoint) -> None:
        info = checkpoint.state.get("dqn")
        if not info:
            raise RestoreError("the checkpoint has no DQN state (target network, replay memory)", checkpoint.path)
        path = self.config.output / info["file"] if (self.config.output / info["file"]).exists() else checkpoint.path.parent / info["file"]
        if not path.is_file():
            raise RestoreError(f"the DQN state file {info['file']} of this checkpoint is missing", path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != info["sha256"]:
            raise RestoreError("the DQN state file does not match its checkpoint (sha256 differs)", path)
        tensors = load_file(str(path))
        self.learner.target.load_state_dict({k[len("target."):]: v for k, v in tensors.items() if k.startswith("target.")})
        self.learner.memory.load_state({k: v for k, v in tensors.items() if k.startswith("replay.")}, int(info["counters"]["replay_written"]))
        self.learner.load_counters(info["counters"])

    def _write_dqn_file(self) -> dict[str, Any]:
        name = f"dqn-{self.step:07d}.safetensors"
        tensors = {f"target.{k}": v.detach().cpu().contiguous() for k, v in self.learner.target.state_dict().items()}
        tensors.update({k: v.contiguous() for k, v in self.learner.memory.state_tensors().items()})
        final = self.config.output / name
        tmp = self.config.output / f".{name}.tmp-{os.getpid()}"
        save_file(tensors, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
            digest = hashlib.sha256(handle.read()).hexdigest()
        os.replace(tmp, final)
        return {"file": name, "sha256": digest, "counters": self.learner.counters()}

    def _state_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"toolbox_sha256": self.toolbox_sha256, "method": self.config.method}
        if getattr(self, "fixed_chain", None):
            extra["fixed_chain"] = {k: v for k, v in self.fixed_chain.items() if k != "fingerprint"}
        if self.config.method == "dqn":
            extra["dqn"] = self._write_dqn_file()
        return extra

    def _after_save(self) -> None:
        if self.config.method != "dqn":
            return
        referenced = set()
        for _, path in ckpt.list_checkpoints(self.config.output):
            try:
                referenced.add(json.loads((path / ckpt.STATE_FILE).read_text(encoding="utf-8"))["dqn"]["file"])
            except (OSError, KeyError, json.JSONDecodeError):
                continue
        for entry in self.config.output.iterdir():
            if DQN_FILE_RE.match(entry.name) and entry.name not in referenced:
                entry.unlink(missing_ok=True)

    # search cache --------------------------------------------------------------------------------------
    def _search_fingerprint(self) -> str:
        cfg = self.config
        keys = {"toolbox": self.toolbox_sha256, "data": self.data_fingerprint, "seed": cfg.seed, "severity": cfg.severity,
                "single_share": cfg.single_share, "clean_share": cfg.clean_share, "patch": cfg.patch, "channels": cfg.channels, "max_steps": cfg.max_steps,
                "beam": cfg.beam, "gamma": cfg.gamma, "chunk": cfg.search_chunk}
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()

    def _open_batches(self) -> None:
        """The agent draws its own patches (episodes, search chunks): no batches made ahead."""

    def _prepare(self) -> StopReason | None:
        """The best fixed chain (OUT/fixed-chain.json), then for --method search the search cache,
        chunk by chunk (kept in OUT/search/; a chunk already there is read). Ctrl-C and the time
        limit stop either within one batch of tool runs; finished chunks stay for a resume."""
        self.fixed_chain: dict[str, Any] | None = None
        self.env.should_stop = lambda: self.stop_request.requested or self._out_of_time()
        try:
            self.fixed_chain = self._fixed_chain()
            if self.config.method == "search":
                self._load_search()
        except ToolRunsStopped:
            return "interrupted" if self.stop_request.requested else "time_limit"
        finally:
            self.env.should_stop = None
        return None

    def _load_search(self) -> None:
        cfg = self.config
        folder = cfg.output / SEARCH_DIR
        folder.mkdir(parents=True, exist_ok=True)
        fingerprint = self._search_fingerprint()
        chunks = -(-cfg.search_patches // cfg.search_chunk)
        parts: list[dict[str, Tensor]] = []
        started = time.monotonic()
        for index in range(chunks):
            path = folder / f"chunk-{index:05d}.safetensors"
            count = min(cfg.search_chunk, cfg.search_patches - index * cfg.search_chunk)
            if path.is_file():
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as handle:
                    stored = (handle.metadata() or {}).get("fingerprint")
                if stored != fingerprint:
                    raise RestoreError("search cache made with other settings or another toolbox; use another --output", path)
                tensors = load_file(str(path))
            else:
                rng = np.random.default_rng([cfg.seed, 7, index])
                generator = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, 7, index]).generate_state(1)[0]))
                pairs = self.env.sample(cfg.search_chunk, rng, generator)
                tensors = search_returns(self.env, PatchPairs(pairs.inputs[:count], pairs.targets[:count]), cfg.max_steps, cfg.beam, cfg.gamma)
                tmp = folder / f".{path.name}.tmp-{os.getpid()}"
                save_file(tensors, str(tmp), metadata={"fingerprint": fingerprint})
                os.replace(tmp, path)
                self._write_log({"kind": "search", "step": self.step, "chunk": index + 1, "chunks": chunks,
                                 "patches": min((index + 1) * cfg.search_chunk, cfg.search_patches),
                                 "seconds": time.monotonic() - started})
            parts.append(tensors)
        self.search = SearchSet({key: torch.cat([p[key] for p in parts]) for key in parts[0]})

    def _fixed_chain(self) -> dict[str, Any] | None:
        """The single chain of ≤ max_steps tools with the best mean PSNR on `fixed_chain_patches`
        mixed-distortion training patches (beam 12 over prefixes): the "best fixed chain" baseline
        the agent is compared with. Kept in OUT/fixed-chain.json (read back when its inputs match)."""
        cfg = self.config
        if cfg.fixed_chain_patches == 0:
            return None
        keys = {"toolbox": self.toolbox_sha256, "data": self.data_fingerprint, "seed": cfg.seed, "severity": cfg.severity,
                "patch": cfg.patch, "channels": cfg.channels, "max_steps": cfg.max_steps, "patches": cfg.fixed_chain_patches,
                "beam": FIXED_CHAIN_BEAM}
        fingerprint = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()
        path = cfg.output / FIXED_CHAIN_FILE
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                stored = {}
            if stored.get("fingerprint") == fingerprint:
                return stored
        started = time.monotonic()
        rng = np.random.default_rng([cfg.seed, 11])
        generator = torch.Generator().manual_seed(cfg.seed + 11)
        pairs = mixed_pairs(self.images, cfg.fixed_chain_patches, cfg.patch, cfg.severity, rng, generator)
        ranking = rank_fixed_chains(self.env.apply, pairs.inputs, pairs.targets, max_steps=cfg.max_steps, beam=FIXED_CHAIN_BEAM)
        record = {
            "fingerprint": fingerprint, "chain": chain_text(ranking[0].chain) if ranking[0].chain else "",
            "psnr": round(ranking[0].psnr, 4), "input_psnr": round(float(patch_psnr(pairs.inputs, pairs.targets).mean()), 4),
            "patches": cfg.fixed_chain_patches, "severity": cfg.severity, "beam": FIXED_CHAIN_BEAM,
            "top": [{"chain": chain_text(c.chain), "psnr": round(c.psnr, 4)} for c in ranking[:5]],
        }
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        self._write_log({"kind": "fixed_chain", "step": self.step, "chain": record["chain"], "psnr": record["psnr"],
                         "input_psnr": record["input_psnr"], "seconds": round(time.monotonic() - started, 1)})
        return record

    # steps ----------------------------------------------------------------------------------------------
    def _advance(self) -> list[dict[str, float]]:
        cfg = self.config
        if cfg.method == "dqn":
            self.last_episodes, losses = self.learner.run_round(self.rng, self.generator)
            self.step = self.learner.transitions
            self.last_losses = losses
            return [{"loss": loss} for loss in losses]
        lr = learning_rate_at(self.step, cfg.lr, self.milestones, cfg.lr_gamma)  # type: ignore[arg-type]
        loss = search_regression_step(self.agent, self.optimizer, self.search, cfg.batch, self.rng, self.device, lr,
                                      cfg.target_floor)
        self.step += 1
        return [{"loss": loss}]

    def _logged_lr(self) -> float:
        cfg = self.config
        if cfg.method == "dqn":
            return self.learner.learning_rate(self.step)
        return learning_rate_at(max(self.step - 1, 0), cfg.lr, self.milestones, cfg.lr_gamma)  # type: ignore[arg-type]

    def _log_extra(self) -> dict[str, Any]:
        if self.config.method != "dqn":
            return {}
        returns = [float(e.rewards.sum()) for e in self.last_episodes]
        return {"epsilon": epsilon_at(self.step, self.learner.settings), "train_steps": self.learner.train_steps,
                "episode_return": float(np.mean(returns)) if returns else None}

    def _validate(self) -> dict[str, Any]:
        assert self.val_pairs is not None
        cfg = self.config
        rollout = greedy_rollout(self.env.apply, self.agent, self.val_pairs.inputs, self.val_pairs.targets, cfg.max_steps)
        self.agent.train()
        assert rollout.psnr_in is not None and rollout.psnr_out is not None
        psnr_in, psnr_out = float(rollout.psnr_in.mean()), float(rollout.psnr_out.mean())
        stops = float((rollout.actions[:, 0] == self.agent.stop_action).float().mean())
        return {"psnr": psnr_out, "gain": psnr_out - psnr_in, "stop_at_start": stops,
                "protocol": f"{self.val_pairs.inputs.shape[0]} {cfg.severity} patches, greedy per patch, input {psnr_in:.2f} dB"}


def run_tools_training(config: ToolsConfig, observer: TrainingObserver | None = None) -> TrainResult:
    """Train the toolbox (or the generic CNN) as `config` says, from scratch or from `config.resume`."""
    return _ToolsRun(config, observer or SilentObserver(), DistributedContext(), select_device(config.device)).train()


def run_agent_training(config: AgentConfig, observer: TrainingObserver | None = None) -> TrainResult:
    """Train the agent on a frozen toolbox as `config` says, from scratch or from `config.resume`."""
    return _AgentRun(config, observer or SilentObserver(), DistributedContext(), select_device(config.device)).train()
