"""One training run of one process, as every trainer runs it: set-up (fresh output or resume
checks), the step loop (Ctrl-C/SIGTERM, --time-limit, divergence, log/validation/checkpoint
cadence), the JSONL log, checkpoints and the final `TrainResult`.

`TrainingRun` is the base of the denoiser/USRNet, SFT-GAN and toolchain runs; they override the
hooks marked below (build the networks and optimizer, make a batch, one step, validate, what a
checkpoint and the log records add). Reproducibility: a process's random choices come from one
numpy Generator and one CPU torch Generator seeded from (seed, rank), checkpoints save their
states (those after the last batch consumed when batches are made ahead), so a resumed run
repeats an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from restore_cli.engine.device import Placement, select_device, select_precision
from restore_cli.errors import RestoreError
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.data import BatchPrefetcher
from restore_cli.train.distributed import (
    DistributedContext,
    agree,
    gather_json,
    start_distributed,
    stop_distributed,
    sum_over_ranks,
)
from restore_cli.train.progress import RunInfo, SilentObserver, StopReason, TrainingObserver, TrainResult

LOG_FILE = "log.jsonl"
# Weights, activations and optimizer state in channels_last (see the measurements in the report).
TRAINING_MEMORY_FORMAT = torch.channels_last
M = TypeVar("M")


# --- small pure pieces ---------------------------------------------------------------------------


def learning_rate_at(step: int, base_lr: float, milestones: tuple[int, ...], gamma: float) -> float:
    """MultiStepLR: base_lr · gamma^(number of milestones ≤ step), `step` = optimizer steps done."""
    return base_lr * gamma ** sum(1 for m in milestones if m <= step)


def rank_generators(seed: int, rank: int) -> tuple[np.random.Generator, torch.Generator]:
    """The two generators of one process: numpy (recipe draws) and CPU torch (tensor draws)."""
    rng = np.random.default_rng([seed, rank, 0])
    torch_seed = int(np.random.SeedSequence([seed, rank, 1]).generate_state(1, dtype=np.uint64)[0]) % (2**63)
    return rng, torch.Generator().manual_seed(torch_seed)


def built_with_seed(seed: int, build: Callable[[], M]) -> M:
    """`build()` (a network) with the global torch RNG forked and seeded: the initial weights
    depend on `seed` alone and the global state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]: a cadence fell due."""
    return before // every < after // every


# --- interruption ---------------------------------------------------------------------------------


class StopRequest:
    """Set by SIGINT/SIGTERM while training: finish the step, save, stop. A second SIGINT
    raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


# --- the run --------------------------------------------------------------------------------------


