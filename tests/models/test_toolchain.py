"""RL-Restore networks: tool and agent layouts and parameter counts (ANCHORS 4.1–4.2), residual
outputs, TensorFlow SAME padding and BasicLSTMCell semantics, the tool strength ranges, and the
architecture-table entries."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from restore_cli.models.architectures import ARCHITECTURES, PRESETS, build_model, get_architecture
from restore_cli.models.toolchain import (
    ACTION_NAMES,
    INPUT_CENTRE,
    TOOL_SPECS,
    BasicLSTMCell,
    EightLayerTool,
    GenericCNN,
    SameConv2d,
    ThreeLayerTool,
    Toolbox,
    ToolchainAgent,
    tf_same_padding,
)
from restore_cli.ops.rl_restore import JPEG_QUALITY_TABLE, blur_sigma_interval, noise_sigma_interval


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def conv_params(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ANCHORS 4.1 layer lists as (kernel, in, out); C is the image's channel count.
def three_layer_list(c: int) -> list[tuple[int, int, int]]:
    return [(9, c, 32), (5, 32, 16), (5, 16, c)]


def eight_layer_list(c: int) -> list[tuple[int, int, int]]:
    return [(5, c, 64), (1, 64, 32), (3, 32, 32), (3, 32, 32), (3, 32, 32), (3, 32, 32), (1, 32, 64), (5, 64, c)]


@pytest.mark.parametrize("channels", [3, 1])
def test_tool_layer_lists_and_parameter_counts(channels: int) -> None:
    small, large = ThreeLayerTool(channels), EightLayerTool(channels)
    convs = lambda m: [(l.kernel_size[0], l.in_channels, l.out_channels) for l in m.modules() if isinstance(l, torch.nn.Conv2d)]  # noqa: E731
    assert convs(small) == three_layer_list(channels)
    assert convs(large) == eight_layer_list(channels)
    assert count(small) == sum(conv_params(*layer) for layer in three_layer_list(channels))
    assert count(large) == sum(conv_params(*layer) for layer in eight_layer_list(channels))
    if channels == 3:
        assert (count(small), count(large)) == (21_827, 50_851)
        assert count(Toolbox(3)) == 436_068  # ANCHORS 4.1 toolbox total


def test_toolbox_holds_the_kinds_in_the_reference_order() -> None:
    box = Toolbox(3)
    three = [i + 1 for i, spec in enumerate(TOOL_SPECS) if spec.kind == "3-layer"]
    assert three == [1, 2, 5, 6, 9, 10]  # ANCHORS 4.1: tools 01, 02, 05, 06, 09, 10 are 3-layer
    for index, spec in enumerate(TOOL_SPECS):
        assert spec.reference == f"tool{index + 1:02d}"
        assert isinstance(box.tool(index), ThreeLayerTool if spec.kind == "3-layer" else EightLayerTool)
        assert any(key.startswith(f"tool{index + 1:02d}.") for key in box.state_dict())
    assert ACTION_NAMES[-1] == "stop" and len(ACTION_NAMES) == 13


@pytest.mark.parametrize("tool_cls", [ThreeLayerTool, EightLayerTool])
def test_a_zero_last_layer_makes_a_tool_the_identity(tool_cls: type) -> None:
    torch.manual_seed(0)
    tool = tool_cls(3)
    last = tool.conv3 if tool_cls is ThreeLayerTool else tool.tail
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.rand(2, 3, 17, 23)  # odd sizes: SAME padding, stride 1
    assert torch.equal(tool(x), x)
    torch.nn.init.normal_(last.bias)  # a non-zero net changes the output
    assert not torch.allclose(tool(x), x)


def test_eight_layer_tool_follows_the_anchor_skip_structure() -> None:
    """Independent functional restatement of ANCHORS 4.1: skips carry pre-ReLU sums, s2 is not
    passed through a ReLU before the 1×1 expansion."""
    torch.manual_seed(1)
    tool = EightLayerTool(3)
    for p in tool.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.rand(1, 3, 12, 12)

    def conv(layer: torch.nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
        return F.conv2d(h, layer.weight, layer.bias, padding=layer.kernel_size[0] // 2)

    a = conv(tool.shrink, F.relu(conv(tool.head, x)))
    out = conv(tool.unit1b, F.relu(conv(tool.unit1a, F.relu(a))))
    s1 = a + out
    out = conv(tool.unit2b, F.relu(conv(tool.unit2a, F.relu(s1))))
    s2 = s1 + out
    expected = x + conv(tool.tail, F.relu(conv(tool.expand, s2)))
    torch.testing.assert_close(tool(x), expected)


def test_agent_layer_shapes_and_parameter_count() -> None:
    agent = ToolchainAgent()
    sides = []
    hooks = [layer.register_forward_hook(lambda m, i, o: sides.append(tuple(o.shape[1:])))
             for layer in (agent.conv1, agent.conv2, agent.conv3, agent.conv4)]
    q, (h, c) = agent(torch.rand(2, 3, 63, 63), torch.tensor([-1, 4]), agent.initial_state(2))
    for hook in hooks:
        hook.remove()
    assert sides == [(32, 32, 32), (24, 16, 16), (24, 8, 8), (24, 4, 4)]  # 63 → 32 → 16 → 8 → 4
    assert tuple(agent.fc.weight.shape) == (32, 384)
    assert tuple(agent.lstm.kernel.weight.shape) == (200, 94)  # TF kernel 94×200, transposed
    assert q.shape == (2, 13) and h.shape == c.shape == (2, 50)
    expected = (conv_params(9, 3, 32) + conv_params(5, 32, 24) + 2 * conv_params(5, 24, 24)
                + (384 * 32 + 32) + (94 * 200 + 200) + (50 * 13 + 13))
    assert count(agent) == expected == 87_863  # ANCHORS 4.2
    with pytest.raises(ValueError, match="63×63"):
        agent.features(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [(63, 9, 2, (4, 4)), (32, 5, 2, (1, 2)), (16, 5, 2, (1, 2)),
                                                                    (8, 5, 2, (1, 2)), (7, 3, 1, (1, 1)), (4, 1, 2, (0, 0))])
def test_tf_same_padding(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    # TensorFlow: out = ceil(size/stride), pad = max((out−1)·stride + kernel − size, 0), extra at the end.
    assert tf_same_padding(size, kernel, stride) == expected
    conv = SameConv2d(1, 1, kernel, stride=stride, bias=False)
    assert conv(torch.rand(1, 1, size, size)).shape[-1] == math.ceil(size / stride)


def test_same_conv_pads_the_extra_pixel_at_the_end() -> None:
    conv = SameConv2d(1, 1, 5, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, 8, 8)
    x[..., 0, 0] = 1.0  # reaches output (0, 0) only if one pixel is padded before (top/left pad 1)
    y = conv(x)
    assert y[0, 0, 0, 0] == 1.0 and y.sum() == 1.0
    x = torch.zeros(1, 1, 8, 8)
    x[..., 7, 7] = 1.0  # with pad (1, 2) the last window covers rows 5..9 of the padded image
    assert conv(x)[0, 0, 3, 3] == 1.0


def test_basic_lstm_cell_matches_torch_lstm_with_reordered_gates_and_forget_bias() -> None:
    torch.manual_seed(2)
    cell = BasicLSTMCell(7, 5, forget_bias=1.0)
    reference = torch.nn.LSTMCell(7, 5)
    w, b = cell.kernel.weight.detach(), cell.kernel.bias.detach()
    i, j, f, o = w.chunk(4)
    bi, bj, bf, bo = b.chunk(4)
    order_w = torch.cat([i, f, j, o])  # torch: input, forget, cell, output
    with torch.no_grad():
        reference.weight_ih.copy_(order_w[:, :7])
        reference.weight_hh.copy_(order_w[:, 7:])
        reference.bias_ih.copy_(torch.cat([bi, bf + 1.0, bj, bo]))
        reference.bias_hh.zero_()
    x, h, c = torch.randn(3, 7), torch.randn(3, 5), torch.randn(3, 5)
    ours = cell(x, (h, c))
    theirs = reference(x, (h, c))
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])


def test_agent_sees_centred_input_and_the_previous_tool() -> None:
    torch.manual_seed(3)
    agent = ToolchainAgent(channels=1, tools=2, patch=15, hidden=4)
    x = torch.rand(1, 1, 15, 15)
    h = x - INPUT_CENTRE  # the stack restated: four convs with ReLU on the centred patch, then FC
    for conv in (agent.conv1, agent.conv2, agent.conv3, agent.conv4):
        h = F.relu(conv(h))
    torch.testing.assert_close(agent.features(x), F.relu(agent.fc(h.flatten(1))))
    assert torch.equal(agent.previous_one_hot(torch.tensor([-1, 0, 1, 2])), torch.tensor([[0.0, 0], [1, 0], [0, 1], [0, 0]]))
    q_none, _ = agent(x, torch.tensor([-1]), agent.initial_state(1))
    q_tool, _ = agent(x, torch.tensor([1]), agent.initial_state(1))
    assert not torch.allclose(q_none, q_tool)


def test_generic_cnn_has_about_the_toolbox_parameter_count() -> None:
    net = GenericCNN()
    assert count(net) == conv_params(3, 3, 63) + 12 * conv_params(3, 63, 63) + conv_params(3, 63, 3) == 432_876
    assert abs(count(net) - 436_068) / 436_068 < 0.01
    torch.nn.init.zeros_(net.body[-1].weight)
    torch.nn.init.zeros_(net.body[-1].bias)
    x = torch.rand(1, 3, 9, 11)
    assert torch.equal(net(x), x)


# --- tool strength ranges ------------------------------------------------------------------------------


def test_tool_ranges_tile_each_distortion_in_order_inside_the_recipe() -> None:
    recipe = {"blur": (blur_sigma_interval(1)[0], blur_sigma_interval(10)[1]),
              "noise": (noise_sigma_interval(1)[0], noise_sigma_interval(10)[1]),
              "jpeg": (JPEG_QUALITY_TABLE[-1], JPEG_QUALITY_TABLE[0])}
    for distortion in ("blur", "noise", "jpeg"):
        specs = [s for s in TOOL_SPECS if s.distortion == distortion]
        assert [s.name for s in specs] == [f"{distortion}-{k}" for k in (1, 2, 3, 4)]
        assert [s.kind for s in specs] == ["3-layer", "3-layer", "8-layer", "8-layer"]  # mild tools small
        lo, hi = recipe[distortion]
        for spec in specs:
            assert lo <= spec.low < spec.high <= hi
        if distortion == "jpeg":  # stronger = lower quality: ranges descend and touch
            assert all(a.low == b.high for a, b in zip(specs, specs[1:]))
        else:
            assert all(a.high == b.low for a, b in zip(specs, specs[1:]))


def test_blur_and_noise_ranges_split_at_the_measured_crossovers() -> None:
    blur = [s for s in TOOL_SPECS if s.distortion == "blur"]
    noise = [s for s in TOOL_SPECS if s.distortion == "noise"]
    assert [s.high for s in blur[:3]] == [1.75, 2.75, 3.75]  # ANCHORS 4.1 crossovers
    assert [s.high for s in noise[:3]] == [12.0, 17.0, 27.0]
    assert blur[-1].high == 5.0 and noise[-1].high == 50.0  # the recipe's strongest level
    # The JPEG boundaries are level boundaries of the recipe's quality table.
    jpeg = [s for s in TOOL_SPECS if s.distortion == "jpeg"]
    assert {s.low for s in jpeg} | {s.high for s in jpeg} <= set(JPEG_QUALITY_TABLE)


# --- architecture table ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "config"), [
    ("toolbox", {"channels": 3}),
    ("toolbox", {"channels": 1}),
    ("toolchain-agent", {"channels": 3, "tools": 12, "patch": 63, "hidden": 50}),
    ("toolchain-agent", {"channels": 1, "tools": 2, "patch": 15, "hidden": 8}),
    ("generic-cnn", {"channels": 3, "width": 8, "depth": 4}),
])
def test_configs_round_trip_through_state_dicts(arch: str, config: dict) -> None:
    model = build_model(arch, config)
    assert get_architecture(arch).infer_config(model.state_dict()) == config
    build_model(arch, config).load_state_dict(model.state_dict(), strict=True)


def test_table_entries_and_presets() -> None:
    assert {name: ARCHITECTURES[name].task for name in ("toolbox", "toolchain-agent", "generic-cnn")} == {
        "toolbox": "toolchain", "toolchain-agent": "toolchain", "generic-cnn": "toolchain-baseline"}
    assert PRESETS["toolchain-agent"] == ("toolchain-agent", {"channels": 3, "tools": 12, "patch": 63, "hidden": 50})
    box_state = build_model("toolbox", {"channels": 3}).state_dict()
    with pytest.raises(ValueError, match="toolchain-agent"):
        get_architecture("toolchain-agent").infer_config(box_state)
    del box_state["tool07.head.weight"]
    with pytest.raises(ValueError, match="tool07"):
        get_architecture("toolbox").infer_config(box_state)
