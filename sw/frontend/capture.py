"""Capture a user's own PyTorch model into a sparqforge :class:`~.graph.Graph`.

:func:`capture` traces the model with ``torch.export.export(model, (example,))`` (the
non-strict tracer of PyTorch 2.x: it runs ``forward`` in Python on fake tensors and records
every ATen operator, without decomposing ``conv2d``, ``linear`` or ``batch_norm``). When the
program has in-place operators (``ReLU(inplace=True)`` is ``relu_``, ``out += x`` is
``add_``), ``run_decompositions({})`` functionalizes it first, still without decomposing
anything (it is the slow step, so it runs only when needed). Then the ATen graph is
translated operator by operator (:mod:`.operators`) and :func:`~.passes.simplify` folds
BatchNorm, fuses activations and removes identities, unless ``simplify=False``. A program
the user exported already (``torch.export.export``, ``torch.export.load``) is translated as
it is.

What is captured is the function the model computes in eval mode on one item: shapes are
per item (no batch axis), parameters are float64 NumPy copies. Anything the graph cannot
express is refused with one line that names the operation (its name in the graph, built from
the module path), its ATen operator and the user's source line, and says what sparqforge
supports: an :class:`~sparqforge.errors.UnsupportedLayerError`. A node's name is the path of
the leaf module that computed it (``layer1.0.conv1``), or the enclosing module's path and the
operator for functional code (``layer1.0.add``), made unique by ``_1``, ``_2``, ... (a module
called twice).

**The batch axis.** The example may hold any number ``B`` of items. Every tensor the model
computes must be ``[B, features]`` or ``[B, C, H, W]`` with the same ``B`` first: no operation
may reduce, mix, index or drop the batch axis. A reshape may bake ``B`` in
(``x.view(1, -1)`` for an example of one item, ``x.view(x.size(0), -1)``): only its per-item
result counts. ``x.squeeze()`` on ``[1, C, 1, 1]`` drops the batch axis and is refused; use
``x.flatten(1)``.

**Training mode is refused, not fixed.** A model in training mode computes another function
(BatchNorm normalises with the batch's statistics, dropout is random), so capturing it as it
is would be wrong, and silently capturing ``copy.deepcopy(model).eval()`` instead would
capture something other than what ``model(x)`` returns right now, hide a forgotten
``model.eval()`` from the user's own evaluation code, and deep-copy every parameter (slow for
a large model, impossible for some modules). The refusal costs the user one call and says
which. A model's own ``F.dropout(x, p)`` (which defaults to ``training=True`` whatever the
module's mode) is refused the same way.
"""

__all__ = ["capture", "SUPPORTED"]

import contextlib
import inspect
import io
import logging
import os
import re
import sys
import sysconfig
import traceback
import warnings

import torch
from torch import nn
from torch.export.graph_signature import InputKind, OutputKind

from ...errors import UnsupportedLayerError
from .graph import Graph, Node
from .operators import HANDLERS, SUPPORTED, Const, Value, short_name
from .passes import simplify as _simplify

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB = tuple({os.path.realpath(sysconfig.get_paths()[key]) + os.sep
                 for key in ("stdlib", "platstdlib")})
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _user_frame(frames):
    """``file.py:line`` of the innermost of ``frames`` (``(filename, line)``, outermost first)
    that is neither PyTorch, the Python standard library nor this package; ``""`` if none."""
    for filename, line in reversed(list(frames)):
        real = os.path.realpath(filename)
        if filename.startswith(("<", _TORCH_DIR)) or real.startswith((_TORCH_DIR, *_STDLIB,
                                                                        _HERE)):
            continue
        return f"{os.path.basename(filename)}:{line}"
    return ""


def _forward_source(model):
    """``file.py:line`` of the model's ``forward`` definition, for messages about it."""
    try:
        forward = type(model).forward
        return f"{os.path.basename(inspect.getsourcefile(forward))}:" \
               f"{inspect.getsourcelines(forward)[1]}"
    except (OSError, TypeError):
        return ""


