"""Test-time flip averaging baked into an exported ONNX model (float or int8).

`add_flip_average(model)` wraps a classifier graph, input (N, H, W, C) NHWC: the batch and its
left-right mirror run as one batch of 2N, and the outputs become

    probs = (softmax(logits(x)) + softmax(logits(mirror(x)))) / 2,   logits = log(probs)

so a face and its mirror get the same label by construction (and softmax(logits) is still
probs). The original nodes (and their int8 weights) are kept as they are; only Slice, Concat,
Reshape, ReduceMean and Log are added. Mean of probabilities, not of logits: the usual
test-time augmentation; on the validation half of PublicTest both gave the same accuracy
(84.91 %) and balanced accuracy 61.25 % vs 61.15 %. `bake_flip_average(folder, out)` does
it to an export folder and records it in the metadata (`test_time_flip`). ONNX only: no
TensorFlow.

    python -m ferkeras.deploy.flip_average FOLDER [--out OUT]   # in place when --out is omitted

The command also makes the metadata's `run_dir` portable and writes SHA256SUMS
(`ferkeras.pretrained.finalize_shipped`), as `ferkeras ship` does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys

FLIP_INFO = {
    "mode": "mean_probs",
    "meaning": "probs = mean of the softmax of the image and of its left-right mirror (one "
               "batch of 2N inside the graph); logits = log(probs)",
}
_INNER = "__flip_inner"


def add_flip_average(model, *, input_name: str = "image", logits_name: str = "logits",
                     probs_name: str = "probs", width_axis: int = 2):
    """A copy of `model` (onnx.ModelProto) that averages the probabilities of each image and
    its mirror along `width_axis` (2 for NHWC); its logits output becomes log(probs). The
    graph must have `logits_name` and `probs_name` outputs, `probs` a softmax of `logits`.
    Raises ValueError otherwise, or when the model already averages flips."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inputs = {i.name for i in graph.input}
    outputs = [o.name for o in graph.output]
    if input_name not in inputs:
        raise ValueError(f"no graph input {input_name!r}. Received inputs: {sorted(inputs)}")
    if sorted(outputs) != sorted([logits_name, probs_name]):
        raise ValueError(f"expected outputs {[logits_name, probs_name]}. Received: {outputs}")
    if any(n.name.startswith(_INNER) for n in graph.node):
        raise ValueError("this model already averages flips (its graph has flip nodes)")
    both = f"{_INNER}_both"
    logits_pair, pair = f"{_INNER}_logits_pair", f"{_INNER}_probs_pair"
    (logits_out,) = [o for o in graph.output if o.name == logits_name]
    dims = logits_out.type.tensor_type.shape.dim
    if len(dims) != 2 or dims[1].dim_value < 1:
        raise ValueError(f"output {logits_name!r} must be (N, K) with K known. Received: "
                         f"{[d.dim_value or d.dim_param for d in dims]}")
    classes = int(dims[1].dim_value)

    def rename(names, old, new):
        for i, name in enumerate(names):
            if name == old:
                names[i] = new

    # Intermediate shape annotations name the batch dimension, which is now 2N: drop them
    # (onnxruntime infers shapes itself).
    del graph.value_info[:]
    for node in graph.node:
        rename(node.input, input_name, both)
        for old, new in ((logits_name, logits_pair), (probs_name, pair)):
            rename(node.input, old, new)
            rename(node.output, old, new)
    consts = {f"{_INNER}_starts": [-1], f"{_INNER}_ends": [np.iinfo(np.int64).min],
              f"{_INNER}_axes": [width_axis], f"{_INNER}_steps": [-1],
              f"{_INNER}_pair_shape": [2, -1, classes]}
    for name, value in consts.items():
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.int64), name))
    mirror = f"{_INNER}_mirror"
    new_nodes = [
        helper.make_node("Slice", [input_name, f"{_INNER}_starts", f"{_INNER}_ends",
                                   f"{_INNER}_axes", f"{_INNER}_steps"], [mirror],
                         name=f"{_INNER}_slice"),
        helper.make_node("Concat", [input_name, mirror], [both], axis=0,
                         name=f"{_INNER}_concat"),
    ]
    # Reshape (2N, K) -> (2, N, K): the first N rows are the images, the next N the mirrors.
    tail = [
        helper.make_node("Reshape", [pair, f"{_INNER}_pair_shape"], [f"{_INNER}_pairs"],
                         name=f"{_INNER}_reshape"),
        helper.make_node("ReduceMean", [f"{_INNER}_pairs"], [probs_name], axes=[0],
                         keepdims=0, name=f"{_INNER}_mean"),
        helper.make_node("Log", [probs_name], [logits_name], name=f"{_INNER}_log"),
    ]
    nodes = new_nodes + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def bake_flip_average(folder, out=None) -> dict:
    """Apply `add_flip_average` to the export folder `folder` and write model.onnx +
    metadata.json (`test_time_flip`, new `files.onnx_sha256`) into `out` (default: in
    place). Returns the new metadata."""
    import onnx

    from ferkeras.deploy.inference import METADATA_FILE, ONNX_FILE, read_metadata

    folder = pathlib.Path(folder)
    out = pathlib.Path(out) if out else folder
    meta = read_metadata(folder)
    if meta.get("test_time_flip"):
        raise ValueError(f"{folder}: already averages flips ({meta['test_time_flip']})")
    model = add_flip_average(onnx.load(str(folder / ONNX_FILE)),
                             input_name=meta["input"]["name"],
                             logits_name=meta["outputs"]["logits"]["name"],
                             probs_name=meta["outputs"]["probs"]["name"])
    data = model.SerializeToString()
    new_meta = dict(meta)
    new_meta["files"] = {**meta["files"], "onnx_sha256_before_flip": meta["files"].get(
        "onnx_sha256"), "onnx_sha256": hashlib.sha256(data).hexdigest()}
    new_meta["test_time_flip"] = dict(FLIP_INFO)
    outputs = {**meta["outputs"]}
    outputs["probs"] = {**outputs["probs"], "meaning": "softmax, averaged over the image and "
                        "its mirror"}
    outputs["logits"] = {**outputs["logits"], "meaning": "log(probs): softmax(logits) = probs"}
    new_meta["outputs"] = outputs
    out.mkdir(parents=True, exist_ok=True)
    _write(out / ONNX_FILE, data)
    _write(out / METADATA_FILE, (json.dumps(new_meta, indent=2) + "\n").encode())
    return new_meta


def _write(path: pathlib.Path, data: bytes) -> None:
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--out", default=None, help="output folder (default: in place)")
    args = p.parse_args(argv)
    from ferkeras.pretrained import HASH_FILE, finalize_shipped

    meta = bake_flip_average(args.folder, args.out)
    finalize_shipped(args.out or args.folder)
    print(f"flip averaging baked in: {args.out or args.folder} "
          f"(sha256 {meta['files']['onnx_sha256']}; {HASH_FILE} written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
