"""The onnxruntime session every ONNX model of ferkeras runs in (expression model, BlazeFace).

Its own module so that detection and the predictor both use it without importing each other.
"""

from __future__ import annotations

import os


def create_session(onnx_path: str | os.PathLike, *, threads: int = 0, providers=None):
    """An onnxruntime InferenceSession tuned for low latency.

    threads: intra-op threads; 0 lets onnxruntime choose (one per physical core).
    providers: execution providers; default CPU only.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0. Received: threads={threads}")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    if hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle intra-op threads busy-wait by default and steal the CPU the next frame's face
    # detection needs: 35.5 -> 26.4 ms per 640x480 frame with spinning off
    # (bench/results/inference.md, 2-core CPU).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx_path), sess_options=options,
                                providers=providers or ["CPUExecutionProvider"])
