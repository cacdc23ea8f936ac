"""`restore train` subcommands of the toolchain models (registered on `train_app`):
`tools` (the toolbox, its joint fine-tuning, the generic CNN) and `agent` (DQN or search).

`restore_cli.cli.train` imports this module to register it, so its helpers are imported when a
command runs, not at import time."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from restore_cli.cli.common import examples_epilog
from restore_cli.cli.train_options import (
    PANEL_CKPT,
    PANEL_DATA,
    PANEL_DEGRADATION,
    PANEL_DEVICE,
    PANEL_MODEL,
    PANEL_OPTIM,
    PANEL_REPORTING,
    ChannelsChoice,
    CheckpointEveryOpt,
    DeviceOpt,
    GammaOpt,
    KeepOpt,
    LogEveryOpt,
    MilestonesOpt,
    QuietOpt,
    StepsOpt,
    TimeLimitOpt,
    TrainingProgress,
    command_line,
    finish,
    parse_duration,
    parse_number_list,
)

PANEL_AGENT = "Agent"
PANEL_DQN = "Deep Q-learning (--method dqn)"
PANEL_SEARCH = "Searched returns (--method search)"


class SeverityChoice(str, Enum):
    light = "light"
    mild = "mild"
    moderate = "moderate"
    severe = "severe"


class MethodChoice(str, Enum):
    dqn = "dqn"
    search = "search"


class ToolsLossChoice(str, Enum):
    mse = "mse"
    psnr = "psnr"


class ToolPrecisionChoice(str, Enum):
    """The toolchain models run in fp32 or bf16 (no fp16 path)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


DataOpt = Annotated[list[Path], typer.Option("--data", metavar="DIR", help="Folder of clean training images (recursive; repeat for several); used at ×1, ×2/3 and ×1/3.", rich_help_panel=PANEL_DATA, show_default=False)]
ValOpt = Annotated[Optional[Path], typer.Option("--val", metavar="DIR", help="Folder of clean validation images (fixed-seed patches are cut from them).", rich_help_panel=PANEL_DATA)]
ChannelsOpt = Annotated[ChannelsChoice, typer.Option("--channels", help="1 = gray, 3 = RGB (the reference's).", rich_help_panel=PANEL_DATA)]
SeverityOpt = Annotated[SeverityChoice, typer.Option("--severity", help="Mixed-distortion severity (ANCHORS 4.5 windows; moderate is the training set).", rich_help_panel=PANEL_DEGRADATION)]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Seed of initialisation, patches, distortions and exploration.", rich_help_panel=PANEL_OPTIM)]
ResumeOpt = Annotated[Optional[Path], typer.Option("--resume", metavar="CKPT|RUN", help="Continue exactly from a checkpoint folder, or a run folder's latest; give the same options as before.", rich_help_panel=PANEL_CKPT)]
PrecisionOpt = Annotated[ToolPrecisionChoice, typer.Option("--precision", help="auto = bf16 on CUDA where supported, fp32 otherwise; bf16 is autocast.", rich_help_panel=PANEL_DEVICE)]
ValPatchesOpt = Annotated[int, typer.Option("--val-patches", min=1, help="Validation patches cut from --val (fixed seed).", rich_help_panel=PANEL_REPORTING)]
ValEveryOpt = Annotated[int, typer.Option("--val-every", min=1, help="Validation every N steps (with --val).", rich_help_panel=PANEL_REPORTING)]


def _progress(quiet: bool) -> Any:
    """The training progress of `restore train`, plus search chunks and validation gains."""
    class ToolchainProgress(TrainingProgress):
        def on_record(self, record: dict[str, Any]) -> None:
            kind = record.get("kind")
            if kind == "search":
                self._print(f"search: chunk {record['chunk']}/{record['chunks']} ({record['patches']} patches, {record['seconds']:.0f} s)")
            elif kind == "val" and "gain" in record:
                self._print(f"step {record['step']}: validation PSNR {record['psnr']:.2f} dB, gain {record['gain']:+.2f} dB ({record['protocol']})")
            else:
                super().on_record(record)

    return ToolchainProgress(quiet)


_COMMANDS: list[tuple[str, Any, dict[str, Any]]] = []


def _command(name: str, **settings: Any) -> Any:
    """Collect a command for `register` (the sub-app lives in `restore_cli.cli.train`)."""

    def collect(function: Any) -> Any:
        _COMMANDS.append((name, function, settings))
        return function

    return collect


