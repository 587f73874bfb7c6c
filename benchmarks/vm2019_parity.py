"""Parity of the suite's ``voxelmorph`` with the authors' 2019 Keras VoxelMorph (vm2).

    git --git-dir=VOXELMORPH_MIRROR show 7ef219c:src/networks.py > networks_2019.py
    python benchmarks/vm2019_parity.py networks_2019.py [--out tests/data/vm2019_parity.npz]

Reads the authors' ``src/networks.py`` (voxelmorph repository, 2019, before the 2020
restructuring; a local copy, never downloaded or committed here), builds their ``cvpr2018_net``
with TensorFlow (``tf_keras``, Keras 2 as their code expects) and the suite's
:class:`~regbench.baselines.voxelmorph.VoxelMorph2019Network` with PyTorch, gives both the same
weights, registers one demo pair and prints the largest difference of the two displacement
fields, in voxels. With ``--out``, writes the reference the CI test checks the PyTorch network
against without TensorFlow or the authors' file (``tests/test_baselines.py``): the pair, the
weight seed and the Keras field.

The pair: demo subjects demo05 -> demo06 (``make_demo``, scale 0.25, seed 0), centre-cropped
from 40x48x40 to 32x48x32 and rounded to float16 (both networks get the same rounded values).
The weights: :func:`seeded_weights`, NumPy's legacy ``RandomState`` (its streams are fixed across
NumPy versions), the flow layer scaled up for a field of a few voxels.

The authors' module imports ``neuron`` (their ``ext/`` copy) and ``losses`` at the top;
``cvpr2018_net`` needs only ``neuron.layers.SpatialTransformer``, which warps the moving image
and leaves the flow as it is (and the file subclasses ``neuron.layers.Resize`` for another
network). Stand-ins of these modules let the file import; the stand-in transformer returns the
moving image (the suite warps with its own, tested code).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

SHAPE = (32, 48, 32)
"""The pair's grid: the 40x48x40 demo at scale 0.25, centre-cropped to multiples of 16."""
PAIR = ("demo05", "demo06")
SEED = 0
FLOW_STD = 0.25
"""Standard deviation of the flow layer's seeded kernel (the authors' 1e-5 gives ~1e-4 voxel)."""


def seeded_weights(shapes: list[tuple[int, ...]], seed: int = SEED) -> list[np.ndarray]:
    """Weights for a network's parameters in PyTorch layout, in order: convolution kernels
    ``(out, in, 3, 3, 3)`` from N(0, 2 / fan_in), the last (the flow) from N(0, FLOW_STD**2),
    biases from N(0, 0.01).

    Args:
        shapes: the parameters' shapes, kernels and biases alternating as a network lists them.
        seed: seed of NumPy's legacy ``RandomState``.

    Returns:
        float32 arrays of those shapes.
    """
    state = np.random.RandomState(seed)
    last_kernel = max(i for i, shape in enumerate(shapes) if len(shape) == 5)
    weights = []
    for index, shape in enumerate(shapes):
        if len(shape) == 5:
            std = FLOW_STD if index == last_kernel else np.sqrt(2 / np.prod(shape[1:]))
        else:
            std = 0.1
        weights.append((std * state.standard_normal(shape)).astype(np.float32))
    return weights


def demo_pair() -> tuple[np.ndarray, np.ndarray]:
    """The moving and fixed demo images (float16), centre-cropped to :data:`SHAPE`."""
    from regbench.data.dataset import Dataset
    from regbench.data.demo import make_demo

    with tempfile.TemporaryDirectory() as folder:
        dataset = Dataset.load(make_demo(Path(folder) / "demo", subjects=6, scale=0.25, seed=0))
        images = [dataset.image(subject) for subject in PAIR]
    crop = tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(images[0].shape, SHAPE,
                                                                         strict=True))
    moving, fixed = (image[crop].astype(np.float16) for image in images)
    return moving, fixed


