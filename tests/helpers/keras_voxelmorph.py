"""Run the Keras/TensorFlow model of VoxelMorph release 0.2 (`voxelmorph-0.2`) on given weights.

    python keras_voxelmorph.py IN.npz OUT.npy

IN.npz holds ``shape`` (the input's spatial shape), ``encoder`` and ``decoder`` (U-Net widths),
``moving`` and ``fixed`` (``(X, Y, Z)`` each) and ``weight_0 .. weight_{n-1}``, the network's
weights in the order and layout of the Keras model's ``weights``. Writes the displacement field
``(X, Y, Z, 3)`` that ``VxmDense.register`` predicts. Run in a process of its own: the backend is
chosen at import time, and the suite's process holds voxelmorph with its PyTorch backend.
"""

import inspect
import os
import sys

os.environ.update(VXM_BACKEND="tensorflow", NEURITE_BACKEND="tensorflow",
                  TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
if not hasattr(inspect, "getargspec"):  # neurite 0.2 predates Python 3.11
    inspect.getargspec = lambda func: inspect.getfullargspec(func)[:4]

import numpy as np  # noqa: E402
import voxelmorph  # noqa: E402


def main(source: str, target: str) -> None:
    data = np.load(source)
    network = voxelmorph.networks.VxmDense(
        tuple(int(s) for s in data["shape"]),
        nb_unet_features=[data["encoder"].tolist(), data["decoder"].tolist()], int_steps=0)
    weights = [data[f"weight_{i}"] for i in range(len(network.weights))]
    network.set_weights(weights)
    field = network.register(data["moving"][None, ..., None], data["fixed"][None, ..., None])
    np.save(target, field[0])


if __name__ == "__main__":
    main(*sys.argv[1:])
