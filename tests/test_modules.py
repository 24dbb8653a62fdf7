"""caffe2torch.modules stands on its own, and model.py is written from it: the library's files copied whole,
user classes copied or imported, anything else refused at export with the class named; ``--plugin`` loads a
user's converters.  (That converter/ leaves the zoo alone and runtime/ protobuf is test_nets.test_layering.)"""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.cli import COMMANDS, main
from caffe2torch.converter import convert, registered
from caffe2torch.converter import registry
from caffe2torch.converter.export import generate_code
from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import load_plugin
from caffe2torch.converter.standalone import ModelDefinitions
from caffe2torch.errors import InputError
from tests.conftest import ROOT
from tests.test_nets import imported_modules

PACKAGE = ROOT / "caffe2torch"
LIBRARY_FILES = sorted((PACKAGE / "modules").glob("*.py"))


# --- the library on its own ---------------------------------------------------------------------------------


def test_modules_import_where_the_rest_of_the_package_cannot(tmp_path: Path) -> None:
    (tmp_path / "caffe2torch").mkdir()
    (tmp_path / "caffe2torch" / "__init__.py").write_text("")
    shutil.copytree(PACKAGE / "modules", tmp_path / "caffe2torch" / "modules",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # Only the standard finders, so that an editable install's finder cannot supply the rest of the package.
    script = textwrap.dedent(f"""
        import sys
        from importlib.machinery import BuiltinImporter, FrozenImporter, PathFinder
        sys.meta_path[:] = [BuiltinImporter, FrozenImporter, PathFinder]
        sys.path.insert(0, {str(tmp_path)!r})
        import caffe2torch.modules
        assert caffe2torch.modules.__file__.startswith({str(tmp_path)!r}), caffe2torch.modules.__file__
        try:
            import caffe2torch.converter
        except ImportError:
            pass
        else:
            raise AssertionError("the rest of caffe2torch was importable: the test proves nothing")
        print(len(caffe2torch.modules.__all__))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 30


def test_library_files_import_only_torch_math_and_each_other() -> None:
    allowed = ("__future__", "math", "torch", "caffe2torch.modules")
    for path in LIBRARY_FILES:
        if path.name != "__init__.py":
            assert [m for m in imported_modules(path) if not any(m == a or m.startswith(a + ".") for a in allowed)
                    ] == [], path.name


def test_the_package_imports_every_library_file() -> None:
    """Identifiers reserve the names of the files the package has imported: all of them, whoever imports first."""
    package = (PACKAGE / "modules" / "__init__.py").read_text(encoding="utf-8")
    for path in LIBRARY_FILES:
        if path.name != "__init__.py":
            assert f"from caffe2torch.modules.{path.stem} import " in package, path.name


def test_library_files_define_each_top_level_name_once() -> None:
    """model.py copies the files side by side: a name two files define would be a clash there."""
    owner: dict[str, str] = {}
    for path in LIBRARY_FILES:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and path.name != "__init__.py":
                assert owner.setdefault(node.name, path.name) == path.name, f"{node.name} in {path.name}"


# --- model.py -------------------------------------------------------------------------------------------------


def net_text(body: str, shape: tuple[int, ...] = (2, 3, 4, 5)) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n{body}'


EVERY_FAMILY = net_text("""
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" }
layer { name: "lrn" type: "LRN" bottom: "conv" top: "lrn" }
layer { name: "pool" type: "Pooling" bottom: "lrn" top: "pool" pooling_param { pool: AVE kernel_size: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "pool" bottom: "pool" top: "sum" }
layer { name: "slice" type: "Slice" bottom: "sum" top: "s1" top: "s2" slice_param { slice_point: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "s2" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
layer { name: "argmax" type: "ArgMax" bottom: "prob" top: "argmax" }
layer { name: "total" type: "Reduction" bottom: "s1" top: "total" }
""")


def standalone(code: str) -> dict:
    namespace: dict = {"__name__": "exported_model"}
    exec(compile(code, "model.py", "exec"), namespace)
    return namespace


def same_outputs(model: nn.Module, code: str, x: torch.Tensor) -> None:
    net = standalone(code)["Net"]()
    net.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected, actual = model(x), net.eval()(x)
    expected, actual = (expected, actual) if isinstance(expected, dict) else ({"": expected}, {"": actual})
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_model_py_holds_library_files_whole_and_no_caffe2torch_name() -> None:
    model = convert(parse_prototxt(EVERY_FAMILY), None, random_init=True)
    code = generate_code(model)
    tree = ast.parse(code)
    top_level = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert top_level == ["from __future__ import annotations", "import math", "import torch",
                         "import torch.nn.functional as F", "from torch import nn"]
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [module for module in imported if module.split(".")[0] == "caffe2torch"]
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "caffe2torch" not in names and "LayerContext" not in names and "make" not in names
    defined = [node.name for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))]
    assert len(defined) == len(set(defined))
    # whole files: Pooling's helpers come along although no converter mentions average_divisors
    assert {"caffe_pool2d", "average_divisors", "pooled_size", "caffe_top_k", "Embed", "MVN"} <= set(defined)
    same_outputs(model, code, torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)))


# --- user classes ---------------------------------------------------------------------------------------------

CHANNEL_GAIN_NET = net_text('layer { name: "gain" type: "ChannelGain" bottom: "data" top: "gain" }')

PLUGIN_HEADER = """from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from caffe2torch.converter import register
from caffe2torch.converter.layers.common import make
"""

CONVERTER = """

@register("ChannelGain", bottoms=1, tops=1)
def channel_gain(ctx):
    channels = ctx.input_shapes[0][1]
    module = make(ChannelGain, channels=channels)
    module.gain = nn.Parameter(ctx.blob(0, (channels,)))
    return module
"""

SELF_CONTAINED = '''
class ChannelGain(nn.Module):
    """Uses torch, nn, F and math from its module, builtins, and itself."""

    limit: Unknown = 2  # annotations are never evaluated in model.py

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(abs(len(x.shape) - 3))
        return F.relu(x) * self.gain.view(1, -1, 1, 1) * scale + ChannelGain.limit
'''

USES_A_HELPER = '''
def _gain_view(gain):
    return gain.view(1, -1, 1, 1)


class ChannelGain(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * _gain_view(self.gain)
'''


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """Converters a test's plugins register last for that test only."""
    with registry.scoped_registry():
        yield


def write_plugin(directory: Path, name: str, code: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(PLUGIN_HEADER + code + CONVERTER, encoding="utf-8")
    return path


def channel_gain_model() -> nn.Module:
    gain = np.array([0.5, -1.0, 2.0], np.float32)
    return convert(parse_prototxt(CHANNEL_GAIN_NET), {"gain": [gain]})


X = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))


def test_a_self_contained_user_class_is_copied(tmp_path: Path, scratch_registry) -> None:
    load_plugin(write_plugin(tmp_path, "gain_plugin", SELF_CONTAINED))
    model = channel_gain_model()
    code = generate_code(model)
    assert "class ChannelGain(nn.Module):" in code and "import math" in code and "gain_plugin" not in code
    same_outputs(model, code, X)


def test_a_user_class_needing_its_module_is_imported_when_the_module_is_importable(
        tmp_path: Path, scratch_registry, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(tmp_path, "importable_gain_plugin", USES_A_HELPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "importable_gain_plugin", raising=False)
    load_plugin("importable_gain_plugin")
    model = channel_gain_model()
    code = generate_code(model)
    assert ("# model.py needs the module importable_gain_plugin: ChannelGain cannot be copied (it uses _gain_view"
            in code)
    assert "\nfrom importable_gain_plugin import ChannelGain\n" in code and "class ChannelGain" not in code
    same_outputs(model, code, X)


def test_a_user_class_that_can_be_neither_copied_nor_imported_is_refused_by_name(
        tmp_path: Path, scratch_registry) -> None:
    load_plugin(write_plugin(tmp_path, "helper_plugin", USES_A_HELPER))  # a file: not importable by name
    with pytest.raises(InputError, match=r"cannot export layer 'gain': its class _caffe2torch_plugin_\w+_helper_plugin"
                                         r"\.ChannelGain cannot be copied into model.py \(it uses _gain_view from its "
                                         r"module, .*\) nor imported there \(its module .* cannot be imported by name"):
        generate_code(channel_gain_model())


def test_a_class_from_main_without_source_is_refused_by_name(scratch_registry) -> None:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    unreadable = type("Unreadable", (nn.Module,), {"forward": forward, "__module__": "__main__"})
    with registered("ChannelGain", lambda ctx: make(unreadable)):
        model = convert(parse_prototxt(CHANNEL_GAIN_NET), None)
    with pytest.raises(InputError, match=r"layer 'gain': its class __main__.Unreadable cannot be copied into model.py "
                                         r"\(its source cannot be read .*\) nor imported there \(it is defined in "
                                         r"__main__\)"):
        generate_code(model)


def test_a_user_class_named_like_a_library_class_is_a_clash(tmp_path: Path, scratch_registry) -> None:
    load_plugin(write_plugin(tmp_path, "clash_plugin", SELF_CONTAINED.replace("ChannelGain", "Pooling")
                             + "\n\nChannelGain = Pooling\n"))
    text = net_text('layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
                    'pooling_param { kernel_size: 2 } }\n'
                    'layer { name: "gain" type: "ChannelGain" bottom: "pool" top: "gain" }')
    model = convert(parse_prototxt(text), {"gain": [np.ones(3, np.float32)]})
    with pytest.raises(InputError, match=r"'Pooling' would be defined twice in model.py, by "
                                         r"caffe2torch.modules.pooling and by class Pooling of "
                                         r"_caffe2torch_plugin_\w+; rename one of them"):
        generate_code(model)


def test_a_user_class_may_build_on_library_classes(tmp_path: Path, scratch_registry) -> None:
    code = """
from caffe2torch.modules.activation import ReLU


class ChannelGain(ReLU):
    def __init__(self, channels: int) -> None:
        super().__init__(negative_slope=0.5)
        self.gain = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return super().forward(x) * self.gain.view(1, -1, 1, 1)
"""
    load_plugin(write_plugin(tmp_path, "subclass_plugin", code))
    model = channel_gain_model()
    generated = generate_code(model)
    assert generated.index("class ReLU(nn.Module):") < generated.index("class ChannelGain(ReLU):")
    same_outputs(model, generated, X)


def test_export_refuses_a_class_whose_constructor_does_not_rebuild_the_converted_parameters(
        tmp_path: Path, scratch_registry) -> None:
    forgetful = SELF_CONTAINED.replace("torch.ones(channels)", "torch.ones(1)")
    load_plugin(write_plugin(tmp_path, "forgetful_plugin", forgetful))
    with pytest.raises(InputError, match=r"in model.py the modules of layer\(s\) 'gain' do not rebuild the converted "
                                         r"parameters"):
        generate_code(channel_gain_model())


def test_export_refuses_code_that_fails_to_build(tmp_path: Path, scratch_registry) -> None:
    """A class that reads its module's globals through globals(): no static check sees it, building Net does."""
    failing = SELF_CONTAINED.replace("torch.ones(channels)", 'globals()["_INITIAL"](channels)')
    load_plugin(write_plugin(tmp_path, "failing_plugin", failing + "\n\n_INITIAL = torch.ones\n"))
    with pytest.raises(InputError, match=r"the exported model.py does not work: KeyError: '_INITIAL'"):
        generate_code(convert(parse_prototxt(CHANNEL_GAIN_NET), {"gain": [np.ones(3, np.float32)]}))


def test_library_files_come_after_the_files_they_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a library of three files: a.py imports from b.py; c.py defines a name b.py defines."""
    package = tmp_path / "toylib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text('"""A."""\n\nfrom __future__ import annotations\n\nfrom torch import nn\n\n'
                                  'from toylib.b import helper\n\n\nclass A(nn.Module):\n'
                                  '    def forward(self, x):\n        return helper(x)\n')
    (package / "b.py").write_text('import math\n\n\ndef helper(x):\n    return x * math.pi\n')
    (package / "c.py").write_text('from torch import nn\n\n\ndef helper(x):\n    return x\n\n\n'
                                  'class C(nn.Module):\n    pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    a, c = importlib.import_module("toylib.a").A, importlib.import_module("toylib.c").C
    definitions = ModelDefinitions(library="toylib")
    assert definitions.reference(a, "layer_a") == "A"
    assert definitions.header() == ["import math", "from torch import nn"]
    code = "\n".join(definitions.blocks())
    assert code.index("def helper") < code.index("class A") and "import" not in code and '"""A."""' not in code
    definitions.reference(c, "layer_c")
    with pytest.raises(InputError, match=r"'helper' would be defined twice in model.py, by toylib.b and by toylib.c"):
        definitions.blocks()


# --- plugins --------------------------------------------------------------------------------------------------


def test_load_plugin_errors_name_the_plugin_and_leave_the_registry_as_it_was(tmp_path: Path,
                                                                              scratch_registry) -> None:
    with pytest.raises(InputError, match=r"plugin '.*missing.py': no such file"):
        load_plugin(tmp_path / "missing.py")
    with pytest.raises(InputError, match=r"plugin 'no_such_plugin_module': no such file or importable module"):
        load_plugin("no_such_plugin_module")
    broken = tmp_path / "broken.py"
    broken.write_text(PLUGIN_HEADER + SELF_CONTAINED + CONVERTER + "\nraise RuntimeError('half way')\n")
    with pytest.raises(InputError, match=r"plugin '.*broken.py' failed to import: RuntimeError: half way") as error:
        load_plugin(broken)
    assert isinstance(error.value.__cause__, RuntimeError)
    assert "ChannelGain" not in registry.registered_types()


def test_a_plugin_file_is_imported_once(tmp_path: Path, scratch_registry) -> None:
    plugin = write_plugin(tmp_path, "once", SELF_CONTAINED)
    assert load_plugin(plugin) is load_plugin(str(plugin)) is load_plugin(tmp_path / "." / "once.py")
    assert "ChannelGain" in registry.registered_types()


def test_every_command_that_reads_a_net_takes_plugins() -> None:
    reading = {name for name in COMMANDS if name not in ("demo", "zoo")}
    for name in reading:
        command = main.get_command(None, name)
        assert any("--plugin" in param.opts and param.multiple for param in command.params), name


def test_plugin_option_loads_converters_and_reports_broken_ones(tmp_path: Path, scratch_registry) -> None:
    prototxt = tmp_path / "gain.prototxt"
    prototxt.write_text(CHANNEL_GAIN_NET)
    runner = CliRunner()
    without = runner.invoke(main, ["info", str(prototxt), "--json"])
    assert "no converter for Caffe type 'ChannelGain'" in without.output
    plugin = write_plugin(tmp_path, "cli_plugin", SELF_CONTAINED)
    loaded = runner.invoke(main, ["info", str(prototxt), "--json", "--plugin", str(plugin)])
    assert loaded.exit_code == 0 and "no converter" not in loaded.output, loaded.output
    missing = runner.invoke(main, ["info", str(prototxt), "--plugin", str(tmp_path / "nope.py")])
    assert missing.exit_code == 2 and "error: plugin" in missing.output and "nope.py': no such file" in missing.output

