"""Datasets: the registry of dataset specs, the scale rule, the protocol tables, the
prepared-dataset layout, the demo and the preparers."""
