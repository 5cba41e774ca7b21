"""The models of ``sparqforge export --model`` and its calibration inputs (``--calib``).

``--model`` is a built-in digits model (``mlp``, ``cnn``) or the user's own PyTorch model in
one of three forms, told apart by the name:

``FILE.py:FUNCTION``
    The file is imported as a module from its path (its folder first on ``sys.path`` while
    it is imported and the function runs, so it can import its neighbours; its
    ``if __name__ == "__main__":`` block does not run), and ``FUNCTION()`` is called with no
    arguments. It returns the model with its trained weights, in eval mode.
``FILE.pt`` (or ``.pth``)
    A whole model saved with ``torch.save(model, path)``, read with
    ``torch.load(path, weights_only=False)``: unpickling runs code from the file, so only
    load files you trust. The model's class must be importable (pickle stores a reference
    to it, not its code).
``FILE.pt2``
    A program saved with ``torch.export.save(torch.export.export(model.eval(), (x,)), path)``.
    Its graph was fixed when it was exported, so it has no training mode of its own.

Every failure is a :class:`~sparqforge.errors.ConfigError` of one line that names the file
and the fix.
"""

__all__ = ["BUILTIN_MODELS", "ModelSpec", "parse_model", "load_model", "load_calib"]

import contextlib
import importlib.util
import inspect
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .inputs import _KINDS, _load_array

#: The built-in digits models (``sparqforge.sw.digits``).
BUILTIN_MODELS = ("mlp", "cnn")

_FORMS = ("PATH.py:FUNCTION (a function that returns the model), PATH.pt (a model saved with "
          "torch.save(model, path)) or PATH.pt2 (a program saved with torch.export.save)")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model``: ``kind`` is ``"builtin"``, ``"function"``, ``"pickle"`` or
    ``"program"``; ``path`` the file (``None`` for a built-in model), ``name`` the built-in
    model or the function."""
    text: str
    kind: str
    path: Path = None
    name: str = None


def _first_line(exc):
    text = str(exc).strip()
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    line = line if len(line) <= 200 else line[:197] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _existing(path, text):
    if not path.exists():
        raise ConfigError(f"--model {text}: {path} does not exist; give {_FORMS}")
    if not path.is_file():
        raise ConfigError(f"--model {text}: {path} is not a file; give {_FORMS}")
    return path


def parse_model(text):
    """The :class:`ModelSpec` of ``--model text``; the file must exist.

    Raises
    ------
    ConfigError
        For a name that is neither a built-in model nor one of the three file forms, a
        missing file, or a Python file without a function name.
    """
    if text in BUILTIN_MODELS:
        return ModelSpec(text, "builtin", name=text)
    path_text, colon, function = text.rpartition(":")
    if colon and path_text.endswith(".py"):
        if not function.isidentifier():
            raise ConfigError(f"--model {text}: {function!r} is not a function name; give "
                              f"PATH.py:FUNCTION, for example {path_text}:make_model")
        return ModelSpec(text, "function", _existing(Path(path_text), text), function)
    if text.endswith(".py"):
        raise ConfigError(f"--model {text}: name the function that returns the model, "
                          f"{text}:FUNCTION (for example {text}:make_model)")
    if text.endswith(".pt2"):
        return ModelSpec(text, "program", _existing(Path(text), text))
    if text.endswith((".pt", ".pth")):
        return ModelSpec(text, "pickle", _existing(Path(text), text))
    raise ConfigError(f"--model {text}: invalid choice: {text!r} is neither a built-in model "
                      f"({', '.join(BUILTIN_MODELS)}) nor a model file; give {_FORMS}")


@contextlib.contextmanager
def _folder_on_path(folder):
    folder = str(folder)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def _call_function(spec):
    """Import ``spec.path`` and call ``spec.name()``."""
    path, text = spec.path.resolve(), spec.text
    module_name = "_sparqforge_user_" + re.sub(r"\W", "_", path.stem)
    with _folder_on_path(path.parent):
        try:
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        except SystemExit:
            sys.modules.pop(module_name, None)
            raise ConfigError(f"--model {text}: importing {spec.path} called sys.exit(); put "
                              f"the script's own work under if __name__ == '__main__':") from None
        except Exception as exc:  # whatever the user's file raises
            sys.modules.pop(module_name, None)
            raise ConfigError(f"--model {text}: importing {spec.path} raised {_first_line(exc)};"
                              f" run python {spec.path} to see where") from None
        function = getattr(module, spec.name, None)
        if function is None:
            defined = sorted(name for name, value in vars(module).items()
                             if inspect.isfunction(value) and not name.startswith("_")
                             and value.__module__ == module_name)
            listed = f"its functions are {', '.join(defined)}" if defined else "it defines none"
            raise ConfigError(f"--model {text}: {spec.path} has no function {spec.name!r} "
                              f"({listed}); give PATH.py:FUNCTION")
        if not callable(function):
            raise ConfigError(f"--model {text}: {spec.name} in {spec.path} is a value of "
                              f"type {type(function).__name__}, not a function; give "
                              f"PATH.py:FUNCTION")
        try:
            inspect.signature(function).bind()
        except TypeError:
            raise ConfigError(f"--model {text}: {spec.name}{inspect.signature(function)} "
                              f"needs arguments, but it is called with none; give a function "
                              f"that takes no arguments (or only ones with defaults)") from None
        except ValueError:  # no signature (a builtin): just call it
            pass
        try:
            return function()
        except SystemExit:
            raise ConfigError(f"--model {text}: {spec.name}() called sys.exit(); return the "
                              f"model instead") from None
        except Exception as exc:  # whatever the user's function raises
            raise ConfigError(f"--model {text}: {spec.name}() raised {_first_line(exc)}; run "
                              f"it in Python to see where") from None


def _unpickle(spec):
    import torch

    # The model's class is found as Python would find it for a script in the working folder
    # or beside the file: both are searched first while the model loads.
    folders = [str(Path(spec.path).resolve().parent), os.getcwd()]
    added = [folder for folder in folders if folder not in sys.path]
    sys.path[:0] = added
    try:
        return torch.load(spec.path, map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError) as exc:
        raise ConfigError(f"--model {spec.text}: cannot load the model's class "
                          f"({_first_line(exc)}); torch.save stores a reference to the class, "
                          f"not its code, so the class must be importable here (from the "
                          f"working folder, the file's folder or PYTHONPATH), or give "
                          f"PATH.py:FUNCTION") from None
    except Exception as exc:  # torch and pickle raise many types on a foreign file
        raise ConfigError(f"--model {spec.text}: not a model saved with torch.save(model, "
                          f"path) ({_first_line(exc)}); a .pt2 file is for "
                          f"torch.export.save") from None
    finally:
        for folder in added:
            sys.path.remove(folder)


@contextlib.contextmanager
def _torch_log_quiet():
    """torch.export logs a traceback of a failed load before raising; the error says it."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _program(spec):
    import torch

    try:
        with _torch_log_quiet():
            program = torch.export.load(spec.path)
    except Exception as exc:  # whatever torch.export raises on a foreign file
        raise ConfigError(f"--model {spec.text}: not a program saved with torch.export.save "
                          f"({_first_line(exc)}); a whole model saved with torch.save is a "
                          f".pt file") from None
    return program