@_command(
    "tools",
    help="Train the RL-Restore toolbox: twelve residual CNNs (blur-1…4, noise-1…4, jpeg-1…4), each on 63×63 patches "
    "(training images at ×1, ×2/3, ×1/3) with one distortion drawn over its range: Gaussian blur (21×21 kernel) σ "
    "0.5–1.75–2.75–3.75–5, noise σ 2–12–17–27–50 (clipped), JPEG quality 80–50–35–20–10. --joint fine-tunes a trained "
    "toolbox on the chains an agent plays on mixed distortions (plus each tool's own data); --generic trains a plain "
    "residual CNN of the toolbox's size on mixed distortions instead, for comparison. Export with `restore train export`.",
    epilog=examples_epilog(
        "restore train tools --data ../shared/datasets/BSDS500_train --data ../shared/datasets/BSDS500_test --val ../shared/datasets/Set14 --steps 50000 --time-limit 8h -o runs/tools",
        "restore train tools --joint --init weights/toolbox.safetensors --agent weights/toolchain-agent.safetensors --data ../shared/datasets/BSDS500_train --steps 5000 --lr 1e-4 -o runs/tools-joint",
    ),
)
def tools(
    data: DataOpt,
    val: ValOpt = None,
    channels: ChannelsOpt = ChannelsChoice.rgb,
    patch: Annotated[int, typer.Option("--patch", min=8, help="Training patch size (63 in RL-Restore).", rich_help_panel=PANEL_DATA)] = 63,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Patches per step: per tool (toolbox), or in all (--joint, --generic).", rich_help_panel=PANEL_DATA)] = 32,
    joint: Annotated[bool, typer.Option("--joint", help="Joint fine-tuning of a trained toolbox (--init) on the chains of an agent (--agent).", rich_help_panel=PANEL_MODEL)] = False,
    generic: Annotated[bool, typer.Option("--generic", help="Train the generic CNN (432,876 parameters) on mixed distortions instead.", rich_help_panel=PANEL_MODEL)] = False,
    init: Annotated[Optional[Path], typer.Option("--init", metavar="NAME|FILE", help="Start from this toolbox (.safetensors or a model name).", rich_help_panel=PANEL_MODEL)] = None,
    agent: Annotated[Optional[Path], typer.Option("--agent", metavar="NAME|FILE", help="--joint: the agent whose chains the tools are tuned on (.safetensors or a model name).", rich_help_panel=PANEL_MODEL)] = None,
    single_weight: Annotated[float, typer.Option("--single-weight", min=0.0, help="--joint: weight of the single-distortion loss of one tool per step (round robin).", rich_help_panel=PANEL_MODEL)] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, max=10, help="--joint: longest chain.", rich_help_panel=PANEL_MODEL)] = 3,
    severity: SeverityOpt = SeverityChoice.moderate,
    steps: StepsOpt = 100_000,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.", rich_help_panel=PANEL_OPTIM)] = 1e-3,
    loss: Annotated[ToolsLossChoice, typer.Option("--loss", help="mse: mean squared error over the batch; psnr: the mean over patches of 10·log10(MSE), i.e. minus the mean patch PSNR that the toolchain eval reports (weighs every patch alike instead of the most damaged ones).", rich_help_panel=PANEL_OPTIM)] = ToolsLossChoice.mse,
    milestones: MilestonesOpt = "0.5,0.75,0.9",
    lr_gamma: GammaOpt = 0.5,
    seed: SeedOpt = 0,
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder: checkpoints, latest, log.jsonl.", rich_help_panel=PANEL_CKPT)] = Path("runs/tools"),
    checkpoint_every: CheckpointEveryOpt = 1000,
    keep: KeepOpt = 2,
    time_limit: TimeLimitOpt = None,
    resume: ResumeOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = ToolPrecisionChoice.auto,
    val_every: ValEveryOpt = 1000,
    val_patches: ValPatchesOpt = 96,
    log_every: LogEveryOpt = 100,
    quiet: QuietOpt = False,
) -> None:
    from restore_cli.errors import RestoreError
    from restore_cli.train.toolchain_config import ToolsConfig
    from restore_cli.train.toolchain_trainer import run_tools_training

    if joint and generic:
        raise RestoreError("--joint and --generic exclude each other")
    config = ToolsConfig(
        data=tuple(data), output=output, mode="joint" if joint else "generic" if generic else "single", val=val,
        channels=int(channels.value), patch=patch, batch=batch, steps=steps, lr=lr,
        milestones=parse_number_list(milestones, "--milestones"), lr_gamma=lr_gamma, severity=severity.value,
        init=init, agent=agent, single_weight=single_weight, loss=loss.value, max_steps=max_steps, seed=seed, device=device,
        precision=precision.value, checkpoint_every=checkpoint_every, keep_checkpoints=keep,
        time_limit=None if time_limit is None else parse_duration(time_limit), val_every=val_every,
        val_patches=val_patches, log_every=log_every, resume=resume, command_line=command_line(),
    )
    finish(run_tools_training(config, _progress(quiet)))

