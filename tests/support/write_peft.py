"""Writes a PEFT LoRA adapter folder the way PEFT does, with the Python `safetensors` package
(not with rlclaw), for the import tests.

    python3 write_peft.py SPEC.json OUT_DIR

SPEC.json: {"config": {...adapter_config.json...},
            "tensors": [{"name": "...", "shape": [r, n], "dtype": "float32|float16", "data": [...]}]}
"""

import json
import os
import struct
import sys

import safetensors


def write_weights(tensors, path):
    try:
        import numpy as np
        from safetensors.numpy import save_file

        arrays = {
            t["name"]: np.asarray(t["data"], dtype=t.get("dtype", "float32")).reshape(t["shape"])
            for t in tensors
        }
        save_file(arrays, path, metadata={"format": "pt"})
        return "numpy"
    except ImportError:
        pass
    # Without numpy: the package's raw serializer, over little-endian bytes we pack here.
    blobs = {}
    for t in tensors:
        dtype = t.get("dtype", "float32")
        code = {"float32": "f", "float16": "e"}[dtype]
        blobs[t["name"]] = (dtype, t["shape"], struct.pack("<%d%s" % (len(t["data"]), code), *t["data"]))
    if hasattr(safetensors, "TensorSpec"):
        import ctypes

        keep = []
        specs = {}
        for name, (dtype, shape, raw) in blobs.items():
            buf = ctypes.create_string_buffer(raw, len(raw))
            keep.append(buf)
            specs[name] = safetensors.TensorSpec(
                dtype=dtype, shape=shape, data_ptr=ctypes.addressof(buf), data_len=len(raw)
            )
        safetensors.serialize_file(specs, path, metadata={"format": "pt"})
    else:
        safetensors.serialize_file(
            {n: {"dtype": d, "shape": s, "data": r} for n, (d, s, r) in blobs.items()},
            path,
            metadata={"format": "pt"},
        )
    return "raw"


def main():
    spec_path, out = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(spec["config"], f, indent=2)
    if spec.get("tensors") is not None:
        how = write_weights(spec["tensors"], os.path.join(out, "adapter_model.safetensors"))
        print("safetensors %s (%s)" % (safetensors.__version__, how))


if __name__ == "__main__":
    main()
