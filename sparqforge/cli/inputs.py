"""The input files of ``sparqforge infer``: one ``.npy`` array of inputs, optionally one of
labels, checked against the bundle before any inference (never cast, truncated or compared
with a silent wrong result)."""

__all__ = ["check_input_options", "load_inputs"]

import math

from ..errors import ConfigError


#: NumPy dtype kinds, as an error message names them.
_KINDS = {"b": "boolean", "c": "complex", "O": "object", "U": "string", "S": "bytes",
          "V": "structured", "M": "datetime", "m": "timedelta", "f": "floating-point",
          "i": "integer", "u": "unsigned integer"}


def _load_array(path, option):
    """The one array in the ``.npy`` file ``path`` (given as ``option``)."""
    import numpy as np

    try:
        value = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"{option} {path} does not exist; give a .npy file written by "
                          f"numpy.save") from None
    except Exception as exc:  # NumPy raises several types on a file that is not .npy
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror
                  else str(exc) or type(exc).__name__)
        raise ConfigError(f"{option} {path} is not a readable .npy array ({reason}); save "
                          f"one numeric array with numpy.save") from None
    if not isinstance(value, np.ndarray):
        value.close()
        raise ConfigError(f"{option} {path} is an .npz archive, not one array; save the array "
                          f"alone with numpy.save")
    return value


def _squeezed(shape):
    return tuple(n for n in shape if n != 1)


def _check_inputs(x, path, bundle):
    import numpy as np

    shape = tuple(int(n) for n in bundle.input["shape"])
    per_item = math.prod(shape)
    if x.dtype.kind not in "iuf":
        raise ConfigError(f"--inputs {path} holds {_KINDS.get(x.dtype.kind, x.dtype)} values "
                          f"({x.dtype}); give real numbers, for example x.astype(np.float32)")
    if x.size == 0:
        raise ConfigError(f"--inputs {path} is empty (shape {x.shape}); give at least one "
                          f"item of shape {shape}")
    if x.shape == shape:
        x = x[None]
    # One item per row, flat or in the model's layout (size-1 axes aside: (N, 8, 8) for
    # items of shape (1, 8, 8)); never reshaped across items or from another layout.
    fits = ((x.ndim == 2 and x.shape[1] == per_item)
            or _squeezed(x.shape[1:]) == _squeezed(shape))
    if x.ndim < 2 or not fits:
        alternatives = f"(N, {per_item})" + (f" or (N, {', '.join(map(str, shape))})"
                                             if len(shape) > 1 else "")
        raise ConfigError(f"--inputs {path} has shape {x.shape}, not one item of {per_item} "
                          f"values per row; the model takes items of shape {shape}: give "
                          f"an array of shape {alternatives}")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ConfigError(f"--inputs {path} has {bad} NaN or infinite values; replace them "
                          f"with finite numbers")
    return x


def _check_labels(y, path, count, classes):
    if y.dtype.kind not in "iu":
        raise ConfigError(f"--labels {path} holds {_KINDS.get(y.dtype.kind, y.dtype)} values "
                          f"({y.dtype}); labels are integer class indices: save them with "
                          f"y.astype(np.int64)")
    if y.shape != (count,):
        raise ConfigError(f"--labels {path} has shape {y.shape}; give one label per input, "
                          f"an array of shape ({count},)")
    if y.min() < 0 or y.max() >= classes:
        raise ConfigError(f"--labels {path} has values outside 0..{classes - 1}, the model's "
                          f"{classes} classes; give class indices")
    return y


def check_input_options(args):
    """Check ``infer``'s ``--digits``, ``--inputs`` and ``--labels`` go together, before
    anything is read.

    Raises
    ------
    ConfigError
    """
    if args.digits and (args.inputs is not None or args.labels is not None):
        raise ConfigError("--digits takes the digits test split as inputs and labels; give "
                          "either --digits or --inputs (and --labels)")
    if not args.digits and args.inputs is None:
        raise ConfigError("Give --inputs FILE.npy (float inputs) or --digits")


def load_inputs(args, bundle):
    """``(x, y)``: the inputs (one item per row, finite real numbers that fit ``bundle``'s
    input shape) and the labels (``None``, or one integer class index per input).

    Raises
    ------
    ConfigError
        Naming the file and the fix: unreadable, not one array, empty, not real numbers,
        not finite, of the wrong shape; labels that are not integers in the model's classes
        or not one per input.
    """
    if args.digits:
        from ..sw import digits
        _, _, x, y = digits.load_digits()
        return x.numpy(), y.numpy()
    x = _check_inputs(_load_array(args.inputs, "--inputs"), args.inputs, bundle)
    y = None
    if args.labels is not None:
        y = _check_labels(_load_array(args.labels, "--labels"), args.labels, len(x),
                          int(bundle.output["classes"]))
    return x, y
