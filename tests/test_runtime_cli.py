"""``verify``, ``predict`` and ``bench`` end to end, on a Caffe net whose answers are known by construction.

The net: 3 x 224 x 224 input -> global average pooling -> InnerProduct with 1000 outputs whose first three
rows pick the B, G and R channel means and whose other rows are constants far below them.  After the
SENet preprocessing (mean 104/117/123) a solid blue image scores class 0 first, then 1, 2, 3, 4: its top-5
is {0, 1, 2, 3, 4}.  The outputs are declared to be in SENet order, so label files in synset order must be
mapped with the real 1000-class permutation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from caffe2torch import zoo
from caffe2torch.caffe_proto import read_prototxt, write_caffemodel
from caffe2torch.cli import main
from caffe2torch.runtime.labels import label_map
from tests.conftest import shared_path

NET = """name: "dominant_channel"
input: "data"
input_shape { dim: 1 dim: 3 dim: 224 dim: 224 }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 1000 } }
"""
SOFTMAX = 'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n'

BGR = {"blue": (255, 0, 0), "green": (0, 255, 0), "red": (0, 0, 255)}
# image -> its label in the net's (SENet) order; blue/green/red score 0/1/2 first
LABELS = [("blue1.jpg", 0), ("green1.png", 1), ("red1.jpg", 2), ("blue2.png", 3), ("green2.jpg", 999),
          ("red2.png", 2)]
TOP1_CORRECT, TOP5_CORRECT = 4, 5  # blue2 is right only at top-5 (class 3 is 4th); green2 is wrong


def _weights() -> dict[str, list[np.ndarray]]:
    weight = np.zeros((1000, 3), np.float32)
    weight[[0, 1, 2], [0, 1, 2]] = 1.0
    # steps of 16 keep classes 3, 4, 5 apart even in bf16 (8-bit mantissa: spacing 8 near 1000)
    bias = np.concatenate([np.zeros(3), -1000.0 - 16.0 * np.arange(3, 1000)]).astype(np.float32)
    return {"fc": [weight, bias]}


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runtime_cli")
    for name, text in (("net", NET), ("net_prob", NET + SOFTMAX)):
        (root / f"{name}.prototxt").write_text(text)
        write_caffemodel(read_prototxt(root / f"{name}.prototxt"), _weights(), root / f"{name}.caffemodel")
    images = root / "images"
    images.mkdir()
    for index, (name, _) in enumerate(LABELS):
        colour = next(value for key, value in BGR.items() if name.startswith(key))
        size = (40 + 8 * index, 64 - 4 * index)  # landscape and portrait, resized to 256 and cropped
        cv2.imwrite(str(images / name), np.full((*size, 3), colour, np.uint8))
    to_synset = label_map("senet", "synset")
    (root / "senet.txt").write_text("".join(f"{name} {label}\n" for name, label in LABELS))
    (root / "synset.txt").write_text("".join(f"{name} {to_synset[label]}\n" for name, label in LABELS))
    return root


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def verify(case: Path, *args: object) -> tuple[int, str, str]:
    return run("verify", case / "net.prototxt", case / "net.caffemodel", "--images", case / "images",
               "--device", "cpu", "--workers", 0, "--quiet", *args)


@pytest.fixture
def tiny_zoo_entry(case: Path) -> Iterator[Callable[[float, float], None]]:
    """Register the test net in the zoo with a published row the test sets (and sets again)."""
    with contextlib.ExitStack() as registrations:
        def register(top1: float, top5: float) -> None:
            entry = dataclasses.replace(zoo.get("se_resnet50"), name="dominant_channel_test",
                                        build=lambda: read_prototxt(case / "net.prototxt"),
                                        top1_error=top1, top5_error=top5)
            registrations.enter_context(zoo.registered_model(entry))
        yield register
    assert "dominant_channel_test" not in zoo.MODELS


def test_verify_counts_labels_in_the_nets_order(case: Path) -> None:
    code, out, _ = verify(case, "--labels", case / "senet.txt", "--preset", "senet", "--json", case / "a.json")
    assert code == 0
    data = json.loads((case / "a.json").read_text())
    assert (data["images"], data["top1_correct"], data["top5_correct"]) == (6, TOP1_CORRECT, TOP5_CORRECT)
    assert data["reproduced"] is None and data["model"] is None and data["net_label_order"] == "senet"
    assert "no published result to compare with" in out and "top-1 error  33.33%" in out


def test_verify_maps_synset_labels_to_senet_outputs(case: Path) -> None:
    code, _, _ = verify(case, "--labels", case / "synset.txt", "--preset", "senet", "--label-order", "synset",
                        "--json", case / "b.json")
    data = json.loads((case / "b.json").read_text())
    assert code == 0 and (data["top1_correct"], data["top5_correct"]) == (TOP1_CORRECT, TOP5_CORRECT)
    assert data["labels_label_order"] == "synset"
    # the same file read as if it were in SENet order gets other answers
    code, _, _ = verify(case, "--labels", case / "synset.txt", "--preset", "senet", "--json", case / "c.json")
    assert json.loads((case / "c.json").read_text())["top1_correct"] != TOP1_CORRECT


def test_verify_with_decoding_workers_and_limit(case: Path) -> None:
    code, _, _ = run("verify", case / "net.prototxt", case / "net.caffemodel", "--images", case / "images",
                     "--labels", case / "senet.txt", "--preset", "senet", "--device", "cpu", "--workers", 2,
                     "--batch-size", 4, "--limit", 4, "--json", case / "d.json")
    data = json.loads((case / "d.json").read_text())
    assert code == 0 and (data["images"], data["top1_correct"], data["top5_correct"]) == (4, 3, 4)
    assert data["limit"] == 4


def test_verify_in_bf16_channels_last(case: Path, tmp_path: Path) -> None:
    code, _, _ = verify(case, "--labels", case / "senet.txt", "--preset", "senet", "--precision", "bf16",
                        "--channels-last", "--json", tmp_path / "bf16.json")
    # a different resize filter changes nothing on solid colours, but is recorded
    code_area, _, _ = verify(case, "--labels", case / "senet.txt", "--preset", "senet", "--interpolation", "area",
                             "--json", tmp_path / "area.json")
    area = json.loads((tmp_path / "area.json").read_text())
    assert code_area == 0 and area["interpolation"] == "area" and area["top1_correct"] == TOP1_CORRECT
    data = json.loads((tmp_path / "bf16.json").read_text())
    assert code == 0 and data["precision"] == "bf16" and data["interpolation"] == "linear"
    assert (data["top1_correct"], data["top5_correct"]) == (TOP1_CORRECT, TOP5_CORRECT)


@pytest.mark.parametrize("model_option", [True, False], ids=["--model", "identified"])
def test_verify_decides_against_the_published_row(case: Path, tiny_zoo_entry, model_option: bool,
                                                  tmp_path: Path) -> None:
    named = ["--model", "dominant_channel_test"] if model_option else []
    # 2 of 6 wrong at top-1 (33.3%, 95% interval 9.7..70.0), 1 of 6 at top-5 (16.7%, 3.0..56.4)
    tiny_zoo_entry(40.0, 10.0)
    code, out, _ = verify(case, "--labels", case / "senet.txt", *named, "--json", tmp_path / "yes.json")
    data = json.loads((tmp_path / "yes.json").read_text())
    assert code == 0 and "REPRODUCED" in out and data["reproduced"] is True
    assert data["model"] == "dominant_channel_test" and data["preset"] == "senet"
    assert data["published"] == {"model": "dominant_channel_test", "top1_error": 40.0, "top5_error": 10.0}
    tiny_zoo_entry(5.0, 10.0)
    code, out, _ = verify(case, "--labels", case / "senet.txt", *named, "--json", tmp_path / "no.json")
    data = json.loads((tmp_path / "no.json").read_text())
    assert code == 1 and "NOT REPRODUCED" in out and data["within"] == {"top1": False, "top5": True}


def test_json_is_not_overwritten_without_force(case: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("keep")
    code, _, err = verify(case, "--labels", case / "senet.txt", "--preset", "senet", "--json", target)
    assert code == 2 and "already exists" in err and target.read_text() == "keep"
    code, _, _ = verify(case, "--labels", case / "senet.txt", "--preset", "senet", "--json", target, "--force")
    assert code == 0 and json.loads(target.read_text())["images"] == 6
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left


def test_verify_bad_input_exits_2(case: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    missing.write_text("blue1.jpg 0\nnot_there.jpg 1\n")
    code, _, err = verify(case, "--labels", missing, "--preset", "senet")
    assert code == 2 and "missing.txt:2: image 'not_there.jpg' is not in" in err
    outside = tmp_path / "outside.txt"
    outside.write_text("blue1.jpg 0\nred1.jpg 1000\n")
    code, _, err = verify(case, "--labels", outside, "--preset", "senet")
    assert code == 2 and "outside.txt:2: label 1000 is not one of the net's 1000 classes" in err
    code, _, err = verify(case, "--labels", case / "senet.txt", "--model", "no_such_model")
    assert code == 2 and "unknown model 'no_such_model'" in err
    code, _, err = verify(case, "--labels", case / "senet.txt")
    assert code == 2 and "--preset" in err
    code, _, err = verify(case, "--labels", case / "senet.txt", "--preset", "senet", "--label-order", "wordnet")
    assert code == 2 and "no map from label order 'wordnet' to 'senet'" in err
    code, _, err = verify(case, "--preset", "senet")
    assert code == 2 and "give a label file" in err
    code, _, err = run("verify", case / "net.prototxt", tmp_path / "absent.caffemodel", "--images",
                       case / "images", "--labels", case / "senet.txt", "--preset", "senet")
    assert code == 2 and "absent.caffemodel: no such weights file" in err


def test_verify_class_folders(case: Path, tmp_path: Path) -> None:
    to_synset = label_map("senet", "synset")
    wnids = [f"n{i:08d}" for i in range(1000)]
    for wnid in wnids:
        (tmp_path / wnid).mkdir()
    for name, senet_class in (("blue1.jpg", 0), ("green1.png", 1), ("red1.jpg", 2)):
        (tmp_path / wnids[to_synset[senet_class]] / name).write_bytes((case / "images" / name).read_bytes())
    code, out, _ = run("verify", case / "net.prototxt", case / "net.caffemodel", "--images", tmp_path,
                       "--preset", "senet", "--device", "cpu", "--workers", 0, "--quiet")
    assert code == 0 and "top-1 error   0.00%" in out
    for wnid in wnids:
        if not any((tmp_path / wnid).iterdir()):
            (tmp_path / wnid).rmdir()
    code, _, err = run("verify", case / "net.prototxt", case / "net.caffemodel", "--images", tmp_path,
                       "--preset", "senet", "--device", "cpu", "--workers", 0)
    assert code == 2 and "3 class folders, but the net has 1000 outputs" in err


def test_predict_names_and_probabilities(case: Path, tmp_path: Path) -> None:
    to_synset = label_map("senet", "synset")
    names = tmp_path / "synset_words.txt"
    names.write_text("".join(f"n{i:08d} thing {i}\n" for i in range(1000)))
    blue = case / "images" / "blue1.jpg"
    code, out, _ = run("predict", case / "net.prototxt", case / "net.caffemodel", blue, "--top", 3,
                       "--labels", names, "--preset", "senet", "--device", "cpu")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(blue)
    rows = [line.split(None, 2) for line in lines[1:]]
    assert [int(r[1]) for r in rows] == [0, 1, 2]
    assert [r[2] for r in rows] == [f"thing {to_synset[k]}" for k in range(3)]
    # no Softmax layer: a softmax is applied; B - mean = 151 dominates G - 117 and R - 123 completely
    assert float(rows[0][0]) == 1.0
    code, out_prob, _ = run("predict", case / "net_prob.prototxt", case / "net_prob.caffemodel", blue,
                            "--top", 3, "--labels", names, "--preset", "senet", "--device", "cpu")
    assert code == 0 and out_prob == out  # Softmax output used as it is: the same probabilities


def test_predict_bad_input_exits_2(case: Path, tmp_path: Path) -> None:
    blue = case / "images" / "blue1.jpg"
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    code, _, err = run("predict", case / "net.prototxt", case / "net.caffemodel", blue, "--labels",
                       tmp_path / "three.txt", "--preset", "senet", "--device", "cpu")
    assert code == 2 and "3 class names for a net with 1000 outputs" in err
    code, _, err = run("predict", case / "net.prototxt", case / "net.caffemodel", tmp_path / "none.jpg",
                       "--preset", "senet", "--device", "cpu")
    assert code == 2 and "none.jpg: no such image file" in err


def test_softmax_decision_reads_the_test_phase_net() -> None:
    from caffe2torch.caffe_proto import parse_prototxt
    from caffe2torch.converter import convert
    from caffe2torch.runtime.predict import outputs_are_probabilities

    def output_types(text: str, outputs: list[str] | None = None) -> dict[str, str | None]:
        return convert(parse_prototxt(text), random_init=True, outputs=outputs).output_types

    assert output_types(NET + SOFTMAX) == {"prob": "Softmax"}
    assert output_types(NET + SOFTMAX, ["fc", "prob", "data"]) == {"fc": "InnerProduct", "prob": "Softmax",
                                                                  "data": None}
    train_only = NET + 'layer { name: "s" type: "Softmax" bottom: "fc" top: "fc" include { phase: TRAIN } }\n'
    assert output_types(train_only) == {"fc": "InnerProduct"}
    in_place = NET + 'layer { name: "s" type: "Softmax" bottom: "fc" top: "fc" }\n'
    assert output_types(in_place) == {"fc": "Softmax"}
    assert output_types(in_place, ["fc"]) == {"fc": "InnerProduct"}  # a layer's name: its output, before s
    renamed = NET + 'layer { name: "probabilities" type: "Softmax" bottom: "fc" top: "out" }\n'
    assert output_types(renamed, ["probabilities", "out"]) == {"probabilities": "Softmax", "out": "Softmax"}
    assert outputs_are_probabilities(convert(parse_prototxt(renamed), random_init=True))
    assert not outputs_are_probabilities(convert(parse_prototxt(NET), random_init=True))
    two_outputs = convert(parse_prototxt(NET + SOFTMAX), random_init=True, outputs=["prob", "fc"])
    assert not outputs_are_probabilities(two_outputs)  # which one would it be?


@pytest.fixture(scope="module")
def random_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random 1000-class convolutional net, standing in for real weights."""
    root = tmp_path_factory.mktemp("random_net")
    text = NET.replace('layer { name: "pool"', 'layer { name: "conv" type: "Convolution" bottom: "data" '
                       'top: "conv" convolution_param { num_output: 8 kernel_size: 7 stride: 4 } }\n'
                       'layer { name: "pool"').replace('bottom: "data" top: "pool"', 'bottom: "conv" top: "pool"')
    (root / "net.prototxt").write_text(text)
    rng = np.random.default_rng(0)
    weights = {"conv": [rng.standard_normal((8, 3, 7, 7)).astype(np.float32), np.zeros(8, np.float32)],
               "fc": [rng.standard_normal((1000, 8)).astype(np.float32), np.zeros(1000, np.float32)]}
    write_caffemodel(read_prototxt(root / "net.prototxt"), weights, root / "net.caffemodel")
    return root


