"""caffe2torch.nets: a prototxt path, a zoo name or a NetParameter opened in one place, what
caffe2torch.load records from it, and the layering that keeps the converter and the runtime apart from
the zoo and from protobuf."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

import caffe2torch
from caffe2torch import zoo
from caffe2torch.caffe_proto import parse_prototxt, read_prototxt
from caffe2torch.errors import InputError
from caffe2torch.nets import open_net, preprocessing_hints

PACKAGE = Path(caffe2torch.__file__).parent

TINY = """name: "tiny"
# mean_value: 1, 2, 3
# crop_size: 8
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 5 } }
"""


def test_zoo_names_and_release_prototxts_open_as_the_same_zoo_net(senet_models: Path) -> None:
    by_name = open_net("se_bn_inception")
    path = senet_models / "SE-BN-Inception.prototxt"
    by_path, by_str = open_net(path), open_net(str(path))
    assert by_name.net == by_path.net == by_str.net == zoo.get("se_bn_inception").build()
    assert by_name.zoo_model == by_path.zoo_model == "se_bn_inception"
    assert by_name.preprocessing_hints is None  # nothing was read from a file
    assert by_path.preprocessing_hints == {"mean_value": [104.0, 117.0, 123.0]}


def test_a_users_copy_of_a_release_net_is_recognised_and_other_nets_are_not(tmp_path: Path) -> None:
    copy_of_release = zoo.get("se_resnet50").build()
    copy_of_release.name = "my resnet"
    assert open_net(copy_of_release).zoo_entry is zoo.get("se_resnet50")
    (tmp_path / "tiny.prototxt").write_text(TINY)
    opened = open_net(tmp_path / "tiny.prototxt")
    assert opened.zoo_entry is None and opened.zoo_model is None
    assert opened.preprocessing_hints == {"mean_value": [1.0, 2.0, 3.0], "crop_size": 8.0}
    assert open_net(opened) is opened


def test_unknown_specs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither a prototxt file nor a zoo model.*se_resnet50"):
        open_net("se_resnet18")
    with pytest.raises(InputError, match="missing.prototxt: no such prototxt file"):
        open_net(tmp_path / "missing.prototxt")


def test_preprocessing_hints_read_only_comments() -> None:
    assert preprocessing_hints("# scale: 0.017\n# mean_value: -1.5 2\n") == {"scale": 0.017,
                                                                          "mean_value": [-1.5, 2.0]}
    assert preprocessing_hints('name: "x"  # crop_size: 3\nmean_value: 4\n') == {}


def test_load_records_where_the_net_came_from(tmp_path: Path) -> None:
    (tmp_path / "tiny.prototxt").write_text(TINY)
    tiny = caffe2torch.load(tmp_path / "tiny.prototxt")
    assert (tiny.zoo_model, tiny.preset, tiny.label_order) == (None, None, None)
    assert tiny.preprocessing_hints == {"mean_value": [1.0, 2.0, 3.0], "crop_size": 8.0}
    stand_in = zoo.ZooEntry("tiny_test", "Tiny", lambda: parse_prototxt(TINY), 1.0, 0.5, preset="senet",
                            label_order="synset", caffemodel_mb=1, release_file="tiny.prototxt", parameters=1, macs=1)
    with zoo.registered_model(stand_in):
        for spec in ("tiny_test", tmp_path / "tiny.prototxt", read_prototxt(tmp_path / "tiny.prototxt")):
            model = caffe2torch.load(spec)
            assert (model.zoo_model, model.preset, model.label_order) == ("tiny_test", "senet", "synset"), spec
    copied = copy.deepcopy(model)
    assert (copied.zoo_model, copied.preset, copied.label_order) == ("tiny_test", "senet", "synset")
    assert copied.preprocessing_hints == model.preprocessing_hints


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function; ``from a import b`` counts as a.b."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package, forbidden", [
    ("converter", ("caffe2torch.zoo", "caffe2torch.nets", "caffe2torch.runtime")),
    ("runtime", ("caffe2torch.caffe_proto.caffe_pb2", "google.protobuf")),
    ("zoo", ("caffe2torch.converter", "caffe2torch.nets", "caffe2torch.runtime")),
])
def test_layering(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = {f"{path.relative_to(PACKAGE)}: {module}"
                 for path in sorted((PACKAGE / package).rglob("*.py"))
                 for module in imported_modules(path)
                 if any(module == name or module.startswith(name + ".") for name in forbidden)}
    assert offenders == set()