def torch_field(moving: np.ndarray, fixed: np.ndarray, seed: int = SEED) -> np.ndarray:
    """The field ``(3, *S)`` of the suite's 2019 network with :func:`seeded_weights`."""
    import torch

    from regbench.baselines.voxelmorph import VoxelMorph2019Network

    network = VoxelMorph2019Network().eval()
    weights = seeded_weights([tuple(p.shape) for p in network.parameters()], seed)
    with torch.no_grad():
        for parameter, value in zip(network.parameters(), weights, strict=True):
            parameter.copy_(torch.from_numpy(value))
        pair = [torch.from_numpy(v.astype(np.float32))[None, None] for v in (moving, fixed)]
        return network(*pair)["field"][0].numpy()


def authors_module(networks_py: Path) -> types.ModuleType:
    """The authors' ``networks.py`` imported with ``tf_keras`` as ``keras`` and stand-ins of
    ``neuron`` and ``losses`` (module docstring)."""
    os.environ.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    if not hasattr(inspect, "getargspec"):  # Python >= 3.11
        inspect.getargspec = lambda func: inspect.getfullargspec(func)[:4]
    import tf_keras

    class SpatialTransformer(tf_keras.layers.Layer):
        """Stand-in: returns the moving image; the flow is compared, not the warp."""

        def __init__(self, interp_method: str = "linear", indexing: str = "ij", **kwargs) -> None:
            super().__init__(**kwargs)

        def call(self, inputs):
            return inputs[0]

    modules = {"keras": tf_keras, "keras.backend": tf_keras.backend,
               "keras.models": tf_keras.models, "keras.layers": tf_keras.layers,
               "keras.initializers": tf_keras.initializers}
    for name in ("neuron", "neuron.layers", "neuron.models", "neuron.utils", "losses"):
        modules[name] = types.ModuleType(name)
    modules["neuron.layers"].SpatialTransformer = SpatialTransformer
    modules["neuron.layers"].Resize = tf_keras.layers.Layer  # a base class of theirs, unused here
    sys.modules.update(modules)
    spec = importlib.util.spec_from_file_location("authors_networks", networks_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keras_field(networks_py: Path, moving: np.ndarray, fixed: np.ndarray,
                seed: int = SEED) -> tuple[np.ndarray, int]:
    """The field ``(3, *S)`` of the authors' ``cvpr2018_net`` (vm2) with :func:`seeded_weights`,
    and the Keras model's parameter count."""
    from regbench.baselines.voxelmorph import VM2_FEATURES

    networks = authors_module(networks_py)
    model = networks.cvpr2018_net(moving.shape, *VM2_FEATURES)
    # The weights' order is the layers' creation order, as in the PyTorch module; PyTorch
    # kernels (out, in, x, y, z) -> Keras (x, y, z, in, out).
    weights = seeded_weights([(w.shape[4], w.shape[3], *w.shape[:3]) if w.ndim == 5 else w.shape
                              for w in model.get_weights()], seed)
    model.set_weights([w.transpose(2, 3, 4, 1, 0) if w.ndim == 5 else w for w in weights])
    inputs = [v.astype(np.float32)[None, ..., None] for v in (moving, fixed)]
    _, flow = model.predict(inputs, verbose=0)
    return np.moveaxis(flow[0], -1, 0), int(model.count_params())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("networks_py", type=Path,
                        help="the authors' src/networks.py of 2019 (a local copy)")
    parser.add_argument("--out", type=Path, help="write the CI reference (.npz) here")
    args = parser.parse_args(argv)
    if not args.networks_py.is_file():
        parser.error(f"{args.networks_py}: no such file (the authors' src/networks.py)")
    moving, fixed = demo_pair()
    ours = torch_field(moving, fixed)
    theirs, parameters = keras_field(args.networks_py, moving, fixed)
    difference = float(np.abs(ours - theirs).max())
    print(f"pair {PAIR[0]} -> {PAIR[1]} at {'x'.join(map(str, SHAPE))}, seed {SEED}: Keras "
          f"parameters {parameters}, largest |field| {np.abs(theirs).max():.3f} voxel, largest "
          f"difference PyTorch - Keras {difference:.2e} voxel")
    if args.out:
        np.savez_compressed(args.out, moving=moving, fixed=fixed, seed=SEED, field=theirs,
                            parameters=parameters, difference=difference)
    return 0 if difference < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