def _check_call(model, example_input):
    if not isinstance(model, nn.Module):
        raise TypeError(f"capture() needs a torch.nn.Module, not {type(model).__name__}")
    where = f"{type(model).__name__}.forward"
    if not isinstance(example_input, torch.Tensor):
        raise UnsupportedLayerError(
            f"capture() got {type(example_input).__name__} as the example input of {where}; "
            f"sparqforge models take exactly one tensor: pass one tensor of shape "
            f"[B, features] or [B, C, H, W]")
    try:
        inspect.signature(model.forward).bind(example_input)
    except TypeError as error:
        raise UnsupportedLayerError(
            f"{where}{inspect.signature(model.forward)} cannot be called with one tensor "
            f"({error}); sparqforge models take exactly one input tensor") from None
    if not example_input.is_floating_point():
        raise UnsupportedLayerError(
            f"The example input of {where} is a {example_input.dtype} tensor; sparqforge "
            f"models take a floating-point tensor")
    if example_input.dim() not in (2, 4) or example_input.shape[0] < 1:
        raise UnsupportedLayerError(
            f"The example input of {where} has shape {list(example_input.shape)}; sparqforge "
            f"models take one tensor of shape [B, features] or [B, C, H, W]")
    training = [(name, module) for name, module in model.named_modules() if module.training]
    if training:
        name, module = training[0]
        who = f"{name!r} ({type(module).__name__})" if name else type(module).__name__
        raise UnsupportedLayerError(
            f"The model is in training mode ({who} has training=True); call model.eval() "
            f"before capture: sparqforge captures inference, with BatchNorm's running "
            f"statistics and without dropout")


def _program(program, example_input):
    """An exported program (functionalized if it has in-place operators) and the batch size
    it was traced with, checked against the example input."""
    inputs = [spec for spec in program.graph_signature.input_specs
              if spec.kind == InputKind.USER_INPUT]
    if len(inputs) != 1:
        raise UnsupportedLayerError(f"The exported program takes {len(inputs)} inputs; "
                                    f"sparqforge models take exactly one input tensor")
    traced = next(fx.meta["val"] for fx in program.graph.nodes
                  if fx.op == "placeholder" and fx.name == inputs[0].arg.name)
    shape = [int(d) for d in traced.shape]
    if (not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point()
            or list(example_input.shape[1:]) != shape[1:]):
        what = (f"a {example_input.dtype} tensor of shape {list(example_input.shape)}"
                if isinstance(example_input, torch.Tensor) else type(example_input).__name__)
        raise UnsupportedLayerError(
            f"The example input is {what}, but the exported program takes a floating-point "
            f"tensor [B, {', '.join(str(d) for d in shape[1:])}]: pass one like it")
    if any(_mutates(fx.target) for fx in program.graph.nodes if fx.op == "call_function"):
        with _quiet_torch():
            program = program.run_decompositions({})
    return program, shape[0]


