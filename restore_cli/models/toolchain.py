"""RL-Restore networks (Yu et al., CVPR 2018; ANCHORS 4.1–4.2): the twelve small residual tools,
the LSTM agent that picks them, and a plain residual CNN of the toolbox's size for comparisons.

Every tool is residual, y = x + net(x), with SAME (zero) padding and stride 1, so it runs on any
image size. The mild tools of each distortion are 3-layer, the strong ones 8-layer:

    3-layer: conv 9×9 C→32, ReLU, conv 5×5 32→16, ReLU, conv 5×5 16→C            (21,827 for C = 3)
    8-layer: conv 5×5 C→64, ReLU, conv 1×1 64→32 = a, two residual units at 32 channels
             (ReLU, conv 3×3, ReLU, conv 3×3, + skip; skips carry pre-ReLU sums),
             conv 1×1 32→64, ReLU, conv 5×5 64→C                                  (50,851 for C = 3)

`TOOL_SPECS` names each tool and records the distortion range it is trained on (see its comment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ToolKind = Literal["3-layer", "8-layer"]
Distortion = Literal["blur", "noise", "jpeg"]


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, the reference checkpoint it corresponds to, its layer layout, and the
    distortion range it is trained on. Ranges: blur σ in pixels (21×21 Gaussian), noise σ on the
    0–255 scale (AWGN clipped to [0, 1]), JPEG quality (low = stronger artefacts)."""

    name: str
    reference: str
    kind: ToolKind
    distortion: Distortion
    low: float
    high: float


# Training ranges. Blur and noise split at the crossovers measured for the released tools
# (ANCHORS 4.1: blur σ 1.75 / 2.75 / 3.75, noise σ 12 / 17 / 27), from the recipe's weakest
# distortion worth undoing (blur σ 0.5, noise σ 2; below that every tool hurts and the agent
# stops) to its strongest (blur σ 5, noise σ 50). JPEG (the least certain, ANCHORS 4.1) splits
# the recipe's quality range 80 → 10 at its level boundaries 50 / 35 / 20, into bands of about
# two levels each, the 3-layer tools taking the milder two.
TOOL_SPECS: Final[tuple[ToolSpec, ...]] = (
    ToolSpec("blur-1", "tool01", "3-layer", "blur", 0.5, 1.75),
    ToolSpec("blur-2", "tool02", "3-layer", "blur", 1.75, 2.75),
    ToolSpec("blur-3", "tool03", "8-layer", "blur", 2.75, 3.75),
    ToolSpec("blur-4", "tool04", "8-layer", "blur", 3.75, 5.0),
    ToolSpec("noise-1", "tool05", "3-layer", "noise", 2.0, 12.0),
    ToolSpec("noise-2", "tool06", "3-layer", "noise", 12.0, 17.0),
    ToolSpec("noise-3", "tool07", "8-layer", "noise", 17.0, 27.0),
    ToolSpec("noise-4", "tool08", "8-layer", "noise", 27.0, 50.0),
    ToolSpec("jpeg-1", "tool09", "3-layer", "jpeg", 50.0, 80.0),
    ToolSpec("jpeg-2", "tool10", "3-layer", "jpeg", 35.0, 50.0),
    ToolSpec("jpeg-3", "tool11", "8-layer", "jpeg", 20.0, 35.0),
    ToolSpec("jpeg-4", "tool12", "8-layer", "jpeg", 10.0, 20.0),
)
TOOL_NAMES: Final[tuple[str, ...]] = tuple(spec.name for spec in TOOL_SPECS)
STOP_NAME: Final[str] = "stop"
ACTION_NAMES: Final[tuple[str, ...]] = (*TOOL_NAMES, STOP_NAME)
MAX_STEPS: Final[int] = 3  # the reference's stop_step
AGENT_PATCH: Final[int] = 63
# The agent sees x − 0.5: zero-centred inputs keep its ReLU features balanced between dark and
# bright patches (measured on a toy task: 4 of 4 seeds learnt, against 1 of 4 on raw [0, 1] input).
INPUT_CENTRE: Final[float] = 0.5


