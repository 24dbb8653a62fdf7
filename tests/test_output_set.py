"""convert writes its files as one set: a kill at any moment leaves the previous set or the new one, never a
partial or mixed set, and no temporary file survives the next run; unusable -o values are one-line errors."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from caffe2torch import files
from caffe2torch.cli import main
from caffe2torch.nets import export_net
from caffe2torch.errors import InputError

TINY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
"""
OTHER = TINY.replace('"tiny"', '"other"').replace("num_output: 5", "num_output: 7")
OUTPUT = ["meta.json", "model.py", "model.safetensors"]

# Runs each case in a forked child (torch is imported once), which SIGKILLs itself just before or just after
# its kill_at-th rename (os.rename, os.replace, files._exchange), or is killed kill_fraction times the
# duration of the last complete run after it started.  Prints, per case, whether it was killed and how many
# rename points it passed.
DRIVER = r"""
import json, os, signal, sys, time, traceback
import torch._dynamo  # imported by the first conversion: import it once, before forking
import caffe2torch.files, caffe2torch.zoo
from caffe2torch.nets import export_net

def convert(case):
    points = 0
    def point():
        nonlocal points
        points += 1
        if points == case.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)
    def killing(function):
        def wrapper(*args, **kwargs):
            point()
            result = function(*args, **kwargs)
            point()
            return result
        return wrapper
    os.rename, os.replace = killing(os.rename), killing(os.replace)
    caffe2torch.files._exchange = killing(caffe2torch.files._exchange)
    export_net(case["prototxt"], None, case["directory"], force=case["force"])
    return points

results, last_duration = [], None
for case in json.loads(sys.argv[1]):
    read, write = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, str(convert(case)).encode())
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    os.close(write)
    if "kill_fraction" in case:
        time.sleep(case["kill_fraction"] * last_duration)
        os.kill(pid, signal.SIGKILL)  # harmless when it has already finished
    status = os.waitpid(pid, 0)[1]
    points = os.read(read, 100)
    os.close(read)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        sys.exit(f"conversion failed: {case}")
    if not os.WIFSIGNALED(status):
        last_duration = time.monotonic() - start
    results.append({"killed": os.WIFSIGNALED(status), "points": int(points or 0)})
print(json.dumps(results))
"""


