"""`restore toolchain` and `restore train tools|agent` end to end through the CLI with random-weight
models on tiny images: the chain per image, --json votes and Q-values, --max-steps, --tools,
one-line usage errors, help panels, training with resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from restore_cli.models.architectures import build_model

AGENT = {"channels": 3, "tools": 12, "patch": 63, "hidden": 50}
TOOL_NAMES = [f"{kind}-{i}" for kind in ("blur", "noise", "jpeg") for i in (1, 2, 3, 4)]
CHAIN_LINE = re.compile(r"^(?P<file>\S+): (?P<chain>.+)$")
STEP = re.compile(r"^(?P<action>[a-z]+(-[1-4])?) \((?P<votes>\d+)/(?P<patches>\d+)\)$")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_model(path: Path, arch: str, config: dict, seed: int = 0, preferred: int | None = None) -> Path:
    torch.manual_seed(seed)
    module = build_model(arch, config)
    if preferred is not None:  # constant Q-values: this action everywhere
        with torch.no_grad():
            module.q.weight.zero_()
            module.q.bias.zero_()
            module.q.bias[preferred] = 1.0
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path),
              metadata={"arch": arch, "config": json.dumps(config)})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toolchain-models")
    return {
        "toolbox": save_model(root / "toolbox.safetensors", "toolbox", {"channels": 3}),
        "agent": save_model(root / "agent.safetensors", "toolchain-agent", AGENT, seed=1),
        "noise3": save_model(root / "noise3.safetensors", "toolchain-agent", AGENT, preferred=6),
        "stop": save_model(root / "stop.safetensors", "toolchain-agent", AGENT, preferred=12),
    }


def picture(path: Path, h: int, w: int, mode: str = "RGB", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(30, 220, size=(h, w, 3 if mode == "RGB" else 1), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data if mode == "RGB" else data[..., 0], mode).save(path)
    return data


def chain_lines(stderr: str) -> dict[str, list[tuple[str, int, int]]]:
    """`file: a (k/n) → b (k/n) → stop (k/n)` lines of stderr → file name: [(action, votes, patches)]."""
    found = {}
    for line in stderr.splitlines():
        match = CHAIN_LINE.match(line.strip())
        if not match or "→" not in line and "(" not in line:
            continue
        chain = match["chain"].removesuffix(" (max 3 steps)").removesuffix(" (max 2 steps)").removesuffix(" (max 1 steps)")
        steps = [STEP.match(part) for part in chain.split(" → ")]
        if all(steps):
            found[Path(match["file"]).name] = [(s["action"], int(s["votes"]), int(s["patches"])) for s in steps]  # type: ignore[index]
    return found


def test_chain_is_printed_per_image_and_outputs_are_written(cli, tmp_path: Path, models: dict[str, Path]) -> None:
    picture(tmp_path / "in" / "a.png", 130, 140)
    picture(tmp_path / "in" / "g.png", 40, 50, mode="L")
    code, stdout, stderr = cli("toolchain", tmp_path / "in", "-o", tmp_path / "out", "--toolbox", models["toolbox"],
                               "--agent", models["agent"], "--device", "cpu")
    assert code == 0, stderr
    assert sorted(Path(p).name for p in stdout.split()) == ["a_restored.png", "g_restored.png"]
    chains = chain_lines(stderr)
    assert set(chains) == {"a.png", "g.png"}, stderr
    for name, patches in (("a.png", 4), ("g.png", 1)):  # 130×140 has 2×2 patches; 40×50 votes with one padded patch
        assert 1 <= len(chains[name]) <= 3
        assert all(action in TOOL_NAMES + ["stop"] and 1 <= votes <= n == patches for action, votes, n in chains[name])
    assert Image.open(tmp_path / "out" / "a_restored.png").size == (140, 130)
    assert Image.open(tmp_path / "out" / "g_restored.png").mode == "L"


def test_json_has_chain_votes_and_q_values(cli, tmp_path: Path, models: dict[str, Path]) -> None:
    picture(tmp_path / "a.png", 130, 130)
    code, stdout, stderr = cli("toolchain", tmp_path / "a.png", "-o", tmp_path / "b.png", "--toolbox", models["toolbox"],
                               "--agent", models["agent"], "--json", "-q")
    assert code == 0, stderr
    assert stderr == ""  # -q: neither progress nor chain lines
    record, summary = (json.loads(line) for line in stdout.splitlines())
    assert summary["summary"]["ok"] == 1
    assert record["model"] == {"toolbox": "toolbox", "agent": "agent"} and record["max_steps"] == 3
    assert record["chain"] == [step["action"] for step in record["steps"]]
    assert record["stopped"] == (record["chain"][-1] == "stop")
    for step in record["steps"]:
        assert step["patches"] == 4 and sum(step["votes"].values()) == 4
        assert step["votes"][step["action"]] == max(step["votes"].values())
        assert set(step["q_values"]) == set(TOOL_NAMES) | {"stop"}
        assert all(isinstance(v, float) for v in step["q_values"].values())


def test_max_steps_and_tool_restriction(cli, tmp_path: Path, models: dict[str, Path]) -> None:
    picture(tmp_path / "a.png", 64, 64)
    base = ("toolchain", tmp_path / "a.png", "--toolbox", models["toolbox"], "--json", "-q", "--overwrite")
    code, stdout, _ = cli(*base, "--agent", models["noise3"])
    assert code == 0 and json.loads(stdout.splitlines()[0])["chain"] == ["noise-3"] * 3
    code, stdout, _ = cli(*base, "--agent", models["noise3"], "--max-steps", "1")
    record = json.loads(stdout.splitlines()[0])
    assert code == 0 and record["chain"] == ["noise-3"] and record["stopped"] is False and record["max_steps"] == 1
    code, stdout, _ = cli(*base, "--agent", models["noise3"], "--tools", "jpeg,blur-2", "--max-steps", "2")
    record = json.loads(stdout.splitlines()[0])
    assert code == 0 and len(record["chain"]) == 2 and set(record["chain"]) <= {"jpeg-1", "jpeg-2", "jpeg-3", "jpeg-4", "blur-2"}
    assert record["tools"] == ["blur-2", "jpeg-1", "jpeg-2", "jpeg-3", "jpeg-4"]
    assert set(record["steps"][0]["q_values"]) == {"blur-2", "jpeg-1", "jpeg-2", "jpeg-3", "jpeg-4", "stop"}


def test_a_stop_vote_writes_the_input_back(cli, tmp_path: Path, models: dict[str, Path]) -> None:
    original = picture(tmp_path / "a.png", 70, 80)
    code, _, stderr = cli("toolchain", tmp_path / "a.png", "--toolbox", models["toolbox"], "--agent", models["stop"])
    assert code == 0, stderr
    assert chain_lines(stderr)["a.png"] == [("stop", 1, 1)]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a_restored.png")), original)


@pytest.mark.parametrize(("args", "message"), [
    (["--max-steps", "4"], "--max-steps 4"),
    (["--max-steps", "0"], "--max-steps 0"),
    (["--tools", "sharpen"], "unknown tool 'sharpen'"),
    (["--tile", "huge"], "--tile huge"),
    (["--device", "tpu"], "--device tpu"),
])
def test_usage_errors_are_one_line_and_exit_2(cli, tmp_path: Path, models: dict[str, Path], args: list[str], message: str) -> None:
    picture(tmp_path / "a.png", 64, 64)
    code, stdout, stderr = cli("toolchain", tmp_path / "a.png", "--toolbox", models["toolbox"], "--agent", models["agent"], *args)
    assert code == 2 and stdout == "" and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "a_restored.png").exists()


def test_wrong_or_missing_weights_are_one_line_errors(cli, tmp_path: Path, models: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    picture(tmp_path / "a.png", 64, 64)
    code, _, stderr = cli("toolchain", tmp_path / "a.png", "--toolbox", models["agent"], "--agent", models["agent"])
    assert code == 2 and "--toolbox needs 'toolbox' weights" in stderr and len(stderr.strip().splitlines()) == 1
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path / "empty"))
    code, _, stderr = cli("toolchain", tmp_path / "a.png")
    assert code == 2 and "no trained toolbox is installed" in stderr and "restore train tools" in stderr


def test_help_has_the_panels_and_two_examples(cli) -> None:
    code, out, _ = cli("toolchain", "--help")
    assert code == 0
    titles = re.findall(r"╭─ (.+?) ─", out)
    for panel in ("Input/Output", "Model", "Tiling & device", "Reporting"):
        assert panel in titles, titles
    examples = [line.strip() for line in out.splitlines() if line.strip().startswith("$ restore toolchain ")]
    assert len(examples) == 2
    for option in ("--toolbox", "--agent", "--max-steps", "--tools", "--json"):
        assert option in out


def write_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_train_tools_and_agent_from_the_command_line(cli, tmp_path: Path, models: dict[str, Path]) -> None:
    data = write_data(tmp_path / "data")
    tiny = ("--data", data, "--patch", "16", "--batch", "2", "--device", "cpu", "-q")
    code, stdout, stderr = cli("train", "tools", *tiny, "--steps", "2", "--milestones", "2", "-o", tmp_path / "tools")
    assert code == 0, stderr
    assert stdout.strip() == str(tmp_path / "tools" / "ckpt-0000002")
    code, stdout, stderr = cli("train", "tools", *tiny, "--steps", "3", "--milestones", "2", "-o", tmp_path / "tools",
                               "--resume", tmp_path / "tools")
    assert code == 0, stderr
    assert stdout.strip() == str(tmp_path / "tools" / "ckpt-0000003")
    code, stdout, stderr = cli("train", "tools", *tiny, "--steps", "4", "--lr", "0.01", "-o", tmp_path / "tools",
                               "--resume", tmp_path / "tools")
    assert code == 2 and "cannot resume with different settings" in stderr and "lr" in stderr
    code, stdout, stderr = cli("train", "tools", *tiny, "--steps", "2", "-o", tmp_path / "tools")
    assert code == 2 and "already holds a training run" in stderr and len(stderr.strip().splitlines()) == 1

    agent_args = ("train", "agent", "--toolbox", models["toolbox"], *tiny, "--method", "search", "--search-patches", "3",
                  "--beam", "1", "--max-steps", "2", "--hidden", "4", "-o", tmp_path / "agent")
    code, stdout, stderr = cli(*agent_args, "--steps", "2", "--milestones", "1")
    assert code == 0, stderr
    assert stdout.strip() == str(tmp_path / "agent" / "ckpt-0000002")
    assert len(list((tmp_path / "agent" / "search").iterdir())) == 1
    code, stdout, stderr = cli(*agent_args, "--steps", "3", "--milestones", "1", "--resume", tmp_path / "agent")
    assert code == 0, stderr
    assert stdout.strip() == str(tmp_path / "agent" / "ckpt-0000003")
    code, _, stderr = cli("train", "tools", *tiny, "--joint", "-o", tmp_path / "joint")
    assert code == 2 and "--joint needs --agent" in stderr and len(stderr.strip().splitlines()) == 1


def test_train_help_groups_options_and_ends_with_examples(cli) -> None:
    for command, panels in (("tools", ("Data", "Model", "Optimisation", "Checkpoints")),
                            ("agent", ("Data", "Model", "Agent", "Deep Q-learning (--method dqn)", "Searched returns (--method search)"))):
        code, out, _ = cli("train", command, "--help")
        assert code == 0
        titles = re.findall(r"╭─ (.+?) ─", out)
        assert all(panel in titles for panel in panels), titles
        assert sum(1 for line in out.splitlines() if line.strip().startswith(f"$ restore train {command} ")) == 2


def test_eval_scores_fixed_chains_beside_the_agent(cli, tmp_path: Path, models: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`restore eval toolchain --baseline` adds the chain recorded with the agent; `--chain` any
    other; an agent that stops at once scores exactly as the input."""
    from restore_cli.engine.weights import ModelEntry, add_manifest_entry, sha256_file

    store = tmp_path / "store"
    store.mkdir()
    (store / "toolbox.safetensors").write_bytes(models["toolbox"].read_bytes())
    add_manifest_entry(ModelEntry(name="toolbox", file="toolbox.safetensors", sha256=sha256_file(store / "toolbox.safetensors"),
                                  arch="toolbox", config={"channels": 3}, task="toolchain"), store)
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(store))
    torch.manual_seed(0)
    agent = build_model("toolchain-agent", AGENT)
    with torch.no_grad():
        agent.q.weight.zero_()
        agent.q.bias.zero_()
        agent.q.bias[12] = 1.0  # stop at once
    stopper = tmp_path / "stopper.safetensors"
    save_file({k: v.contiguous() for k, v in agent.state_dict().items()}, str(stopper),
              metadata={"arch": "toolchain-agent", "config": json.dumps(AGENT), "fixed_chain": "noise-3,blur-1"})
    for i in range(2):
        picture(tmp_path / "data" / f"p{i}.png", 40, 36, seed=i)
    out = tmp_path / "report.json"
    code, _, stderr = cli("eval", "toolchain", "--data", tmp_path / "data", "--weights", stopper, "--baseline",
                          "--chain", "blur-1", "--chain", "noise-3,blur-1", "--level", "moderate", "--ablate-stop",
                          "--json", out, "-q")
    assert code == 0, stderr
    report = json.loads(out.read_text())
    methods = {m["key"]: m for m in report["methods"]}
    assert list(methods) == ["model", "input", "model-no-stop", "fixed-chain", "chain:blur-1"]  # the repeated chain is scored once
    no_stop = [r for r in report["records"] if r["method"] == "model-no-stop"]
    assert no_stop and all(len(r["details"]["chain_model-no-stop"]) == 3 and "stop" not in r["details"]["chain_model-no-stop"]
                           for r in no_stop)  # the stop-only agent is forced through three tools
    assert all(r["details"]["chain"] == ["stop"] for r in report["records"] if r["method"] == "model")
    assert methods["fixed-chain"]["label"] == "Fixed chain noise-3 → blur-1 (train-best)"
    # The report names the pair it measured: the store's toolbox and the agent file, by sha256.
    assert [(m["arch"], m["sha256"]) for m in methods["model"]["models"]] == [
        ("toolbox", sha256_file(store / "toolbox.safetensors")), ("toolchain-agent", sha256_file(stopper))]
    assert report["run"]["device"] == "cpu" and report["run"]["precision"] == "fp32"
    avg = {a["method"]: a["psnr"] for a in report["averages"]}
    assert avg["model"] == avg["input"]
    assert avg["fixed-chain"] != avg["input"] and avg["chain:blur-1"] != avg["fixed-chain"] and avg["model-no-stop"] != avg["input"]
    # The generic CNN baseline is scored like a model, on the whole input in one pass.
    torch.manual_seed(3)
    generic = build_model("generic-cnn", {"channels": 3, "width": 8, "depth": 3})
    generic_file = tmp_path / "generic.safetensors"
    save_file({k: v.contiguous() for k, v in generic.state_dict().items()}, str(generic_file),
              metadata={"arch": "generic-cnn", "config": json.dumps({"channels": 3, "width": 8, "depth": 3})})
    images = tmp_path / "saved"
    code, _, stderr = cli("eval", "toolchain", "--data", tmp_path / "data", "--weights", generic_file, "--level", "mild",
                          "--limit", "1", "--save-images", images, "--save-inputs", "--json", out, "-q")
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert [m["key"] for m in report["methods"]] == ["model"] and report["methods"][0]["models"][0]["arch"] == "generic-cnn"
    restored = np.asarray(Image.open(images / "p0_mild.png"), dtype=np.float32) / 255
    degraded = torch.from_numpy(np.asarray(Image.open(images / "p0_mild_input.png"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = generic(degraded).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.abs(restored - expected).max() < 3 / 255  # from the quantised input: within a few levels
    assert np.abs(expected - degraded[0].permute(1, 2, 0).numpy()).max() > 10 / 255  # and the CNN did change it
    for args, message in ((["--no-model", "--chain", "blur-1"], "drop --no-model"), (["--chain", "sharpen"], "unknown tool 'sharpen'")):
        code, _, stderr = cli("eval", "toolchain", "--data", tmp_path / "data", *args, "--weights", stopper) if "--no-model" not in args \
            else cli("eval", "toolchain", "--data", tmp_path / "data", *args)
        assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    code, _, stderr = cli("eval", "denoise", "--data", tmp_path / "data", "--no-model", "--chain", "blur-1")
    assert code == 2 and "--chain is a toolchain option" in stderr
    code, _, stderr = cli("eval", "denoise", "--data", tmp_path / "data", "--no-model", "--ablate-stop")
    assert code == 2 and "--ablate-stop is a toolchain option" in stderr
