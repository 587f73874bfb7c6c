"""Regbench: benchmark and reproduction suite for deep 3D brain-MRI registration."""
__version__ = "0.1.0"
