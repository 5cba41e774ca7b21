"""sparqforge: FPGA generator for low-bit, N:M-sparse and power-exponent quantized inference."""

__version__ = "0.1.0"