@contextlib.contextmanager
def _quiet_torch():
    """Keep what torch.export prints about a failed trace (the partial graph) off stderr,
    since the refusal says it, and pass it on after a successful trace; torch's log is
    silenced below CRITICAL during the trace either way."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(printed):
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*[Tt]ree[Ss]pec")
            # Refused with a better message after the trace.
            warnings.filterwarnings("ignore", category=UserWarning,
                                    message="Using padding='same' with even kernel")
            yield
        sys.stderr.write(printed.getvalue())
    finally:
        logger.setLevel(level)


def _mutates(target):
    """Whether an operator writes to an argument (``relu_``, ``add_``: in-place)."""
    schema = getattr(target, "_schema", None)
    return schema is not None and any(argument.alias_info is not None
                                      and argument.alias_info.is_write
                                      for argument in schema.arguments)


def _export(model, example_input):
    """``torch.export`` the model; functionalize it if it has in-place operators (the only
    thing that makes an exported program depend on the order of its nodes beyond their data
    dependencies); refuse what torch.export cannot trace."""
    try:
        with _quiet_torch():
            program = torch.export.export(model, (example_input,))
            if any(_mutates(fx.target) for fx in program.graph.nodes
                   if fx.op == "call_function"):
                program = program.run_decompositions({})
            return program
    except Exception as error:                             # any tracer error is refused
        frames = [(f.filename, f.lineno) for f in traceback.extract_tb(error.__traceback__)]
        where = _user_frame(frames) or _forward_source(model)
        where = f" at {where}" if where else ""
        first = next((line.strip() for line in str(error).splitlines() if line.strip()),
                     type(error).__name__)
        first = first if len(first) <= 160 else first[:157] + "..."
        if ("data-dependent" in str(error) or "data dependent" in str(error)
                or type(error).__name__.startswith("GuardOnDataDependent")):
            fix = ("forward() branches on or indexes with tensor values (data-dependent control "
                   "flow); sparqforge captures one fixed graph: compute both branches and "
                   "select with torch.where, or move the decision out of the model")
        else:
            fix = ("make forward() traceable by torch.export.export(model.eval(), (x,)) "
                   "(see its error)")
        raise UnsupportedLayerError(f"torch.export cannot trace {type(model).__name__}"
                                    f"{where} ({type(error).__name__}: {first}); {fix}") \
            from error


def capture(model, example_input, *, simplify=True):
    """Capture ``model`` as a sparqforge :class:`~.graph.Graph`.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
        In eval mode, with one input tensor and one output tensor; traceable by
        ``torch.export.export(model, (example_input,))``. Or such a program itself (from
        ``torch.export.export`` or ``torch.export.load``), translated as it is.
    example_input : torch.Tensor
        ``[B, features]`` or ``[B, C, H, W]``; fixes every shape in the graph (a program's
        shapes are its own: the example's item shape must be the program's).
    simplify : bool
        Run :func:`~.passes.simplify` (fold BatchNorm into its producer, fuse ReLU-like clamps
        into theirs, remove identities). ``False`` keeps one node per captured operator.

    Returns
    -------
    Graph
        Checked (:meth:`~.graph.Graph.check`); shapes per item, parameters float64.

    Raises
    ------
    UnsupportedLayerError
        For an operation the graph cannot express (one line: its name, ATen operator, source
        line and what sparqforge supports), a model torch.export cannot trace, a model in
        training mode, an input other than one tensor, an output other than one tensor, or a
        computation across the batch axis.
    TypeError
        If ``model`` is not an ``nn.Module`` or an ``ExportedProgram``.
    """
    if isinstance(model, torch.export.ExportedProgram):
        program, batch = _program(model, example_input)
        model = program.module()
    else:
        _check_call(model, example_input)
        program, batch = _export(model, example_input), int(example_input.shape[0])
    graph = _Capture(model, program, batch).run()
    graph.check()
    return _simplify(graph) if simplify else graph


def _structural(fx):
    """Operators that only pick, alias or copy another's result (never a module's output
    of their own)."""
    import operator

    from torch.ops import aten

    if fx.target is operator.getitem:
        return True
    packet = getattr(fx.target, "overloadpacket", None)
    return packet in (aten.clone, aten.alias, aten.detach, aten.contiguous,
                      aten.lift_fresh_copy, aten._to_copy, aten.to, aten.copy_, aten.copy)


class _Capture:
    """The translation of one exported program; the operator handlers call its helpers."""

    def __init__(self, model, program, batch):
        self.model = model
        self.program = program
        self.batch = batch
        self.graph = Graph()
        self.values = {}
        self._names = {"input", "output"}
        # The last operator each module ran: the one that makes its output, which takes the
        # module's path as its name (PyTorch may attribute a neighbour's operators to a
        # module too, as a Flatten's view to the next Linear after decompositions).
        self._last = {}
        for fx in program.graph.nodes:
            if fx.op == "call_function" and not _structural(fx):
                call = self.call(fx)
                if call:
                    self._last[call] = fx

    def run(self):
        specs = {spec.arg.name: spec for spec in self.program.graph_signature.input_specs}
        for fx in self.program.graph.nodes:
            if fx.op == "placeholder":
                self.values[fx] = self._placeholder(fx, specs[fx.name])
            elif fx.op == "output":
                self._output(fx)
            elif fx.op == "call_function":
                if not fx.users:
                    continue             # asserts and dead code: nothing reads them
                handler = HANDLERS.get(_packet(fx.target))
                if handler is None:
                    raise self.refuse(fx, f"is not supported; sparqforge supports {SUPPORTED}")
                self.values[fx] = handler(self, fx)
            else:
                raise self.refuse(fx, f"is not supported; sparqforge supports {SUPPORTED}")
        return self.graph

    # Where things come from, for names and messages.

    def module(self, fx):
        """``(path, type name)`` of the innermost module that ran ``fx``; ``("", "")`` at the
        top level."""
        stack = fx.meta.get("nn_module_stack") or {}
        if not stack:
            return "", ""
        path, kind = list(stack.values())[-1]
        kind = kind if isinstance(kind, str) else getattr(kind, "__qualname__", str(kind))
        return path, kind.rpartition(".")[2]

    @staticmethod
    def call(fx):
        """The innermost module call that ran ``fx`` (a module called twice has two)."""
        stack = fx.meta.get("nn_module_stack") or {}
        return list(stack)[-1] if stack else None

    def _is_leaf(self, path):
        try:
            return next(self.model.get_submodule(path).children(), None) is None
        except AttributeError:
            return True

    def base_name(self, fx, short=None):
        """A leaf module's path (``layer1.0.conv1``); otherwise the enclosing module's path
        and ``short`` or the operator (``layer1.0.add``), or that alone at the top level."""
        path, _ = self.module(fx)
        if path and self._is_leaf(path) and self._last.get(self.call(fx)) is fx:
            return path
        short = short or short_name(fx)
        return f"{path}.{short}" if path else short

    def _new_name(self, fx, short=None):
        base = name = self.base_name(fx, short)
        count = 0
        while name in self._names:
            count += 1
            name = f"{base}_{count}"
        self._names.add(name)
        return name

    def source(self, fx):
        """The user's ``file.py:line`` that produced ``fx``: the innermost frame of its stack
        trace outside PyTorch and the standard library; ``""`` if there is none (a module
        PyTorch's own code called, such as a layer of an ``nn.Sequential``). torch.export
        records only the frames of functions named ``forward``, so an operator in a helper
        function that ``forward`` calls is reported at the line of that call."""
        trace = fx.meta.get("stack_trace") or ""
        return _user_frame((name, int(line)) for name, line in _FRAME.findall(trace))

    def refuse(self, fx, problem):
        """The :class:`UnsupportedLayerError` for ``fx``: ``Operation 'name' (aten.op) at
        file.py:12 <problem>``, or ``in module 'path' (Type)`` without a source line."""
        source = self.source(fx)
        path, kind = self.module(fx)
        where = f" at {source}" if source else f" in module {path!r} ({kind})" if path else ""
        message = f"Operation {self.base_name(fx)!r} ({op_name(fx)}){where} {problem}"
        return UnsupportedLayerError(" ".join(message.split()))

    # Values.

    def item_shape(self, fx, reshape=False):
        """The per-item shape of ``fx``'s output; refuse one that is not ``[B, features]`` or
        ``[B, C, H, W]`` (any rank for a ``reshape``) with the example's batch size first."""
        value = fx.meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise self.refuse(fx, f"produces {type(value).__name__}, not a tensor; sparqforge "
                                  f"supports {SUPPORTED}")
        shape = tuple(int(d) for d in value.shape)
        if len(shape) < 2 or shape[0] != self.batch or (len(shape) not in (2, 4)
                                                         and not reshape):
            raise self.refuse(
                fx, f"produces a tensor of shape {list(shape)} from an example batch of "
                    f"{self.batch}; sparqforge supports tensors [B, features] and "
                    f"[B, C, H, W] whose first axis is the batch, which no operation may "
                    f"reduce, mix or drop (flatten with x.flatten(1) or "
                    f"x.view(x.size(0), -1))")
        return shape[1:]

    def value(self, fx, arg):
        """The :data:`Value` of argument ``arg`` of ``fx``: a tensor computed from the input."""
        found = self.values.get(arg) if isinstance(arg, torch.fx.Node) else None
        if isinstance(found, Value):
            return found
        if isinstance(found, Const):
            raise self.refuse(fx, f"reads the constant tensor {found.name!r} as data; sparqforge "
                                  f"supports operations on tensors computed from the input "
                                  f"(weights only as Linear, Conv2d and BatchNorm parameters)")
        raise self.refuse(fx, f"reads the constant {arg!r} as data; sparqforge supports "
                              f"operations on tensors computed from the input")

    def data(self, fx, arg):
        """Like :meth:`value`, refusing a tensor that only a reshape has (one that is not the
        shape of its graph node: the ``[B, C, 1, 1]`` of a global average pool with
        ``keepdim``, or ``[B, C, H * W]``)."""
        found = self.value(fx, arg)
        if found.shape != self.graph[found.node].shape:
            raise self.refuse(fx, f"reads {_reshaped(self.graph[found.node], found.shape)}; "
                                  f"sparqforge supports it only flattened to [B, features] "
                                  f"(x.flatten(1))")
        return found

    def const(self, fx, arg, role):
        """A float64 NumPy copy of a parameter, buffer or constant tensor argument."""
        found = self.values.get(arg) if isinstance(arg, torch.fx.Node) else None
        if isinstance(found, Const):
            return found.tensor.detach().to("cpu", torch.float64).numpy().copy()
        raise self.refuse(fx, f"computes its {role} in forward(); sparqforge supports "
                              f"{role}s stored in the model as parameters or buffers")

    def emit(self, fx, op, inputs, shape, short=None, **attrs):
        """Add a graph node for ``fx`` (named with ``short`` instead of the ATen operator's
        name, if given) and return its :data:`Value`."""
        node = self.graph.add(Node(self._new_name(fx, short), op, list(inputs), tuple(shape),
                                   attrs, self.source(fx)))
        return Value(node.name, node.shape)

    # Inputs and outputs.

    def _placeholder(self, fx, spec):
        if spec.kind == InputKind.USER_INPUT:
            shape = tuple(int(d) for d in fx.meta["val"].shape[1:])
            self.graph.add(Node("input", "input", [], shape, {}, _forward_source(self.model)))
            return Value("input", shape)
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            tensor = self.program.state_dict.get(spec.target)
            if tensor is None:
                tensor = self.program.constants[spec.target]
            return Const(spec.target, tensor)
        raise UnsupportedLayerError(
            f"{type(self.model).__name__} has a {spec.kind.name.lower()} input "
            f"{spec.target!r}; sparqforge supports models whose only input is one tensor")

    def _output(self, fx):
        model = type(self.model).__name__
        where = _forward_source(self.model)
        where = f" at {where}" if where else ""
        specs = self.program.graph_signature.output_specs
        for spec in specs:
            if spec.kind != OutputKind.USER_OUTPUT:
                raise UnsupportedLayerError(
                    f"{model}.forward{where} changes {spec.target!r} "
                    f"({spec.kind.name.lower()}); sparqforge captures models whose forward() "
                    f"only computes its output")
        out_spec = self.program.call_spec.out_spec
        results = fx.args[0]
        if not out_spec.is_leaf() or len(results) != 1:
            kind = out_spec.type.__name__ if out_spec.type is not None else "value"
            count = out_spec.num_leaves
            raise UnsupportedLayerError(
                f"{model}.forward{where} returns a {kind} of {count} "
                f"{'value' if count == 1 else 'values'}; "
                f"sparqforge captures models that return one tensor: return only the tensor "
                f"the accelerator should compute")
        result = results[0]
        found = self.values.get(result) if isinstance(result, torch.fx.Node) else None
        if not isinstance(found, Value):
            raise UnsupportedLayerError(
                f"{model}.forward{where} returns {getattr(result, 'name', result)!r}, which is "
                f"not computed from its input; sparqforge captures models that return one "
                f"tensor computed from the input")
        if found.shape != self.graph[found.node].shape:
            raise UnsupportedLayerError(
                f"{model}.forward{where} returns "
                f"{_reshaped(self.graph[found.node], found.shape)}; sparqforge supports it "
                f"only flattened: return x.flatten(1)")
        self.graph.add(Node("output", "output", [found.node], found.shape, {}, where[4:]))


def _packet(target):
    """The key of :data:`~.operators.HANDLERS`: an ATen operator's overload packet."""
    return getattr(target, "overloadpacket", target)


def op_name(fx):
    """``aten.conv2d`` for messages."""
    packet = _packet(fx.target)
    if isinstance(packet, torch._ops.OpOverloadPacket):
        return str(packet)
    return getattr(fx.target, "__name__", str(fx.target))


def _dims(shape):
    return "[B, " + ", ".join(str(d) for d in shape) + "]"


def _reshaped(node, shape):
    """``the [B, 8, 1, 1] result of the global average pool 'pool'`` or ``'conv' reshaped to
    [B, 8, 16]`` for messages."""
    if node.op == "global_avgpool":
        return f"the {_dims(shape)} result of the global average pool {node.name!r}"
    return f"{node.name!r} reshaped to {_dims(shape)}"

