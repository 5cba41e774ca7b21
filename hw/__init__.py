"""Amaranth generators of sparqforge's hardware blocks."""
