"""Schedule and cocotb bench of ``hw.power_mac_array.PowerMacArray``."""
