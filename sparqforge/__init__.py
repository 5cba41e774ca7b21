"""sparqforge: FPGA generator for low-bit, N:M-sparse and power-exponent quantized inference.

``sparqforge.compile(model, example_input, ...)`` (:func:`sparqforge.api.compile`) turns a
PyTorch model into a bundle; it is imported on first use, so ``import sparqforge`` does not
import PyTorch.
"""

__version__ = "0.1.0"
__all__ = ["compile"]


def __getattr__(name):
    if name == "compile":
        from .api import compile
        return compile
    raise AttributeError(f"module 'sparqforge' has no attribute {name!r}")