class TrainingRun:
    """One training run of one process; `train()` does set-up, the loop and the result.

    The config must have `output`, `resume`, `seed`, `steps`, `lr_gamma`, `precision`,
    `log_every`, `val_every`, `checkpoint_every`, `keep_checkpoints`, `time_limit`, `arch`,
    `resolved_milestones()`, `to_json()` and `from_json()`. `self.model` is the module whose
    state the checkpoints hold; `self.optimizer` the one optimizer they hold.
    """

    # The divergence error: "training diverged: {loss_noun} is not finite …, … with {advice}".
    loss_noun = "the loss"
    divergence_advice = "a lower --lr (or fp32 precision)"
    # Whether checkpoints hold the CUDA generator state and a `grad_scaler` entry (fp16 runs).
    saves_cuda_rng = True
    saves_grad_scaler = True
    # Whether `train` records carry the mean of every loss term (`losses`) besides `loss`.
    logs_loss_terms = False

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self, config: Any, observer: TrainingObserver, context: DistributedContext, device: torch.device) -> None:
        self.config = config
        self.observer = observer if context.is_main else SilentObserver()
        self.context = context
        self.device = device
        self.placement = self._select_placement()
        self.memory_format = TRAINING_MEMORY_FORMAT
        self.milestones = config.resolved_milestones()
        self.log_path = config.output / LOG_FILE
        self.clock_start = time.monotonic()  # --time-limit counts from here, set-up included
        self.base_lrs: list[float] = []  # per optimizer group, before the milestones
        self.batches: BatchPrefetcher | None = None
        self.step = 0
        self.last_val: dict[str, Any] | None = None
        self.elapsed_before = 0.0
        # What a fresh run was initialised from (`model_export.weights_record`), set by `_build`;
        # a resumed run carries the checkpoint's, and every checkpoint stores it as `init`.
        self.init_record: dict[str, Any] | None = None

    # hooks: what a family provides ---------------------------------------------------------------

    def _select_placement(self) -> Placement:
        """auto: bf16 (fp16 where unsupported) on CUDA, fp32 on the CPU; reduced precision is
        autocast (weights, optimizer state and loss stay fp32), fp16 with loss scaling."""
        return select_precision(self.config.precision, self.device)

    def _load_data(self) -> None:
        """Set `self.images` (an ImageSet) and `self.data_fingerprint`."""
        raise NotImplementedError

    def _check_checkpoint_kind(self, checkpoint: ckpt.Checkpoint) -> None:
        """Refuse a checkpoint of another trainer (before any data is read)."""

    def _config_mismatches(self, stored: Any) -> list[str]:
        """The settings in which this run's config differs from the checkpoint's `stored` one."""
        raise NotImplementedError

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        """Set `self.model`, `self.optimizer`, `self.base_lrs` (weights from the checkpoint are
        loaded afterwards; a fresh run initialises them here)."""
        raise NotImplementedError

    def _load_validation(self) -> None:
        """Load the validation data, after the weights are final (where a family does it then)."""

    def _finish_setup(self) -> None:
        """After the weights are final and the output folder exists: derived state, DDP wrappers."""

    def _make_batch(self) -> Any:
        """The next training batch, on the CPU (called by the prefetcher only)."""
        raise NotImplementedError

    def _step(self, batch: Any) -> dict[str, float]:
        """One optimizer step on a batch from `_make_batch`; its losses ("loss" the total)."""
        raise NotImplementedError

    def _validate(self) -> dict[str, Any]:
        """The validation record's fields (with "psnr" where the family measures it)."""
        raise NotImplementedError

    def _state_identity(self) -> dict[str, Any]:
        """The first entries of a checkpoint's state: what it is (config, arch, task …)."""
        return {"config": self.config.to_json(), "arch": self.config.arch, "model_config": self._model_config(),
                "task": self.config.task}

    def _state_extra(self) -> dict[str, Any]:
        """Entries a family adds at the end of a checkpoint's state."""
        return {}

    def _after_save(self) -> None:
        """Called after each checkpoint is written (before its log record)."""

    def _start_fields(self) -> dict[str, Any]:
        """The `start` record's fields after kind, step and steps."""
        return {"device": str(self.device), "precision": self.placement.precision,
                "world_size": self.context.world_size, "images": len(self.images)}

    def _model_config(self) -> dict[str, Any]:
        return self.config.model_config()

    def _task_label(self) -> str:
        return str(self.config.task)

    def _parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _val_count(self) -> int:
        return len(self.val_images)

    def _before_loop(self) -> None:
        """Right before the first step (e.g. the model in training mode)."""

    def _prepare(self) -> StopReason | None:
        """Work before the loop, with `self.stop_request` installed; a stop reason if cut short."""
        return None

    # set-up ----------------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg = self.config
        checkpoint = ckpt.load_checkpoint(cfg.resume) if cfg.resume is not None else None
        if checkpoint is None:
            self._check_fresh_output()
        else:
            self._check_checkpoint_kind(checkpoint)
        self._load_data()
        self.rng, self.generator = rank_generators(cfg.seed, self.context.rank)
        if checkpoint is not None:
            self._check_resume(checkpoint)
            self.init_record = checkpoint.state.get("init")
        self._build(checkpoint)
        self.scaler = torch.amp.GradScaler("cuda") if self.placement.precision == "fp16" else None
        if checkpoint is not None:
            self._restore(checkpoint)
        self._load_validation()
        if self.context.is_main:
            cfg.output.mkdir(parents=True, exist_ok=True)
            if checkpoint is not None:
                self._truncate_log()
        self._finish_setup()

    def _check_fresh_output(self) -> None:
        if (self.config.output / ckpt.LATEST_NAME).exists():
            raise RestoreError(
                "already holds a training run; continue it with --resume "
                f"{self.config.output} or choose another --output",
                self.config.output,
            )

    def _check_resume(self, checkpoint: ckpt.Checkpoint) -> None:
        """The same settings, number of processes and training images as the checkpoint's."""
        state = checkpoint.state
        differences = self._config_mismatches(type(self.config).from_json(state["config"]))
        if differences:
            raise RestoreError("cannot resume with different settings: " + "; ".join(differences), checkpoint.path)
        if state["world_size"] != self.context.world_size:
            raise RestoreError(
                f"checkpoint was written by {state['world_size']} process(es); resume it with the same number "
                f"(now {self.context.world_size})",
                checkpoint.path,
            )
        if state["data_fingerprint"] != self.data_fingerprint:
            raise RestoreError("the training images differ from those the checkpoint was trained on", checkpoint.path)

    def _restore(self, checkpoint: ckpt.Checkpoint) -> None:
        """Weights, optimizer, generator states, loss scaler and counters of the checkpoint."""
        state = checkpoint.state
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        rng_state = state["rng"][self.context.rank]
        self.rng = ckpt.numpy_rng_from_state(rng_state["numpy"])
        ckpt.set_torch_rng_state(self.generator, rng_state["torch"])
        if rng_state.get("cuda") and self.device.type == "cuda":
            ckpt.set_cuda_rng_state(self.device, rng_state["cuda"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = checkpoint.step
        self.last_val = state.get("last_val")
        self.elapsed_before = float(state.get("elapsed_s", 0.0))

    def _truncate_log(self) -> None:
        """Drop log records past the resumed step (written after that checkpoint, then lost)."""
        from restore_cli.io.atomic import atomic_write_text

        if not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        atomic_write_text(self.log_path, "".join(line + "\n" for line in kept))

    def _distributed(self, module: nn.Module) -> nn.Module:
        """`module` wrapped in DistributedDataParallel when several processes train, else itself."""
        if not self.context.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    # pieces of a step --------------------------------------------------------------------------------

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _rng_snapshot(self) -> dict[str, Any]:
        return {"numpy": ckpt.numpy_rng_state(self.rng), "torch": ckpt.torch_rng_state(self.generator)}

    def _rng_position(self) -> dict[str, Any]:
        """The generator states the run continues from: after the last batch consumed when
        batches are made ahead, the live states otherwise."""
        return dict(self.rng_state) if self.batches is not None else self._rng_snapshot()

    def _open_batches(self) -> None:
        """Batches are made on the CPU; on CUDA a thread makes them ahead while the GPU computes.
        Runs that draw their own data in `_advance` override this with a no-op."""
        depth = self.config.prefetch if self.config.prefetch is not None else (2 if self.device.type == "cuda" else 0)
        self.rng_state = self._rng_snapshot()
        self.batches = BatchPrefetcher(self._make_batch, self._rng_snapshot, depth)

    def _set_learning_rates(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = learning_rate_at(self.step, base, self.milestones, self.config.lr_gamma)

    def _logged_lr(self) -> float:
        """The learning rate of the last step (first group), for the `train` record."""
        return learning_rate_at(self.step - 1, self.base_lrs[0], self.milestones, self.config.lr_gamma)

    def _backward(self, loss: Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def _advance(self) -> list[dict[str, float]]:
        """Train until the step counter moves; the losses of each optimizer step taken."""
        assert self.batches is not None
        self._set_learning_rates()
        batch, self.rng_state = self.batches.next()
        record = self._step(batch)
        self.step += 1
        return [record]

    def _out_of_time(self) -> bool:
        limit = self.config.time_limit
        return limit is not None and time.monotonic() - self.clock_start >= limit

    # log and checkpoints ---------------------------------------------------------------------------

    def _write_log(self, record: dict[str, Any]) -> None:
        if not self.context.is_main:
            return
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.observer.on_record(record)

    def _interval_rates(self, started: float, from_step: int) -> dict[str, Any]:
        now = time.monotonic()
        return {"lr": self._logged_lr(), "steps_per_s": (self.step - from_step) / max(now - started, 1e-9),
                "elapsed_s": self.elapsed_before + now - self.loop_start}

    def _log_interval(self, interval: list[dict[str, float]], started: float, from_step: int) -> None:
        """One `train` record: mean losses over the interval and all ranks, lr, steps/s."""
        keys = sorted(interval[0]) if interval else []
        totals = sum_over_ranks(self.context, [sum(r[k] for r in interval) for k in keys] + [len(interval)],
                                self._collective_device())
        count = max(totals[-1], 1)
        means = {k: totals[i] / count for i, k in enumerate(keys)}
        record: dict[str, Any] = {"kind": "train", "step": self.step, "loss": means.get("loss", float("nan"))}
        if self.logs_loss_terms:
            record["losses"] = means
        self._write_log({**record, **self._interval_rates(started, from_step)})

    def _save(self, elapsed: float) -> Path | None:
        """Write a checkpoint (main process; every process sends its generator states)."""
        cfg = self.config
        rng_state = self._rng_position()
        if self.saves_cuda_rng and self.device.type == "cuda":
            rng_state["cuda"] = ckpt.cuda_rng_state(self.device)
        all_rng = gather_json(self.context, rng_state, self._collective_device())
        if not self.context.is_main:
            return None
        state = {**self._state_identity(), "precision": self.placement.precision, "world_size": self.context.world_size,
                 "rng": all_rng}
        if self.saves_grad_scaler:
            state["grad_scaler"] = self.scaler.state_dict() if self.scaler is not None else None
        state.update({"data_fingerprint": self.data_fingerprint, "images": len(self.images), "last_val": self.last_val,
                      "elapsed_s": elapsed, "torch_version": torch.__version__})
        if self.init_record is not None:
            state["init"] = self.init_record
        state.update(self._state_extra())
        path = ckpt.save_checkpoint(cfg.output, self.step, self.model.state_dict(), self.optimizer.state_dict(), state,
                                    keep=cfg.keep_checkpoints)
        self._after_save()
        self._write_log({"kind": "checkpoint", "step": self.step, "path": str(path)})
        return path

    # the loop --------------------------------------------------------------------------------------

    def _run_info(self) -> RunInfo:
        cfg = self.config
        return RunInfo(task=self._task_label(), arch=cfg.arch, model_config=self._model_config(),
                       parameters=self._parameter_count(), images=len(self.images), skipped_images=len(self.images.skipped),
                       val_images=self._val_count(), start_step=self.step, total_steps=cfg.steps, device=str(self.device),
                       precision=self.placement.precision, world_size=self.context.world_size, output=cfg.output)

    def _loop(self, stop: StopRequest, losses: list[float]) -> tuple[StopReason, Path | None]:
        """Steps until `steps`, Ctrl-C/SIGTERM or the time limit; returns why and the last checkpoint."""
        cfg = self.config
        checkpoint_path: Path | None = None
        interval: list[dict[str, float]] = []
        interval_start, interval_step = time.monotonic(), self.step
        last_loss = math.nan
        while self.step < cfg.steps:
            before = self.step
            records = self._advance()
            losses.extend(r["loss"] for r in records)
            interval.extend(records)
            if records:
                last_loss = records[-1]["loss"]
            self.observer.on_step(self.step, last_loss)
            finite = all(math.isfinite(v) for r in records for v in r.values())
            interrupted, out_of_time, diverged = agree(
                self.context, [stop.requested, self._out_of_time(), not finite], self._collective_device()
            )
            if diverged:
                raise RestoreError(
                    f"training diverged: {self.loss_noun} is not finite at step {self.step}; resume from the last "
                    f"checkpoint with {self.divergence_advice}",
                    cfg.output,
                )
            last = self.step >= cfg.steps
            if crossed(before, self.step, cfg.log_every) or last:
                self._log_interval(interval, interval_start, interval_step)
                interval, interval_start, interval_step = [], time.monotonic(), self.step
            if self._val_count() and (crossed(before, self.step, cfg.val_every) or last):
                self.last_val = {"step": self.step, **self._validate()}
                self._write_log({"kind": "val", **self.last_val})
            if crossed(before, self.step, cfg.checkpoint_every) or last or interrupted or out_of_time:
                elapsed = self.elapsed_before + time.monotonic() - self.loop_start
                checkpoint_path = self._save(elapsed) or checkpoint_path
            if interrupted or out_of_time:
                return ("interrupted" if interrupted else "time_limit"), checkpoint_path
        return "completed", checkpoint_path

    def train(self) -> TrainResult:
        cfg = self.config
        self._setup()
        self.observer.on_start(self._run_info())
        self._write_log({"kind": "start", "step": self.step, "steps": cfg.steps, **self._start_fields()})
        self._open_batches()
        losses: list[float] = []
        checkpoint_path: Path | None = None
        self.loop_start = time.monotonic()
        self._before_loop()
        try:
            with StopRequest().installed() as stop:
                self.stop_request = stop
                early = self._prepare()
                if early is not None:
                    reason: StopReason = early
                else:
                    reason, checkpoint_path = self._loop(stop, losses)
        finally:
            if self.batches is not None:
                self.batches.close()
        if checkpoint_path is None and cfg.resume is not None and self.context.is_main:
            checkpoint_path = ckpt.resolve_checkpoint(cfg.resume)  # nothing was left to train
        val = None if self.last_val is None else self.last_val.get("psnr")
        result = TrainResult(
            step=self.step,
            reason=reason,
            checkpoint=checkpoint_path,
            model_state={k: v.detach().to("cpu").clone() for k, v in self.model.state_dict().items()},
            losses=losses,
            val_psnr=None if val is None else float(val),
            rank=self.context.rank,
        )
        self._write_log({"kind": "stop", "step": self.step, "reason": reason})
        self.observer.on_finish(result)
        return result


def train_in_process_group(run_class: type[TrainingRun], config: Any, observer: TrainingObserver | None) -> TrainResult:
    """`run_class(config).train()` in this process. Under torchrun (WORLD_SIZE > 1) it joins the
    process group and trains on its local GPU; only rank 0 writes and talks to `observer`."""
    device = select_device(config.device)
    context = start_distributed(device.type == "cuda")
    finished = False
    try:
        if context.enabled and device.type == "cuda":
            device = torch.device("cuda", context.local_rank)
        result = run_class(config, observer or SilentObserver(), context, device).train()
        finished = True
        return result
    finally:
        stop_distributed(context, finished)
