"""Stimulus and cocotb bench of ``hw.packed_multiplier.PackedMultiplier``."""
