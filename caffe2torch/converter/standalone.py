"""What an exported model.py defines before ``class Net``, and the check that the whole file works.

The classes of caffe2torch's own layers come from the caffe2torch.modules files, copied whole (in the
order their imports of each other require, those imports dropped); a user-registered layer's class is
copied from its source when it needs nothing beyond torch, nn, F and math (or caffe2torch.modules
names), else imported from its module when that can be imported by name.  Whatever else is an InputError
naming the class at convert time, never a model.py that fails when imported.  No caffe2torch name reaches
model.py: the modules files import only torch and math.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import math
import re
import symtable
import sys
import textwrap
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.converter.build import CaffeNet
from caffe2torch.errors import InputError

LIBRARY = "caffe2torch.modules"

# The globals a copied user class may use, each bound in model.py by its import statement, in header order.
SHARED_GLOBALS: dict[str, tuple[object, str]] = {
    "math": (math, "import math"),
    "torch": (torch, "import torch"),
    "F": (F, "import torch.nn.functional as F"),
    "nn": (nn, "from torch import nn"),
}


@dataclass(frozen=True)
class Source:
    """One block of model.py: the import statements it needs, the names it defines, its code, and the
    library files that must come before it."""

    origin: str  # for error messages: where the block comes from
    imports: tuple[str, ...]
    defines: tuple[str, ...]
    code: str
    requires: tuple[str, ...] = ()
    imported: bool = False  # the block imports a user's class instead of copying it


def _import_bindings(node: ast.Import | ast.ImportFrom) -> dict[str, str]:
    """Each name an import statement binds -> what it binds it to (``import a.b`` binds ``a``)."""
    if isinstance(node, ast.Import):
        return {alias.asname or alias.name.split(".")[0]: alias.name if alias.asname else alias.name.split(".")[0]
                for alias in node.names}
    return {alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names}


@functools.cache
def library_file(name: str, library: str = LIBRARY) -> Source:
    """The library file ``name`` (a module of the ``library`` package) as a block of model.py: its code without
    its docstring and imports; imports of other library files become requirements, the rest header imports.

    Library files import each other as ``from <library>.<file> import <name>`` (no alias), so that the
    copied code finds the same names at the top level of model.py.
    """
    source = inspect.getsource(sys.modules[name])
    tree = ast.parse(source)
    dropped: set[int] = set()  # line numbers (1-based) of the docstring and the imports
    imports, requires, defines = [], [], []
    for index, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            dropped.update(range(node.lineno, node.end_lineno + 1))
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if isinstance(node, ast.ImportFrom) and (node.level or (module or "").startswith(library + ".")):
                if node.level or any(alias.asname for alias in node.names):
                    raise AssertionError(f"{name}: import other library files as 'from {library}.<file> import "
                                         f"<name>', without alias: {ast.unparse(node)}")
                requires.append(module)
            elif (module or "").split(".")[0] == library.split(".")[0]:
                raise AssertionError(f"{name}: library files import nothing of {library.split('.')[0]} but other "
                                     f"library files ({ast.unparse(node)})")
            else:
                imports.append(ast.unparse(node))
        elif index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            dropped.update(range(node.lineno, node.end_lineno + 1))  # the docstring
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            defines.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defines += [n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)]
    lines = [line for number, line in enumerate(source.splitlines(), 1) if number not in dropped]
    code = re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines)).strip("\n")
    return Source(name, tuple(imports), tuple(defines), code, tuple(dict.fromkeys(requires)))


def _needed_globals(source: str) -> set[str]:
    """The global names the code of one class reads, annotations excepted (model.py never evaluates them)."""
    tables = [symtable.symtable("from __future__ import annotations\n" + source, "<class>", "exec")]
    needed = set()
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        needed.update(s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global())
    return needed


def _copied_block(cls: type, library: str) -> Source | str:
    """``cls`` as a copied block of model.py, or why it cannot be copied."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError) as error:
        return f"its source cannot be read ({error})"
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.ClassDef) or tree.body[0].name != cls.__name__:
        return "its source cannot be told apart"
    module = sys.modules.get(cls.__module__)
    if module is None:
        return f"its module {cls.__module__} is not loaded"
    module_globals = vars(module)
    imports, requires, foreign = [], [], []
    for name in sorted(_needed_globals(source) - {cls.__name__}):
        value = module_globals.get(name, getattr(builtins, name, None))
        if name in SHARED_GLOBALS and value is SHARED_GLOBALS[name][0]:
            imports.append(SHARED_GLOBALS[name][1])
        elif hasattr(builtins, name) and value is getattr(builtins, name):
            pass
        elif (getattr(value, "__module__", "").startswith(library + ".")
              and getattr(value, "__qualname__", None) == name
              and getattr(sys.modules[value.__module__], name, None) is value):
            requires.append(value.__module__)
        else:
            foreign.append(name)
    if foreign:
        return f"it uses {', '.join(foreign)} from its module, which model.py does not have"
    return Source(f"class {cls.__qualname__} of {cls.__module__}", tuple(imports), (cls.__name__,),
                  source.strip("\n"), tuple(requires))


def _import_problem(cls: type) -> str:
    """Why model.py cannot import ``cls`` from its module by name ('' when it can)."""
    module_name = cls.__module__
    if module_name == "__main__":
        return "it is defined in __main__"
    if module_name.split(".")[0] == "caffe2torch":
        return "model.py imports nothing from caffe2torch"
    if "<locals>" in cls.__qualname__:
        return "it is defined inside a function"
    top = module_name.split(".")[0]
    finders = [getattr(finder, "find_spec", None) for finder in sys.meta_path]
    if not any(find(top, None) is not None for find in finders if find is not None):
        return f"its module {module_name} cannot be imported by name"
    found = sys.modules.get(module_name)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is not cls:
        return f"its module {module_name} does not hold it as {cls.__qualname__}"
    return ""


