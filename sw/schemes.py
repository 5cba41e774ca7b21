"""The quantization schemes of the built-in example, by name (no PyTorch needed to list them:
the command line offers them as choices)."""

__all__ = ["SCHEMES"]

#: The three quantizations of the main job (``sparqforge demo``).
SCHEMES = {
    "uniform-w8a8": "uniform 8-bit weights and activations (gemmlowp requantization)",
    "power-w4": "power-exponent 4-bit weights, 4-bit power-domain hidden activations "
                "(operand tables and threshold units)",
    "sparse24-w4": "2:4-pruned (SR-STE fine-tuned) uniform 4-bit weights, 8-bit activations, "
                   "run in N:M sparse mode",
}