class ThreeLayerTool(nn.Module):
    """conv 9×9 C→32, ReLU, conv 5×5 32→16, ReLU, conv 5×5 16→C; y = x + net(x)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 9, padding=4)
        self.conv2 = nn.Conv2d(32, 16, 5, padding=2)
        self.conv3 = nn.Conv2d(16, channels, 5, padding=2)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


class EightLayerTool(nn.Module):
    """conv 5×5 C→64, ReLU, conv 1×1 64→32 (= a, pre-ReLU); unit 1: s1 = a + conv(ReLU(conv(ReLU(a))));
    unit 2: s2 = s1 + conv(ReLU(conv(ReLU(s1)))); conv 1×1 32→64 on s2, ReLU, conv 5×5 64→C;
    y = x + net(x). All 3×3 convs are 32→32."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.head = nn.Conv2d(channels, 64, 5, padding=2)
        self.shrink = nn.Conv2d(64, 32, 1)
        self.unit1a = nn.Conv2d(32, 32, 3, padding=1)
        self.unit1b = nn.Conv2d(32, 32, 3, padding=1)
        self.unit2a = nn.Conv2d(32, 32, 3, padding=1)
        self.unit2b = nn.Conv2d(32, 32, 3, padding=1)
        self.expand = nn.Conv2d(32, 64, 1)
        self.tail = nn.Conv2d(64, channels, 5, padding=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.shrink(F.relu(self.head(x)))
        s1 = a + self.unit1b(F.relu(self.unit1a(F.relu(a))))
        s2 = s1 + self.unit2b(F.relu(self.unit2a(F.relu(s1))))
        return x + self.tail(F.relu(self.expand(s2)))


def build_tool(kind: ToolKind, channels: int = 3) -> nn.Module:
    if kind == "3-layer":
        return ThreeLayerTool(channels)
    if kind == "8-layer":
        return EightLayerTool(channels)
    raise ValueError(f"unknown tool kind {kind!r}")


def tool_key(index: int) -> str:
    """State-dict prefix of tool `index` (0-based): tool01 … tool12, as the reference names them."""
    return f"tool{index + 1:02d}"


class Toolbox(nn.Module):
    """The twelve tools of `TOOL_SPECS` as sub-modules tool01 … tool12 (436,068 parameters for
    colour). `toolbox(x, i)` runs tool i (0-based) on x (N×C×H×W)."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        for index, spec in enumerate(TOOL_SPECS):
            self.add_module(tool_key(index), build_tool(spec.kind, channels))

    def __len__(self) -> int:
        return len(TOOL_SPECS)

    def tool(self, index: int) -> nn.Module:
        if not 0 <= index < len(TOOL_SPECS):
            raise IndexError(f"tool index {index} is not in 0..{len(TOOL_SPECS) - 1}")
        return getattr(self, tool_key(index))

    def forward(self, x: Tensor, index: int) -> Tensor:
        return self.tool(index)(x)


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding of one axis: output ceil(size/stride), the odd pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow SAME padding (asymmetric when the total is odd), any stride."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        return super().forward(F.pad(x, (left, right, top, bottom)))


class BasicLSTMCell(nn.Module):
    """TensorFlow's BasicLSTMCell: one kernel over [input ‖ h] with one bias, gates in the order
    i, j, f, o, and a constant forget bias added to f:
    c′ = c·σ(f + forget_bias) + σ(i)·tanh(j),  h′ = tanh(c′)·σ(o).
    (torch.nn.LSTMCell has two biases, 4·hidden more parameters.)"""

    def __init__(self, input_size: int, hidden: int, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.hidden = hidden
        self.forget_bias = forget_bias
        self.kernel = nn.Linear(input_size + hidden, 4 * hidden)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, j, f, o = self.kernel(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c_new = c * torch.sigmoid(f + self.forget_bias) + torch.sigmoid(i) * torch.tanh(j)
        return torch.tanh(c_new) * torch.sigmoid(o), c_new


AgentState = tuple[Tensor, Tensor]


class ToolchainAgent(nn.Module):
    """The RL-Restore agent (ANCHORS 4.2): four stride-2 SAME convolutions (9×9 C→32, 5×5 32→24,
    5×5 24→24, 5×5 24→24, each with ReLU; 63 → 32 → 16 → 8 → 4), FC to 32 with ReLU, joined with
    the one-hot of the previous tool (zeros at the first step), a BasicLSTMCell of `hidden` units
    and a linear layer to tools + 1 Q-values (the last one is stop). 87,863 parameters for the
    reference sizes (C = 3, 12 tools, 63×63 patches, 50 units).

    `patch` is the side of the square patches it looks at; the FC layer takes 24·⌈patch/16⌉²."""

    def __init__(self, channels: int = 3, tools: int = 12, patch: int = AGENT_PATCH, hidden: int = 50) -> None:
        super().__init__()
        self.channels, self.tools, self.patch, self.hidden = channels, tools, patch, hidden
        self.conv1 = SameConv2d(channels, 32, 9, stride=2)
        self.conv2 = SameConv2d(32, 24, 5, stride=2)
        self.conv3 = SameConv2d(24, 24, 5, stride=2)
        self.conv4 = SameConv2d(24, 24, 5, stride=2)
        side = feature_side(patch)
        self.fc = nn.Linear(24 * side * side, 32)
        self.lstm = BasicLSTMCell(32 + tools, hidden)
        self.q = nn.Linear(hidden, tools + 1)
        # He initialisation with zero biases keeps the features input-dependent through the
        # five ReLU layers (PyTorch's default shrinks the signal about 15×, which leaves the
        # Q-values almost constant over inputs at the start of learning).
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.fc):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    @property
    def actions(self) -> int:
        return self.tools + 1

    @property
    def stop_action(self) -> int:
        return self.tools

    def initial_state(self, n: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> AgentState:
        zeros = torch.zeros(n, self.hidden, device=device, dtype=dtype)
        return zeros, zeros.clone()

    def previous_one_hot(self, previous: Tensor) -> Tensor:
        """N previous actions (−1 = none, 0..tools−1 = a tool) → N×tools one-hot (zeros for −1)."""
        out = torch.zeros(previous.shape[0], self.tools, device=previous.device)
        valid = (previous >= 0) & (previous < self.tools)
        out[valid, previous[valid]] = 1.0
        return out

    def features(self, x: Tensor) -> Tensor:
        """N×C×P×P patches → N×32 features."""
        if x.shape[-2:] != (self.patch, self.patch):
            raise ValueError(f"the agent takes {self.patch}×{self.patch} patches, got {tuple(x.shape[-2:])}")
        h = F.relu(self.conv1(x - INPUT_CENTRE))
        h = F.relu(self.conv2(h))
        h = F.relu(self.conv3(h))
        h = F.relu(self.conv4(h))
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor, previous: Tensor, state: AgentState) -> tuple[Tensor, AgentState]:
        """One step: patches x (N×C×P×P), previous tools (N, −1 = none) and the LSTM state →
        Q-values (N×(tools+1)) and the new state."""
        joined = torch.cat([self.features(x), self.previous_one_hot(previous).to(x.dtype)], dim=1)
        h, c = self.lstm(joined, state)
        return self.q(h), (h, c)


def feature_side(patch: int) -> int:
    """Side of the agent's last feature map: four stride-2 SAME convolutions, ⌈patch/16⌉."""
    if patch < 1:
        raise ValueError(f"patch must be positive, got {patch}")
    return math.ceil(patch / 16)


class GenericCNN(nn.Module):
    """A plain residual CNN for comparison with the toolbox (ANCHORS 4.6 baselines): `depth`
    3×3 convolutions of `width` channels with ReLU between them, y = x + net(x). The default
    (width 63, depth 14) has 432,876 parameters for colour, within 1 % of the toolbox's 436,068."""

    def __init__(self, channels: int = 3, width: int = 63, depth: int = 14) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1)]
        for _ in range(depth - 2):
            layers += [nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)]
        layers += [nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)