def test_predict_and_verify_on_the_100_real_images(random_net: Path, tmp_path: Path) -> None:
    folder = shared_path("realmodels", "imagenet-val-100")
    present = {p.name for p in folder.glob("*.JPEG")}
    labels = tmp_path / "val100.txt"
    labels.write_text("".join(line + "\n" for line in (folder / "val.txt").read_text().splitlines()
                              if line.split()[0] in present))
    code, out, _ = run("verify", random_net / "net.prototxt", random_net / "net.caffemodel", "--images", folder,
                       "--labels", labels, "--label-order", "synset", "--preset", "senet", "--device", "cpu",
                       "--workers", 2, "--quiet", "--json", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and data["images"] == 100 and 0 <= data["top1_correct"] <= data["top5_correct"] <= 100
    first = sorted(present)[:2]
    code, out, _ = run("predict", random_net / "net.prototxt", random_net / "net.caffemodel",
                       *[folder / name for name in first], "--labels", folder / "synset_words.txt",
                       "--preset", "senet", "--device", "cpu")
    assert code == 0 and out.splitlines()[0] == str(folder / first[0]) and len(out.splitlines()) == 12


def test_bench(random_net: Path, tmp_path: Path) -> None:
    code, out, _ = run("bench", random_net / "net.prototxt", "--batch-size", 2, "--iterations", 3, "--warmup", 1,
                       "--device", "cpu", "--json", tmp_path / "bench.json")
    data = json.loads((tmp_path / "bench.json").read_text())
    assert code == 0 and "images/s" in out and "p99" in out
    assert data["batch_size"] == 2 and data["iterations"] == 3 and data["images_per_second"] > 0
    assert data["latency_ms_p50"] <= data["latency_ms_p90"] <= data["latency_ms_p99"]


def test_the_optimized_graph_runs_unless_exact(case: Path, random_net: Path, tmp_path: Path) -> None:
    """verify, predict and bench run caffe2torch.optimize's graph; --exact runs the faithful one, with the same
    answers here."""
    results = {}
    for graph, flags in (("optimized", []), ("exact", ["--exact"])):
        code, out, _ = run("bench", random_net / "net.prototxt", "--batch-size", 2, "--iterations", 2, "--warmup", 0,
                           "--device", "cpu", *flags, "--json", tmp_path / f"bench-{graph}.json")
        assert code == 0 and f"{graph} graph" in out
        assert json.loads((tmp_path / f"bench-{graph}.json").read_text())["graph"] == graph
        code, _, _ = verify(case, "--labels", case / "senet.txt", "--preset", "senet", *flags,
                            "--json", tmp_path / f"verify-{graph}.json")
        data = json.loads((tmp_path / f"verify-{graph}.json").read_text())
        assert code == 0 and data["graph"] == graph
        code, out, _ = run("predict", case / "net_prob.prototxt", case / "net_prob.caffemodel",
                           case / "images" / "blue1.jpg", "--preset", "senet", "--device", "cpu", *flags)
        assert code == 0
        results[graph] = (data["top1_correct"], data["top5_correct"], out)
    assert results["optimized"] == results["exact"]
    assert results["exact"][:2] == (TOP1_CORRECT, TOP5_CORRECT)


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
def test_session_runs_the_optimized_graph_unless_exact(random_net: Path, exact: bool) -> None:
    import torch

    from caffe2torch.optimize import OptimizedNet
    from caffe2torch.runtime.device import Inference
    from caffe2torch.runtime.session import open_session

    session = open_session(random_net / "net.prototxt", random_net / "net.caffemodel",
                           Inference(torch.device("cpu")), exact=exact)
    assert isinstance(session.runnable, OptimizedNet) is not exact
    assert session.module is session.runnable  # one graph's weights held, not two
    assert session.input_shapes == [(1, 3, 224, 224)] and list(session.module.output_types) == ["fc"]
    if not exact:
        assert session.runnable.channels_last  # eager float32 on the CPU: oneDNN on NHWC


@pytest.mark.parametrize("own_process", [True, False], ids=["console-script", "caller's-process"])
def test_commands_running_nets_keep_freed_memory_only_in_their_own_process(random_net: Path, monkeypatch,
                                                                           own_process: bool) -> None:
    """The console script (caffe2torch.cli.run) lets glibc keep freed memory for the next batch; a caller's
    process (here CliRunner's, as an application's) keeps its allocator."""
    import sys

    import caffe2torch.optimize  # noqa: F401  (the module, for its keep_freed_memory)

    calls = []
    monkeypatch.setattr(sys.modules["caffe2torch.optimize"], "keep_freed_memory", lambda: calls.append(1) or True)
    result = CliRunner().invoke(main, ["bench", str(random_net / "net.prototxt"), "--batch-size", "1",
                                       "--iterations", "1", "--warmup", "0", "--device", "cpu"],
                                obj={"own_process": True} if own_process else None)
    assert result.exit_code == 0, result.output
    assert calls == ([1] if own_process else [])