def run_driver(tmp_path: Path, cases: list[dict]) -> list[dict]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    done = subprocess.run([sys.executable, str(driver), json.dumps(cases)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def snapshot(directory: Path) -> dict[str, bytes] | None:
    """Every file under ``directory`` (None when it does not exist)."""
    if not directory.exists():
        return None
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def beside(directory: Path) -> list[str]:
    return sorted(os.listdir(directory.parent))


@pytest.fixture
def nets(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "tiny.prototxt").write_text(TINY)
    (tmp_path / "other.prototxt").write_text(OTHER)
    return {"tiny": tmp_path / "tiny.prototxt", "other": tmp_path / "other.prototxt"}


def test_a_kill_at_any_moment_leaves_the_previous_set_or_the_new_one(tmp_path: Path, nets) -> None:
    """Fresh directory and --force over a different net's output; kills at each rename point and at random."""
    reference = {mode: tmp_path / mode / "reference" / "out" for mode in ("fresh", "force")}
    previous = tmp_path / "previous"
    export_net(str(nets["other"]), None, previous)
    cases = []

    def case(mode: str, name: str, **kill) -> None:
        directory = tmp_path / mode / name / "out"
        directory.parent.mkdir(parents=True)
        if mode == "force":
            shutil.copytree(previous, directory)
        cases.append({"prototxt": str(nets["tiny"]), "directory": str(directory), "force": mode == "force",
                      "mode": mode, **kill})

    for mode in reference:
        case(mode, "reference")
    counts = run_driver(tmp_path, cases)
    assert not any(result["killed"] for result in counts)
    new_set, old_set = snapshot(reference["fresh"]), snapshot(previous)
    assert sorted(new_set) == OUTPUT and snapshot(reference["force"]) == new_set and old_set != new_set

    cases.clear()
    rng = random.Random(20240611)
    for mode, result in zip(reference, counts):
        assert result["points"] >= 2  # just before and just after at least one rename
        for kill_at in range(1, result["points"] + 1):
            case(mode, f"point{kill_at}", kill_at=kill_at)
        case(mode, "reference-again")  # the duration that random kills are relative to
        for n in range(8):
            case(mode, f"random{n}", kill_fraction=rng.uniform(0.0, 1.2))
    results = run_driver(tmp_path, cases)
    assert all(r["killed"] for c, r in zip(cases, results) if "kill_at" in c)

    leftovers = 0
    for spec, result in zip(cases, results):
        directory = Path(spec["directory"])
        before = None if spec["mode"] == "fresh" else old_set
        assert snapshot(directory) in (before, new_set), spec
        leftovers += len(beside(directory)) - (directory.exists())
        export_net(spec["prototxt"], None, directory, force=True)  # the following normal run cleans up
        assert beside(directory) == ["out"] and snapshot(directory) == new_set, spec
    assert leftovers > 0  # some kills did leave a temporary directory for the next run to remove


def test_empty_or_unusable_output_is_one_line_exit_2(tmp_path: Path, nets, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("keep")
    cases = {"": "empty string", "a-file": "not a directory", "missing/out": "does not exist"}
    for output, expected in cases.items():
        result = CliRunner().invoke(main, ["convert", str(nets["tiny"]), "-o", output])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and expected in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["a-file", "other.prototxt", "tiny.prototxt"]
    assert (tmp_path / "a-file").read_text() == "keep"


@pytest.mark.skipif(not os.path.ismount("/dev/shm"), reason="needs a mount point")
def test_a_mount_point_is_refused_before_converting(nets) -> None:
    result = CliRunner().invoke(main, ["convert", str(nets["tiny"]), "-o", "/dev/shm", "--force"])
    assert result.exit_code == 2 and "mount point" in result.output and "converted" not in result.output


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user whom permissions stop")
def test_read_only_parent_is_refused(tmp_path: Path, nets) -> None:
    parent = tmp_path / "read-only"
    parent.mkdir(mode=0o555)
    result = CliRunner().invoke(main, ["convert", str(nets["tiny"]), "-o", str(parent / "out")])
    assert result.exit_code == 2 and "no permission" in result.output and not os.listdir(parent)


def test_force_never_touches_a_directory_with_other_files(tmp_path: Path, nets, monkeypatch) -> None:
    user = tmp_path / "user"
    export_net(str(nets["other"]), None, user)
    (user / "notes.txt").write_text("mine")
    before = snapshot(user)
    result = CliRunner().invoke(main, ["convert", str(nets["tiny"]), "-o", str(user), "--force"])
    assert result.exit_code == 2 and "notes.txt" in result.output
    monkeypatch.chdir(user)
    result = CliRunner().invoke(main, ["convert", str(nets["tiny"]), "-o", ".", "--force"])
    assert result.exit_code == 2 and "notes.txt" in result.output
    assert snapshot(user) == before and beside(user) == ["other.prototxt", "tiny.prototxt", "user"]


def test_previous_output_needs_force_and_empty_directory_does_not(tmp_path: Path, nets) -> None:
    out = tmp_path / "out"
    out.mkdir()
    export_net(str(nets["other"]), None, out)  # an empty directory is as good as none
    before = snapshot(out)
    with pytest.raises(InputError, match="already holds meta.json, model.py, model.safetensors; use --force"):
        export_net(str(nets["tiny"]), None, out)
    assert snapshot(out) == before
    (out / "__pycache__").mkdir()  # importing model.py from there makes it
    (out / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"stale")
    (out / ".weights.pt.0123abcd.tmp").write_bytes(b"left by an older version")
    export_net(str(nets["tiny"]), None, out, force=True)
    assert sorted(os.listdir(out)) == OUTPUT and json.loads((out / "meta.json").read_text())["net"] == "tiny"
    assert beside(out) == ["other.prototxt", "out", "tiny.prototxt"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupted_write_leaves_nothing_behind(tmp_path: Path, interruption, existing) -> None:
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "a").write_text("old a")
    before = snapshot(out)

    def interrupted(path: Path) -> None:
        path.write_text("half")
        raise interruption

    with pytest.raises(interruption):
        files.write_file_set(out, {"a": lambda path: path.write_text("new a"), "b": interrupted}, force=True)
    assert snapshot(out) == before and beside(out) == (["out"] if existing else [])


def test_without_an_atomic_exchange_the_set_is_still_replaced(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    files.write_file_set(out, {"a": lambda path: path.write_text("old")})
    monkeypatch.setattr(files, "_exchange", lambda first, second: False)
    files.write_file_set(out, {"a": lambda path: path.write_text("new")}, force=True)
    assert snapshot(out) == {"a": b"new"} and beside(out) == ["out"]


def test_leftover_of_a_live_process_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid in (os.getpid(), int(dead.stdout)):
        (tmp_path / f".out.{pid}-0123abcd.tmpdir").mkdir()
    files.write_file_set(out, {"a": lambda path: path.write_text("new")})
    assert beside(out) == [f".out.{os.getpid()}-0123abcd.tmpdir", "out"]


def test_a_symlinked_or_current_directory_is_replaced_where_it_points(tmp_path: Path, monkeypatch) -> None:
    real = tmp_path / "real"
    files.write_file_set(real, {"a": lambda path: path.write_text("old")})
    (tmp_path / "link").symlink_to(real)
    files.write_file_set(tmp_path / "link", {"a": lambda path: path.write_text("new")}, force=True)
    assert (tmp_path / "link").is_symlink() and snapshot(real) == {"a": b"new"}
    monkeypatch.chdir(real)
    files.write_file_set(".", {"a": lambda path: path.write_text("newer")}, force=True)
    assert Path("a").read_text() == "newer"  # the working directory followed the replaced directory