class ModelDefinitions:
    """The blocks of model.py that define the classes a net is made of, collected class by class.

    ``reference(cls)`` is how ``class Net`` calls the class; ``header()`` and ``blocks()`` the code that must
    come before it, with every top-level name defined once (a clash is an InputError naming both origins).
    """

    def __init__(self, reserved: tuple[str, ...] = (), library: str = LIBRARY) -> None:
        self.library = library
        self.reserved = reserved  # names the rest of model.py defines
        self._library_files: dict[str, None] = {}  # in order of first use
        self._user_blocks: dict[type, Source] = {}

    def reference(self, cls: type, layer_name: str) -> str:
        """The expression that names ``cls`` in model.py, remembering what must define it."""
        if cls.__module__.startswith("torch."):
            return f"{cls.__module__}.{cls.__qualname__}"
        if cls.__module__.startswith(self.library + "."):
            self._library_files.setdefault(cls.__module__)
            return cls.__name__
        if cls not in self._user_blocks:
            self._user_blocks[cls] = self._user_block(cls, layer_name)
        return cls.__qualname__ if self._user_blocks[cls].imported else cls.__name__

    def _user_block(self, cls: type, layer_name: str) -> Source:
        copied = _copied_block(cls, self.library)
        if isinstance(copied, Source):
            return copied
        copy_problem = copied
        import_problem = _import_problem(cls)
        if import_problem:
            raise InputError(f"cannot export layer {layer_name!r}: its class {cls.__module__}.{cls.__qualname__} "
                             f"cannot be copied into model.py ({copy_problem}) nor imported there "
                             f"({import_problem})")
        top = cls.__qualname__.split(".")[0]
        code = (f"# model.py needs the module {cls.__module__}: {cls.__qualname__} cannot be copied ({copy_problem})\n"
                f"from {cls.__module__} import {top}")
        return Source(f"class {cls.__qualname__} of {cls.__module__}", (), (top,), code, imported=True)

    def _ordered_library_files(self) -> list[Source]:
        """Every library file needed, each after the files it imports from."""
        ordered: dict[str, Source] = {}
        visiting: list[str] = []

        def visit(name: str) -> None:
            if name in ordered:
                return
            if name in visiting:
                raise AssertionError(f"library files import each other in a cycle: {' -> '.join(visiting + [name])}")
            visiting.append(name)
            source = library_file(name, self.library)
            for required in source.requires:
                visit(required)
            visiting.pop()
            ordered[name] = source

        wanted = list(self._library_files) + [name for block in self._user_blocks.values() for name in block.requires]
        for name in wanted:
            visit(name)
        return list(ordered.values())

    def _all_blocks(self) -> list[Source]:
        user = list(self._user_blocks.values())
        imported = [block for block in user if block.imported]
        copied = [block for block in user if not block.imported]
        return imported + self._ordered_library_files() + copied

    def header(self, required: tuple[str, ...] = ()) -> list[str]:
        """The import statements of the blocks and ``required``: SHARED_GLOBALS' first, in their order, then
        any other."""
        statements = dict.fromkeys([*required, *(s for block in self._all_blocks() for s in block.imports)])
        known = [statement for _, statement in SHARED_GLOBALS.values()]
        return [s for s in known if s in statements] + [s for s in statements if s not in known]

    def blocks(self) -> list[str]:
        """The code of every block, after checking that no top-level name of model.py is defined twice."""
        blocks = self._all_blocks()
        # name -> (what it is bound to, who binds it); the same import in two blocks binds the same thing
        owners = {name: (("model.py", name), "model.py's own code") for name in self.reserved}
        for block in blocks:
            bindings = {name: ("import", target) for statement in block.imports
                        for name, target in _import_bindings(ast.parse(statement).body[0]).items()}
            bindings.update({name: ("definition", block.origin) for name in block.defines})
            for name, bound_to in bindings.items():
                owner_bound_to, owner = owners.setdefault(name, (bound_to, block.origin))
                if owner_bound_to != bound_to:
                    raise InputError(f"cannot export: {name!r} would be defined twice in model.py, by {owner} "
                                     f"and by {block.origin}; rename one of them")
        return [block.code for block in blocks]


def check_model_code(code: str, model: CaffeNet) -> None:
    """Run ``code`` as a fresh module and build its ``Net`` on the meta device: it must compile, construct, and
    hold the state dict keys and shapes of ``model``, so a broken model.py is caught before it is written."""
    namespace = types.ModuleType("caffe2torch_exported_model").__dict__
    try:
        exec(compile(code, "model.py", "exec"), namespace)
        with torch.device("meta"):
            built = namespace["Net"]()
    except Exception as error:
        raise InputError(f"the exported model.py does not work: {type(error).__name__}: {error}") from error
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in built.state_dict().items()}
    if found != expected:
        differing = sorted({key.split(".")[0] for key in expected.keys() | found.keys()
                            if expected.get(key) != found.get(key)})
        layers = ", ".join(repr(model.caffe_names.get(ident, ident)) for ident in differing)
        raise InputError(f"cannot export: in model.py the modules of layer(s) {layers} do not rebuild the converted "
                         f"parameters and buffers (names or shapes differ); their constructors must create them "
                         f"as the converter leaves them")
