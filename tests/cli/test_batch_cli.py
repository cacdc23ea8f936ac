"""The batch runner as the image subcommands expose it (exercised through `restore degrade` and
`restore sfm-mask`): inputs, output naming, existing outputs, bad files, reporting, interrupts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from images_for_tests import read_output, temp_files_under, uint8_image, write_jpeg, write_png8

import restore_cli.engine.degrade as engine_degrade


def make_tree(root: Path) -> dict[str, np.ndarray]:
    """in/a.png, in/b.jpg, in/sub/c.png, in/sub/deeper/d.png (+ a hidden file and a text file)."""
    images = {
        "a.png": write_png8(root / "a.png", uint8_image(24, 32, 3, seed=1)),
        "b.jpg": write_jpeg(root / "b.jpg", uint8_image(24, 32, 3, seed=2)),
        "sub/c.png": write_png8(root / "sub" / "c.png", uint8_image(24, 32, 1, seed=3)),
        "sub/deeper/d.png": write_png8(root / "sub" / "deeper" / "d.png", uint8_image(24, 32, 3, seed=4)),
    }
    (root / ".hidden.png").write_bytes(b"not an image, and hidden: never picked up by a folder scan")
    (root / "README.txt").write_text("not an image; a folder scan skips it\n")
    return images


def json_lines(stdout: str) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert records and "summary" in records[-1], stdout
    return records[:-1], records[-1]["summary"]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------
# Where outputs go


def test_output_folder_mirrors_the_input_tree_with_recursive(cli, tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    code, _, err = cli("degrade", tmp_path / "in", "-r", "-o", tmp_path / "out", "-q")
    assert code == 0, err
    assert files_under(tmp_path / "out") == {
        "a_degraded.png", "a_degraded.json", "b_degraded.jpg", "b_degraded.json",
        "sub/c_degraded.png", "sub/c_degraded.json", "sub/deeper/d_degraded.png", "sub/deeper/d_degraded.json",
    }
    # without -r only the top level
    code, _, err = cli("degrade", tmp_path / "in", "-o", tmp_path / "flat", "-q")
    assert code == 0, err
    assert files_under(tmp_path / "flat") == {"a_degraded.png", "a_degraded.json", "b_degraded.jpg", "b_degraded.json"}


def test_output_file_for_a_single_input(cli, tmp_path: Path) -> None:
    images = make_tree(tmp_path / "in")
    target = tmp_path / "result" / "one.png"
    code, out, err = cli("degrade", tmp_path / "in" / "a.png", "-o", target, "-q")
    assert code == 0, err
    assert out.strip() == str(target)  # without --json, stdout lists the written paths
    np.testing.assert_array_equal(read_output(target), images["a.png"])
    assert (tmp_path / "result" / "one.json").is_file()


def test_output_file_with_several_inputs_is_a_usage_error(cli, tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    code, out, err = cli("degrade", tmp_path / "in" / "a.png", tmp_path / "in" / "sub" / "c.png",
                         "-o", tmp_path / "one.png")
    assert code == 2, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "one.png" in err
    assert not (tmp_path / "one.png").exists()


def test_globs_and_list_files(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "in")
    # A quoted glob is expanded by restore; -o mirrors relative to the glob's fixed part.
    code, _, err = cli("degrade", str(tmp_path / "in" / "**" / "*.png"), "-r", "-o", tmp_path / "g", "-q")
    assert code == 0, err
    assert {p for p in files_under(tmp_path / "g") if p.endswith(".png")} == {
        "a_degraded.png", "sub/c_degraded.png", "sub/deeper/d_degraded.png"}
    # @list.txt: one path per line, blank lines and # comments ignored, relative to the working folder.
    (tmp_path / "list.txt").write_text(f"# inputs\n{tmp_path / 'in' / 'b.jpg'}\n\nin/sub/c.png\n")
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli("degrade", f"@{tmp_path / 'list.txt'}", "-o", tmp_path / "l", "--json", "-q")
    assert code == 0, err
    records, summary = json_lines(stdout)
    assert [Path(r["input"]).name for r in records] == ["b.jpg", "c.png"]
    assert summary["ok"] == 2
    assert files_under(tmp_path / "l") == {"b_degraded.jpg", "b_degraded.json", "c_degraded.png", "c_degraded.json"}


def test_a_pattern_matching_nothing_is_a_usage_error(cli, tmp_path: Path) -> None:
    code, out, err = cli("degrade", str(tmp_path / "*.png"), "-o", tmp_path / "o")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1


def test_format_changes_the_extension_and_the_encoding(cli, tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    code, _, err = cli("degrade", tmp_path / "in" / "a.png", "-o", tmp_path / "o", "--format", "jpg", "-q")
    assert code == 0, err
    target = tmp_path / "o" / "a_degraded.jpg"
    assert target.read_bytes()[:3] == b"\xff\xd8\xff"
    assert not (tmp_path / "o" / "a_degraded.png").exists()


# --------------------------------------------------------------------------------------------
# Existing outputs and inputs


def test_existing_output_error_skip_and_overwrite(cli, tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    source = tmp_path / "in" / "a.png"
    target = tmp_path / "o" / "a_degraded.png"
    target.parent.mkdir()
    target.write_bytes(b"old")

    code, stdout, err = cli("degrade", source, "-o", tmp_path / "o", "--json")
    assert code == 1
    records, summary = json_lines(stdout)
    assert records[0]["status"] == "failed" and str(target) in records[0]["error"]
    assert summary["failed"] == 1
    assert "1 failed" in err
    assert target.read_bytes() == b"old"

    code, stdout, err = cli("degrade", source, "-o", tmp_path / "o", "--json", "--skip-existing")
    assert code == 0, err
    records, summary = json_lines(stdout)
    assert records[0]["status"] == "skipped" and summary["skipped"] == 1
    assert target.read_bytes() == b"old"

    code, stdout, err = cli("degrade", source, "-o", tmp_path / "o", "--json", "--overwrite")
    assert code == 0, err
    assert json_lines(stdout)[0][0]["status"] == "ok"
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, out, err = cli("degrade", source, "-o", tmp_path / "o", "--overwrite", "--skip-existing")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


def test_an_existing_companion_file_is_not_overwritten(cli, tmp_path: Path) -> None:
    # degrade writes a JSON sidecar beside its output: a sidecar that is already there counts as output.
    make_tree(tmp_path / "in")
    source = tmp_path / "in" / "a.png"
    sidecar = tmp_path / "o" / "a_degraded.json"
    sidecar.parent.mkdir()
    sidecar.write_text("mine")
    code, stdout, err = cli("degrade", source, "-o", tmp_path / "o", "--json")
    assert code == 1
    records, _ = json_lines(stdout)
    assert records[0]["status"] == "failed" and str(sidecar) in records[0]["error"] and "companion" in records[0]["error"]
    assert sidecar.read_text() == "mine" and not (tmp_path / "o" / "a_degraded.png").exists()
    code, stdout, err = cli("degrade", source, "-o", tmp_path / "o", "--json", "--skip-existing")
    assert code == 0 and json_lines(stdout)[0][0]["status"] == "skipped"
    assert sidecar.read_text() == "mine"
    code, stdout, err = cli("degrade", source, "-o", tmp_path / "o", "--json", "--overwrite")
    assert code == 0, err
    assert json.loads(sidecar.read_text())


@pytest.mark.parametrize("extra", [(), ("--overwrite",)])
def test_an_input_is_never_overwritten(cli, tmp_path: Path, extra: tuple[str, ...]) -> None:
    make_tree(tmp_path / "in")
    source = tmp_path / "in" / "a.png"
    before = source.read_bytes()
    for args in (("--suffix", ""), ("-o", source), ("-o", tmp_path / "in", "--suffix", "")):
        code, out, err = cli("degrade", source, *args, *extra)
        assert code == 2, (args, err)
        assert out == ""
        assert len(err.strip().splitlines()) == 1 and "input" in err
        assert source.read_bytes() == before


def test_companion_files_never_overwrite_an_input_or_each_other(cli, tmp_path: Path) -> None:
    """Sidecars and masks are outputs too: x.png → x_sfm.png would write x_sfm_mask.png, an input
    here; a.png and a.jpg → a_degraded.png and a_degraded.jpg would share a_degraded.json."""
    write_png8(tmp_path / "m" / "x.png", uint8_image(16, 16, 3, seed=1))
    other = write_png8(tmp_path / "m" / "x_sfm_mask.png", uint8_image(16, 16, 3, seed=2))
    code, out, err = cli("sfm-mask", tmp_path / "m", "--save-mask", "-q")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1
    np.testing.assert_array_equal(read_output(tmp_path / "m" / "x_sfm_mask.png"), other)

    write_png8(tmp_path / "d" / "a.png", uint8_image(16, 16, 3, seed=3))
    write_jpeg(tmp_path / "d" / "a.jpg", uint8_image(16, 16, 3, seed=4))
    code, out, err = cli("degrade", tmp_path / "d", "-o", tmp_path / "do", "-q")
    assert code == 2, err
    assert "a_degraded.json" in err
    assert not (tmp_path / "do").exists()


# --------------------------------------------------------------------------------------------
# Bad files, reporting


def test_bad_files_are_reported_and_the_good_ones_processed(cli, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    good = {
        "good.png": write_png8(folder / "good.png", uint8_image(24, 32, 3, seed=1)),
        "photo.jpg": write_jpeg(folder / "photo.jpg", uint8_image(24, 32, 3, seed=2)),
        "gray.png": write_png8(folder / "gray.png", uint8_image(24, 32, 1, seed=3)),
    }
    whole = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is text, not a PNG\n")
    (folder / "notes.txt").write_text("a text file, named explicitly below\n")
    bad = {"truncated.png", "empty.png", "text.png", "notes.txt"}

    code, stdout, err = cli("degrade", folder, folder / "notes.txt", "-o", tmp_path / "out", "--json", "-s", 2)
    assert code == 1
    records, summary = json_lines(stdout)
    by_name = {Path(r["input"]).name: r for r in records}
    assert set(by_name) == set(good) | bad
    for name in good:
        assert by_name[name]["status"] == "ok", by_name[name]
        output = read_output(Path(by_name[name]["output"]))
        assert output.shape[:2] == (12, 16) and output.shape[2] == good[name].shape[2]
    for name in bad:
        record = by_name[name]
        assert record["status"] == "failed"
        assert record["output"] is None
        assert name in record["error"] and len(record["error"].splitlines()) == 1, record["error"]
    assert (summary["total"], summary["ok"], summary["failed"], summary["skipped"]) == (7, 3, 4, 0)
    assert summary["interrupted"] is False
    assert "3 ok, 0 skipped, 4 failed" in err
    assert files_under(tmp_path / "out") == {f"{Path(n).stem}_degraded{Path(n).suffix}" for n in good} | {
        f"{Path(n).stem}_degraded.json" for n in good}
    assert temp_files_under(tmp_path) == []


def test_quiet_prints_nothing_on_stderr_for_successes(cli, tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    code, out, err = cli("degrade", tmp_path / "in", "-r", "-o", tmp_path / "o", "-q")
    assert code == 0
    assert err == ""
    assert len(out.splitlines()) == 4
    code, out, err = cli("degrade", tmp_path / "in", "-o", tmp_path / "o2")
    assert code == 0 and "2 ok" in err  # without -q: progress and a summary


def test_json_lines_all_parse_and_describe_each_file(cli, tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    code, stdout, err = cli("sfm-mask", tmp_path / "in", "-r", "-o", tmp_path / "o", "--json", "--seed", 2)
    assert code == 0, err
    records, summary = json_lines(stdout)
    assert len(records) == 4 and summary["ok"] == 4 and summary["total"] == 4
    for record in records:
        assert record["status"] == "ok"
        assert Path(record["output"]).is_file()
        assert record["seconds"] >= 0
        assert record["mode"] == "targeted" and record["seed"] == 2


# --------------------------------------------------------------------------------------------
# Ctrl-C


def test_interrupt_in_processing_exits_130_without_partial_output(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "in")
    real = engine_degrade.degrade_image
    calls = []

    def interrupted_on_second(image, settings, source=""):  # noqa: ANN001, ANN202
        calls.append(source)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(image, settings, source)

    monkeypatch.setattr(engine_degrade, "degrade_image", interrupted_on_second)
    code, stdout, err = cli("degrade", tmp_path / "in", "-r", "-o", tmp_path / "o", "--json")
    assert code == 130
    records, summary = json_lines(stdout)
    assert summary["interrupted"] is True and summary["ok"] == 1
    assert "interrupted" in err
    assert files_under(tmp_path / "o") == {"a_degraded.png", "a_degraded.json"}
    assert temp_files_under(tmp_path) == []


def test_interrupt_while_writing_leaves_no_temp_file_and_no_output(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import restore_cli.io.atomic as atomic

    make_tree(tmp_path / "in")

    def interrupted_fsync(fd: int) -> None:
        raise KeyboardInterrupt  # after the bytes went into the temp file, before the rename

    monkeypatch.setattr(atomic.os, "fsync", interrupted_fsync)
    code, _, err = cli("degrade", tmp_path / "in" / "a.png", "-o", tmp_path / "o")
    monkeypatch.undo()
    assert code == 130, err
    assert files_under(tmp_path / "o") == set()
    assert temp_files_under(tmp_path) == []
    # and --skip-existing resumes: nothing was left that would be mistaken for a finished output
    code, stdout, err = cli("degrade", tmp_path / "in" / "a.png", "-o", tmp_path / "o", "--skip-existing", "--json")
    assert code == 0 and json_lines(stdout)[0][0]["status"] == "ok"
