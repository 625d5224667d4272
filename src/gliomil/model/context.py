"""2.5D input (``train.model.context_slices``): each axial slice seen together with its neighbours.

A bag's slices are stored in axial order (:mod:`gliomil.data.preprocess`), so slice ``i``'s neighbours are
``i - k .. i + k``. Stacking them as channels lets a 2D encoder see a lesion's extent across slices (a necrotic
core that a rim encloses above and below) at the cost of its first convolution only.
"""

from __future__ import annotations

import numpy as np


def neighbour_indices(centres: np.ndarray, n_slices: int, context: int) -> np.ndarray:
    """Indices (n, 2 * context + 1) of each centre slice's neighbours within a bag of ``n_slices``, from ``context``
    slices below to ``context`` above, the centre in the middle; past either end of the bag the end slice repeats.

    ``bag[neighbour_indices(c, len(bag), k).ravel()].reshape(len(c), -1, H, W)`` stacks them as channels,
    neighbour by neighbour: (n, (2k + 1) x channels, H, W).
    """
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    offsets = np.arange(-context, context + 1)
    return np.clip(np.asarray(centres, dtype=np.int64)[:, None] + offsets, 0, n_slices - 1)
