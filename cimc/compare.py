"""Comparison with onnxruntime: the reference every cimc result is checked against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cimc.errors import ModelError


def onnxruntime_outputs(model: "str | Path | bytes", inputs: dict[str, np.ndarray],
                        batched: bool) -> dict[str, np.ndarray]:
    """Run the ONNX model (a file, or its bytes) in onnxruntime on the same inputs, one inference per
    leading index."""
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:
        name = "the model" if isinstance(model, bytes) else model
        raise ModelError(f"onnxruntime cannot load {name}: {str(exc).splitlines()[0]}") from None
    names = [o.name for o in session.get_outputs()]
    feed_names = {i.name for i in session.get_inputs()}
    samples = inputs if batched else {k: v[None] for k, v in inputs.items()}
    count = len(next(iter(samples.values())))
    results: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(count):
        outs = session.run(None, {k: v[i].astype(np.float32) for k, v in samples.items() if k in feed_names})
        for n, o in zip(names, outs):
            results[n].append(o)
    stacked = {n: np.stack(v) for n, v in results.items()}
    return stacked if batched else {n: v[0] for n, v in stacked.items()}


def compare(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], batched: bool) -> dict:
    """Max abs error, normalized error (max |diff| / max |ref|) and top-1 agreement per output."""
    report = {}
    for name, ref in reference.items():
        if name not in outputs:
            continue
        got = outputs[name].astype(np.float64)
        ref = ref.astype(np.float64)
        diff = np.abs(got - ref)
        entry = {"max_abs_error": float(diff.max(initial=0.0)),
                 "normalized_error": float(diff.max(initial=0.0) / max(np.abs(ref).max(initial=0.0), 1e-30))}
        if ref.shape and ref.shape[-1] > 1:
            g = got if batched else got[None]
            r = ref if batched else ref[None]
            g, r = g.reshape(g.shape[0], -1, g.shape[-1]), r.reshape(r.shape[0], -1, r.shape[-1])
            entry["top1_agreement"] = float((g.argmax(-1) == r.argmax(-1)).mean())
        report[name] = entry
    return report
