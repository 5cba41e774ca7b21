"""cocotb bench of ``hw.sparse_mac_array.SparseMacArray``."""
