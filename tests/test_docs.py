"""Every doctest of the sparqforge package runs, one test per module.

Modules are discovered by walking every package the distribution ships (the ``packages`` of
``pyproject.toml``: ``sparqforge.hw`` and friends live in their own folders, so walking
``sparqforge`` alone would miss them) with :func:`pkgutil.walk_packages` and importing each
one. Nothing is skipped silently: a module that fails to import is a failing case, a
``__main__`` module (importing it runs the CLI) is checked to hold no examples, and a module
whose source has ``>>>`` prompts that the doctest finder does not collect fails too. A run
that attempts fewer examples than :data:`FLOOR` fails, so a broken discovery cannot pass.
"""

import doctest
import importlib
import importlib.util
import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Fewest examples a complete run attempts (73 as this is written); raise it as
#: doctests are added, never lower it to make a run pass.
FLOOR = 70

#: Modules whose doctests fail in files this test's author does not own; each is a strict
#: xfail so that the fix turns it into a failure to remove from here.
KNOWN_FAILURES = {
    # "sparqforge.example": "what fails and why",
}

_PROMPT = re.compile(r"^\s*>>>( |$)", re.MULTILINE)


def _packages():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["packages"]


def _discover():
    """``{module name: module, or the exception its import raised}``, every module once."""
    found = {}
    errors = []
    for package in _packages():
        try:
            found[package] = module = importlib.import_module(package)
        except Exception as exc:  # reported as a failing case
            found[package] = exc
            continue
        for info in pkgutil.walk_packages(module.__path__, package + ".",
                                          onerror=errors.append):
            if info.name in found:
                continue
            if info.name.rpartition(".")[2] == "__main__":
                found[info.name] = None
                continue
            try:
                found[info.name] = importlib.import_module(info.name)
            except Exception as exc:  # reported as a failing case
                found[info.name] = exc
    for name in errors:
        found.setdefault(name, ImportError(f"pkgutil could not walk {name}"))
    return found


MODULES = _discover()
_FINDER = doctest.DocTestFinder()


def _tests(module):
    return [test for test in _FINDER.find(module, module.__name__) if test.examples]


def _examples(module):
    return sum(len(test.examples) for test in _tests(module))


def _case(name):
    marks = ()
    if name in KNOWN_FAILURES:
        marks = pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[name])
    return pytest.param(name, marks=marks, id=name)


DOCTEST_MODULES = sorted(name for name, module in MODULES.items()
                         if not isinstance(module, Exception) and module is not None
                         and _examples(module))


def run(module):
    """Run a module's doctests; returns ``(attempted, failed, report)``."""
    lines = []
    runner = doctest.DocTestRunner(verbose=False)
    for test in _tests(module):
        runner.run(test, out=lines.append)
    result = runner.summarize(verbose=False)
    return result.attempted, result.failed, "".join(lines)


def test_discovery_covers_every_shipped_package():
    for package in _packages():
        assert package in MODULES
    for folder in ("hw", "sw", "sim", "boards", "cli"):
        assert any(name.startswith(f"sparqforge.{folder}.") for name in MODULES), folder
    assert "sparqforge.sw.golden.numerics" in DOCTEST_MODULES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_imports(name):
    module = MODULES[name]
    if isinstance(module, Exception):
        raise AssertionError(f"{name} does not import: {module!r}") from module
    if module is None:  # __main__: importing it runs the CLI, so read it instead
        source = Path(importlib.util.find_spec(name).origin).read_text()
        assert not _PROMPT.search(source), f"{name} has examples that cannot be run"
        return
    source = Path(module.__file__).read_text()
    prompts = len(_PROMPT.findall(source))
    assert _examples(module) == prompts, (
        f"{name} has {prompts} '>>>' prompts but the doctest finder collects "
        f"{_examples(module)} examples")


@pytest.mark.parametrize("name", [_case(name) for name in DOCTEST_MODULES])
def test_doctests(name):
    attempted, failed, report = run(MODULES[name])
    assert attempted == _examples(MODULES[name]) > 0
    assert failed == 0, f"{failed} of {attempted} examples of {name} failed:\n{report}"


def test_enough_examples_run():
    attempted = {name: run(MODULES[name])[0] for name in DOCTEST_MODULES}
    total = sum(attempted.values())
    assert total >= FLOOR > 0, f"only {total} doctest examples ran: {attempted}"
