"""A stand-in for an external registration tool: writes the identity transform of a pair.

    python identity_field.py FIXED_IMAGE FIELD_OUT RUNTIME_OUT --method NAME [--label TEXT]

It shows the two files an external method's rule must write per pair, which `regbench evaluate`
then scores like any other method:

- FIELD_OUT, ``field.nii.gz``: the displacement on the fixed image's grid in voxel units, pull
  convention (warped(x) = moving(x + u(x))), with the fixed image's affine, as a NIfTI vector
  image: shape (X, Y, Z, 1, 3), components on the fifth axis, intent ``vector`` (the suite also
  reads the plain (X, Y, Z, 3) that many tools write);
- RUNTIME_OUT, ``runtime.json``: {"method", "label", "time_s", "device", "options",
  "slice_step"} (the tool's own timing of the registration alone, and where it ran; ``label`` is
  how tables and figures name the method).

Only nibabel and numpy: a real external tool need not know regbench at all.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import nibabel as nib
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixed_image")
    parser.add_argument("field_out")
    parser.add_argument("runtime_out")
    parser.add_argument("--method", required=True, help="method name (the run folder)")
    parser.add_argument("--label", help="name in tables and figures (default: the method name)")
    args = parser.parse_args()

    fixed = nib.load(args.fixed_image)
    start = time.perf_counter()
    field = np.zeros((*fixed.shape[:3], 1, 3), dtype=np.float32)  # "registration"
    elapsed = time.perf_counter() - start

    image = nib.Nifti1Image(field, fixed.affine)
    image.header.set_intent("vector", name="disp_voxels")
    nib.save(image, args.field_out)
    runtime = {"method": args.method, "label": args.label or args.method, "time_s": elapsed,
               "device": f"{platform.processor() or platform.machine()} (1 thread)",
               "options": {}, "slice_step": 1}
    with open(args.runtime_out, "w") as out:
        json.dump(runtime, out, indent=2)


if __name__ == "__main__":
    main()
