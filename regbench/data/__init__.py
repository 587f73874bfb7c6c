"""Datasets: the protocol tables, the prepared-dataset layout, the demo and the preparers."""
