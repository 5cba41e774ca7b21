"""Stimulus, schedule and cocotb bench of ``hw.mac_array.MacArray``."""
