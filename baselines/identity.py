"""Identity: no registration. The moving image and labels are scored as they are.

The "initial" row of Learn2Reg and TransMorph: what every method starts from, so a table shows
how much each one adds.
"""

from __future__ import annotations

import numpy as np

from regbench.methods import Method


class Identity(Method):
    """The zero displacement field."""

    name = "identity"
    label = "Identity"

    def register(self, moving: np.ndarray, fixed: np.ndarray,
                 spacing: tuple[float, float, float]) -> np.ndarray:
        return np.zeros((3, *fixed.shape), dtype=np.float32)
