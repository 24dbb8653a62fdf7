"""The built-in SENet zoo: builders equal to the release prototxts, the registry, and `caffe2torch zoo`."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import text_format

from caffe2torch import zoo
from caffe2torch.caffe_proto import caffe_pb2, read_prototxt
from caffe2torch.cli import main
from caffe2torch.errors import InputError
from conftest import shared_path

NAMES = list(zoo.MODELS)


def first_difference(built: caffe_pb2.NetParameter, release: caffe_pb2.NetParameter) -> str:
    """Where two nets part, shown as text, so a failing comparison says what to fix."""
    if built.name != release.name:
        return f"net name: built {built.name!r}, release {release.name!r}"
    for index, (ours, theirs) in enumerate(zip(built.layer, release.layer)):
        if ours != theirs:
            return (f"layer {index}:\n--- built\n{text_format.MessageToString(ours)}"
                    f"--- release\n{text_format.MessageToString(theirs)}")
    return f"layer count: built {len(built.layer)}, release {len(release.layer)}"


@pytest.mark.parametrize("name", NAMES)
def test_builder_equals_release_prototxt(name: str, senet_models: Path) -> None:
    entry = zoo.get(name)
    built, release = entry.build(), read_prototxt(senet_models / entry.release_file)
    assert built == release, first_difference(built, release)


def test_registry_rows_match_table_1_of_the_release() -> None:
    readme = shared_path("senet", "README.md").read_text(encoding="utf-8")
    table = {
        title: (float(top1), float(top5), int(size))
        for title, top1, top5, size in re.findall(r"^\| (SE[^|]*?) \| ([\d.]+) \| ([\d.]+) \| (\d+) MB \|$",
                                                  readme, flags=re.MULTILINE)
    }
    assert len(table) == 7
    rows = {entry.title: (entry.top1_error, entry.top5_error, entry.caffemodel_mb) for entry in zoo.MODELS.values()}
    assert rows == table
    assert all(entry.preset == "senet" and entry.label_order == "senet" for entry in zoo.MODELS.values())


def test_get_unknown_name_lists_the_zoo() -> None:
    with pytest.raises(InputError, match="se_resnext50.*senet154"):
        zoo.get("resnet50")


def test_identify_finds_each_release_prototxt(senet_models: Path) -> None:
    found = {zoo.identify(read_prototxt(senet_models / entry.release_file)): entry.name
             for entry in zoo.MODELS.values()}
    assert found == {name: name for name in NAMES}


def test_identify_ignores_names_but_not_structure() -> None:
    net = zoo.get("se_resnext50").build()
    net.name = "my copy"
    net.layer[1].name = "renamed_conv"
    assert zoo.identify(net) == "se_resnext50"
    net.layer[-2].inner_product_param.num_output = 10
    assert zoo.identify(net) is None


def test_identify_rejects_other_nets(realmodels: Path) -> None:
    assert zoo.identify(read_prototxt(realmodels / "lenet" / "lenet.prototxt")) is None


def test_a_registered_model_is_in_the_zoo_for_its_block_only(realmodels: Path) -> None:
    lenet = read_prototxt(realmodels / "lenet" / "lenet.prototxt")
    stand_in = dataclasses.replace(zoo.get("se_resnet50"), name="lenet_test", build=lambda: lenet)
    with zoo.registered_model(stand_in):
        assert zoo.identify(lenet) == "lenet_test" and zoo.get("lenet_test") is stand_in
        changed = dataclasses.replace(zoo.get("se_resnet50"), top1_error=1.0)
        with zoo.registered_model(changed):
            assert zoo.get("se_resnet50").top1_error == 1.0
        assert zoo.get("se_resnet50").top1_error == 22.37
    assert "lenet_test" not in zoo.MODELS and zoo.identify(lenet) is None


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_zoo_list_table() -> None:
    result = invoke("zoo", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "title", "layers", "params", "MACs", "top-1", "top-5"]
    assert len(lines) == 1 + len(NAMES)
    assert lines[5].split() == ["se_resnext50", "SE-ResNeXt-50", "(32", "x", "4d)", "309", "27.56M", "4.23G",
                                "20.97", "5.54"]


def test_zoo_list_json() -> None:
    result = invoke("zoo", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == NAMES
    for row in rows:
        entry = zoo.get(row["name"])
        assert row == {"name": entry.name, "title": entry.title, "layers": len(entry.build().layer),
                       "parameters": entry.parameters, "macs": entry.macs,
                       "top1_error": entry.top1_error, "top5_error": entry.top5_error}
    assert [row["layers"] for row in rows] == [372, 309, 615, 921, 309, 615, 930]


def test_zoo_export_round_trip_and_force(tmp_path: Path) -> None:
    output = tmp_path / "net.prototxt"
    result = invoke("zoo", "export", "se_bn_inception", "-o", str(output))
    assert result.exit_code == 0, result.output
    assert read_prototxt(output) == zoo.get("se_bn_inception").build()

    refused = invoke("zoo", "export", "se_resnet50", "-o", str(output))
    assert refused.exit_code == 2
    assert "already exists" in refused.output
    assert read_prototxt(output) == zoo.get("se_bn_inception").build()

    forced = invoke("zoo", "export", "se_resnet50", "-o", str(output), "--force")
    assert forced.exit_code == 0, forced.output
    assert read_prototxt(output) == zoo.get("se_resnet50").build()
    assert [path.name for path in tmp_path.iterdir()] == ["net.prototxt"]  # no temporary file left


def test_zoo_export_errors_are_one_line(tmp_path: Path) -> None:
    unknown = invoke("zoo", "export", "alexnet", "-o", str(tmp_path / "a.prototxt"))
    assert unknown.exit_code == 2
    assert unknown.output.startswith("error: unknown zoo model 'alexnet'")
    no_directory = invoke("zoo", "export", "senet154", "-o", str(tmp_path / "missing" / "a.prototxt"))
    assert no_directory.exit_code == 2
    assert no_directory.output == f"error: {tmp_path / 'missing'}: no such directory\n"
