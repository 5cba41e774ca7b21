"""Host runtime: run an exported bundle on the golden model, in Verilator, or on a board."""
