"""Learned registration models (Dual-PRNet and its ablations), one file per model."""