@_command(
    "agent",
    help="Train the RL-Restore agent (4 strided convs, FC 32, LSTM 50, 13 Q-values) on a frozen toolbox. Episodes start "
    "from 63×63 patches with mixed blur → noise → JPEG (--severity) or, for --single-share of them, one tool's "
    "distortion; the reward of a step is its PSNR gain; at most --max-steps tools. --method dqn: recurrent deep "
    "Q-learning as in the paper (ε-greedy, replay of whole episodes, target network, Huber loss); --steps counts "
    "transitions. --method search: beam-search the best chains of every training patch once, then regress the "
    "Q-values to the searched returns (far fewer tool runs); --steps counts optimizer steps, and an interrupted "
    "search resumes by running the same command again. Export with `restore train export`.",
    epilog=examples_epilog(
        "restore train agent --toolbox weights/toolbox.safetensors --data ../shared/datasets/BSDS500_train --val ../shared/datasets/Set14 --method search --search-patches 8192 --steps 20000 -o runs/agent",
        "restore train agent --toolbox weights/toolbox.safetensors --data ../shared/datasets/BSDS500_train --method dqn --steps 2000000 --time-limit 24h -o runs/agent-dqn",
    ),
)
def agent_command(
    data: DataOpt,
    toolbox: Annotated[str, typer.Option("--toolbox", metavar="NAME|FILE", help="The frozen toolbox: a model name or a .safetensors file.", rich_help_panel=PANEL_MODEL)] = "toolbox",
    method: Annotated[MethodChoice, typer.Option("--method", help="dqn (the paper's) or search (regression to beam-searched returns).", rich_help_panel=PANEL_MODEL)] = MethodChoice.dqn,
    val: ValOpt = None,
    channels: ChannelsOpt = ChannelsChoice.rgb,
    patch: Annotated[int, typer.Option("--patch", min=8, help="Patch side the agent looks at (63 in RL-Restore).", rich_help_panel=PANEL_DATA)] = 63,
    hidden: Annotated[int, typer.Option("--hidden", min=1, help="LSTM units (50 in RL-Restore).", rich_help_panel=PANEL_MODEL)] = 50,
    severity: SeverityOpt = SeverityChoice.moderate,
    single_share: Annotated[float, typer.Option("--single-share", min=0.0, max=1.0, help="Share of episodes starting from a single tool's distortion (about 1:1 in the reference).", rich_help_panel=PANEL_DEGRADATION)] = 0.5,
    clean_share: Annotated[float, typer.Option("--clean-share", min=0.0, max=1.0, help="search: share of episodes starting from the clean patch itself, where every tool loses: teaches the agent to stop at once on undamaged input. The rest (1 − single − clean) are --severity mixtures.", rich_help_panel=PANEL_DEGRADATION)] = 0.0,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, max=10, help="Longest chain (3 in RL-Restore).", rich_help_panel=PANEL_AGENT)] = 3,
    gamma: Annotated[float, typer.Option("--gamma", min=0.0, max=1.0, help="Discount of later PSNR gains.", rich_help_panel=PANEL_AGENT)] = 0.99,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Episodes (dqn) or searched paths (search) per optimizer step.", rich_help_panel=PANEL_OPTIM)] = 32,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Transitions (dqn, default 2,000,000) or optimizer steps (search, default 20,000).", rich_help_panel=PANEL_OPTIM)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Adam learning rate (default 1e-4 dqn, 3e-4 search).", rich_help_panel=PANEL_OPTIM)] = None,
    seed: SeedOpt = 0,
    replay: Annotated[int, typer.Option("--replay", min=1, help="Replay memory in transitions (float16; 20,000 ≈ 480 MB at 63×63 RGB).", rich_help_panel=PANEL_DQN)] = 20_000,
    learn_start: Annotated[int, typer.Option("--learn-start", min=0, help="Transitions played before learning starts.", rich_help_panel=PANEL_DQN)] = 5_000,
    train_every: Annotated[int, typer.Option("--train-every", min=1, help="One train step per this many transitions.", rich_help_panel=PANEL_DQN)] = 4,
    target_every: Annotated[int, typer.Option("--target-every", min=1, help="Copy the target network every this many transitions.", rich_help_panel=PANEL_DQN)] = 10_000,
    epsilon_steps: Annotated[int, typer.Option("--epsilon-steps", min=1, help="ε falls linearly from 1 to --epsilon-end over this many transitions after --learn-start.", rich_help_panel=PANEL_DQN)] = 1_000_000,
    epsilon_end: Annotated[float, typer.Option("--epsilon-end", min=0.0, max=1.0, help="Final exploration rate.", rich_help_panel=PANEL_DQN)] = 0.1,
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Episodes played together (batched tool runs).", rich_help_panel=PANEL_DQN)] = 32,
    lr_half_life: Annotated[int, typer.Option("--lr-half-life", min=1, help="The learning rate halves every this many transitions (continuously).", rich_help_panel=PANEL_DQN)] = 1_000_000,
    lr_floor: Annotated[float, typer.Option("--lr-floor", min=0.0, help="Lowest learning rate.", rich_help_panel=PANEL_DQN)] = 2.5e-5,
    search_patches: Annotated[int, typer.Option("--search-patches", min=1, help="Training patches searched (kept in OUT/search/).", rich_help_panel=PANEL_SEARCH)] = 4096,
    beam: Annotated[int, typer.Option("--beam", min=1, max=12, help="States expanded per depth after the first (tool runs per patch: 12·(1 + beam·(max steps − 1))).", rich_help_panel=PANEL_SEARCH)] = 3,
    search_chunk: Annotated[int, typer.Option("--search-chunk", min=1, help="Patches per cache file.", rich_help_panel=PANEL_SEARCH)] = 256,
    target_floor: Annotated[float, typer.Option("--target-floor", help="search: Q-targets below this many dB are raised to it (a tool that loses more is simply bad); without a floor the Q-values collapse to input-independent ones. Use -1000 for raw targets.", rich_help_panel=PANEL_SEARCH)] = -1.0,
    milestones: Annotated[str, typer.Option("--milestones", help="search: where the lr is multiplied by --lr-gamma (fractions of --steps or step numbers).", rich_help_panel=PANEL_SEARCH)] = "0.5,0.75,0.9",
    lr_gamma: Annotated[float, typer.Option("--lr-gamma", min=0.0, max=1.0, help="search: learning-rate factor at each milestone.", rich_help_panel=PANEL_SEARCH)] = 0.5,
    fixed_chain_patches: Annotated[int, typer.Option("--fixed-chain-patches", min=0, help="Mixed-distortion training patches on which the best fixed chain of ≤ --max-steps tools is found (beam 12) and recorded with the agent, the baseline `restore eval toolchain --baseline` compares it with; 0 skips.", rich_help_panel=PANEL_AGENT)] = 256,
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder: checkpoints, latest, log.jsonl (and search/ or dqn-*.safetensors).", rich_help_panel=PANEL_CKPT)] = Path("runs/agent"),
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", min=1, help="Save a checkpoint every N steps (and at the end, on Ctrl-C and at --time-limit); default 50,000 dqn, 1,000 search.", rich_help_panel=PANEL_CKPT)] = None,
    keep: KeepOpt = 2,
    time_limit: TimeLimitOpt = None,
    resume: ResumeOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = ToolPrecisionChoice.auto,
    val_every: Annotated[Optional[int], typer.Option("--val-every", min=1, help="Validation (greedy chains on --val patches) every N steps; default 10,000 dqn, 1,000 search.", rich_help_panel=PANEL_REPORTING)] = None,
    val_patches: ValPatchesOpt = 256,
    log_every: Annotated[Optional[int], typer.Option("--log-every", min=1, help="Write loss, lr, ε and steps/s to log.jsonl every N steps; default 1,000 dqn, 100 search.", rich_help_panel=PANEL_REPORTING)] = None,
    quiet: QuietOpt = False,
) -> None:
    from restore_cli.train.toolchain_config import AgentConfig
    from restore_cli.train.toolchain_trainer import run_agent_training

    config = AgentConfig(
        data=tuple(data), output=output, toolbox=toolbox, method=method.value, val=val, channels=int(channels.value),
        patch=patch, hidden=hidden, batch=batch, steps=steps, lr=lr, severity=severity.value, single_share=single_share,
        clean_share=clean_share, max_steps=max_steps, gamma=gamma, replay=replay, learn_start=learn_start, train_every=train_every,
        target_every=target_every, epsilon_steps=epsilon_steps, epsilon_end=epsilon_end, parallel=parallel,
        lr_half_life=lr_half_life, lr_floor=lr_floor, search_patches=search_patches, beam=beam, search_chunk=search_chunk,
        fixed_chain_patches=fixed_chain_patches, target_floor=target_floor, milestones=parse_number_list(milestones, "--milestones"), lr_gamma=lr_gamma, seed=seed, device=device,
        precision=precision.value, checkpoint_every=checkpoint_every, keep_checkpoints=keep,
        time_limit=None if time_limit is None else parse_duration(time_limit), val_every=val_every,
        val_patches=val_patches, log_every=log_every, resume=resume, command_line=command_line(),
    )
    finish(run_agent_training(config, _progress(quiet)))


def register(train_app: typer.Typer) -> None:
    """Add this family's training commands to `restore train`."""
    for name, function, settings in _COMMANDS:
        train_app.command(name, **settings)(function)