def _checked(value, spec):
    """What the user's file gave, if :func:`sparqforge.compile` takes it: a module in eval
    mode, or an exported program (whose graph was fixed at export: a training-mode graph is
    refused by the capture, which sees its operators)."""
    import torch
    from torch import nn

    if isinstance(value, torch.export.ExportedProgram):
        return value
    if isinstance(value, dict):
        raise ConfigError(f"--model {spec.text} gave a dict (a state_dict?), not a model; save "
                          f"the whole model (torch.save(model, path)), or give "
                          f"PATH.py:FUNCTION that builds the model and loads the state dict")
    if not isinstance(value, nn.Module):
        raise ConfigError(f"--model {spec.text} gave a value of type {type(value).__name__}, "
                          f"not a torch.nn.Module; give the model itself, with its trained "
                          f"weights")
    training = [(name, sub) for name, sub in value.named_modules() if sub.training]
    if training:
        name, sub = training[0]
        who = f"{name!r} ({type(sub).__name__})" if name else type(sub).__name__
        fix = ("call model.eval() before torch.save" if spec.kind == "pickle"
               else f"return model.eval() from {spec.name}()")
        raise ConfigError(f"--model {spec.text} gave a model in training mode ({who} has "
                          f"training=True); {fix}: sparqforge compiles inference")
    return value


def load_model(spec):
    """The user's model for a :class:`ModelSpec` of kind ``function``, ``pickle`` or
    ``program``: an ``nn.Module`` in eval mode or a ``torch.export.ExportedProgram``.

    Raises
    ------
    ConfigError
        When the file cannot be imported or read, the function is missing, needs arguments
        or raises, or the result is not a model in eval mode.
    """
    loaders = {"function": _call_function, "pickle": _unpickle, "program": _program}
    return _checked(loaders[spec.kind](spec), spec)


def load_calib(path):
    """The calibration inputs of ``--calib path``: a float32 tensor ``[N, ...]``, ``N >= 1``.

    Raises
    ------
    ConfigError
        Naming the file: unreadable, not one array, not real numbers, fewer than two axes,
        empty, or not finite.
    """
    import numpy as np
    import torch

    x = _load_array(path, "--calib")
    if x.dtype.kind not in "iuf":
        raise ConfigError(f"--calib {path} holds {_KINDS.get(x.dtype.kind, x.dtype)} values "
                          f"({x.dtype}); give real numbers, for example x.astype(np.float32)")
    if x.ndim < 2 or x.shape[0] == 0 or x.size == 0:
        raise ConfigError(f"--calib {path} has shape {x.shape}; give model inputs [N, ...] with "
                          f"one item per row (N >= 1), as the model takes them in a batch")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ConfigError(f"--calib {path} has {bad} NaN or infinite values; replace them "
                          f"with finite numbers")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
