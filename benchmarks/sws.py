"""Sorted weight sectioning (SWS): ADC conversions, energy and crossbars against the baselines B1 and B2.

    .venv/bin/python benchmarks/sws.py                          # everything (~15 min on 2 cores)
    .venv/bin/python benchmarks/sws.py --workloads bert --cell-bits 1 --sparsities 0.9 --no-record
    .venv/bin/python benchmarks/sws.py --limit 500              # fewer test images for the accuracies

Workloads: the BERT-base-shaped linear layers (768x768 four times, 768x3072, 3072x768; Laplace
weights, one MatMul model each, one token per inference) and the real weights of mnist-8,
MLPerf Tiny ResNet-8, MLPerf Tiny VWW MobileNetV1 and the winml CIFAR-10 classifier (corpus),
each magnitude-pruned per layer (``cimc.prune``) to 0, 50, 70 and 90 %, then quantized by cimc to
int8 (symmetric per output channel, so zero stays zero).

Targets: the ``isaac`` preset's geometry (128x128 crossbars, int8 weights as differential
sign-magnitude slices, 1-bit DAC inputs over 8 chunks) with ``cell_bits`` 1 or 2 and the ADC
made lossless (``adc.bits`` = the worst case of a full column: 8 bits for 1-bit cells, 9 for 2-bit
cells), so that every scheme computes the same bits. S1 compiles for the same chip with
``crossbar.input_routing = "per_group"``.

Every point is a real compile (``cimc.compile``) whose report's ``adc`` section gives the
conversions by resolution and the crossbars (B1 and B2 from the program compiled without SWS);
every SWS program is run at the ``ideal`` level next to the natural one on the same inputs, and
"identical" says whether all outputs are bit-identical. Energies are computed from the conversion
counts under both ADC energy models of the target schema: ``walden`` (6.1 fJ x 2^b) and ``floor``
(max(0.27 pJ, 6.1 fJ x 2^b)). Rows:

* ``B1``: natural order, every column at the fixed worst-case resolution;
* ``B2``: natural order, per-column lossless resolution, all-zero columns skipped;
* ``S2``, ``S3``, ``S1``: ``--sws s2|s3|s1`` on every layer;
* ``auto/walden``: ``--sws`` (auto) on the target with the Walden model (what the compiler picks);
  ``auto/floor``: per layer the cheaper of S2 and S3 under the floor model (what ``--sws`` picks on
  a target with ``energy_model = "floor"``), from the S2 and S3 compiles.

Calibration (500 training images; VWW 200) and test images are taken evenly spread over the corpus
files, which are sorted by class.

Also measured: accuracy of the pruned models (natural program, ``ideal`` level; cell bits do not
change it) on the corpus test sets (VWW has no labelled data: top-1 agreement with onnxruntime on
the unpruned model, CIFAR-10 images upscaled 3x); the SWS pass time (``pass_seconds["sws"]``,
auto, i.e. S2 and S3 built and costed) summed over the six BERT layers; and the ideal-level run
time of ResNet-8 with and without SWS (the gather's cost). Writes ``benchmarks/results/sws.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import ROOT, corpus_root, git_commit, spread  # noqa: E402

import cimc  # noqa: E402
from cimc.prune import prune_model  # noqa: E402
from cimc.targets import Target, preset_text, target_from_dict  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SPARSITIES = (0.0, 0.5, 0.7, 0.9)
ROWS = ("B1", "B2", "S2", "S3", "auto/walden", "auto/floor", "S1")
MODELS = ("walden", "floor")
BERT_SHAPES = [("attn_q", 768, 768), ("attn_k", 768, 768), ("attn_v", 768, 768), ("attn_out", 768, 768),
               ("ffn_up", 768, 3072), ("ffn_down", 3072, 768)]


# -- targets ----------------------------------------------------------------------------------

def chip(cell_bits: int, routing: str = "shared", energy_model: str = "walden") -> Target:
    """The isaac geometry with ``cell_bits`` cells and lossless ADCs."""
    data = tomllib.loads(preset_text("isaac"))
    data["crossbar"].update(cell_bits=cell_bits, input_routing=routing)
    data["adc"].update(bits=int(128 * ((1 << cell_bits) - 1)).bit_length(), energy_model=energy_model)
    data["name"] = f"isaac-c{cell_bits}-{routing}"
    return target_from_dict(data, data["name"])


def energy_pj(by_bits: dict[str, int], target: Target, model: str) -> float:
    adc = dataclasses.replace(target.adc, energy_model=model)
    return sum(n * adc.conversion_pj(int(b)) for b, n in by_bits.items())


# -- workloads --------------------------------------------------------------------------------

@dataclass
class Net:
    """One model of a workload: the dense model, its input name, calibration and check inputs."""
    name: str
    model: onnx.ModelProto
    feed: str
    calibration: np.ndarray
    check: np.ndarray


@dataclass
class Workload:
    title: str
    nets: list[Net]
    test: tuple[np.ndarray, np.ndarray | None] | None = None      # inputs, labels (None: agreement)
    note: str = ""


def _matmul(name: str, w: np.ndarray) -> onnx.ModelProto:
    k, n = w.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name=name)], name,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def bert() -> Workload:
    rng = np.random.default_rng(2024)
    nets = []
    for name, k, n in BERT_SHAPES:
        w = rng.laplace(0.0, 0.02, (k, n)).astype(np.float32)
        x = rng.standard_normal((20, 1, k)).astype(np.float32)
        nets.append(Net(name, _matmul(name, w), "x", x[:16], x[16:]))
    return Workload("BERT-base-shaped linear layers (Laplace weights, one token)", nets,
                    note="768x768 x4, 768x3072, 3072x768; inputs standard normal (signed codes)")


def _cifar(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)[:, None]


CORPUS_CASES: dict[str, tuple[str, str, str, str, Callable[[np.ndarray], np.ndarray], str]] = {
    # key: title, model, input, dataset, preprocessing (uint8 images -> inputs), note
    "mnist": ("mnist-8", "mnist-8/model.onnx", "Input3", "mnist",
              lambda x: x.astype(np.float32)[:, None, None], "raw pixels"),
    "resnet8": ("MLPerf Tiny ResNet-8", "mlperf_tiny_resnet8_cifar10.onnx", "input_1", "cifar", _cifar,
                "raw RGB 0..255"),
    "vww": ("MLPerf Tiny VWW MobileNetV1-0.25", "mlperf_tiny_vww_mobilenetv1_96.onnx", "input_1", "cifar",
            lambda x: (_cifar(x) / 255).repeat(3, axis=3).repeat(3, axis=4),
            "no labelled data: CIFAR-10 images upscaled 3x to 96x96 in [0, 1]; agreement with onnxruntime "
            "on the dense model"),
    "winml": ("winml CIFAR-10 classifier", "winml_cifar10_ImageClassifier.onnx", "modelInput", "cifar",
              lambda x: (_cifar(x) / 255 - 0.5) / 0.5, "(x/255 - 0.5)/0.5"),
}


def corpus_workload(key: str, limit: int, check: int) -> Workload:
    corpus = corpus_root()
    if corpus is None:
        sys.exit("sws.py: error: the test corpus is not available (set CIMC_CORPUS)")
    title, path, feed, dataset, prepare, note = CORPUS_CASES[key]
    calib_file, test_file = (("mnist_train_5k.npz", "mnist_test.npz") if dataset == "mnist"
                             else ("cifar10_train_1k.npz", "cifar10_test.npz"))
    with np.load(corpus / "data" / calib_file) as npz:
        calib = prepare(npz["x"][spread(len(npz["x"]), 200 if key == "vww" else 500)])
    if key == "vww":
        limit = min(limit, 500)
    with np.load(corpus / "data" / test_file) as npz:
        pick = spread(len(npz["x"]), limit)
        x, y = prepare(npz["x"][pick]), npz["y"][pick].astype(np.int64)
    model = onnx.load(str(corpus / "models" / path))
    if key == "winml":                      # dynamic batch: fix it as the corpus README says
        dim = model.graph.input[0].type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
    if key == "vww":                        # no labels: onnxruntime's top-1 on the dense model
        from cimc.compare import onnxruntime_outputs
        ref = next(iter(onnxruntime_outputs(corpus / "models" / path, {feed: x}, True).values()))
        y = ref.reshape(len(x), -1).argmax(-1)
    return Workload(title, [Net(key, model, feed, calib, x[spread(len(x), check)])], (x, y), note)


# -- measurement ------------------------------------------------------------------------------

@dataclass
class Point:
    """Per-inference totals of one row of one workload at one sparsity and cell width."""
    conversions: int = 0
    by_bits: dict[str, int] = field(default_factory=dict)
    crossbars: int = 0
    identical: bool | None = None

    def add(self, cost: dict) -> None:
        self.conversions += cost["conversions"]
        self.crossbars += cost["crossbars"]
        for b, n in cost["conversions_by_bits"].items():
            self.by_bits[b] = self.by_bits.get(b, 0) + n


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


def measure(nets: list[Net], sparsity: float, cell_bits: int) -> tuple[dict[str, Point], float]:
    """Every row for the pruned nets; also the SWS (auto) pass seconds summed over the nets."""
    shared, per_group = chip(cell_bits), chip(cell_bits, "per_group")
    rows = {r: Point() for r in ROWS}
    pass_seconds = 0.0
    for net in nets:
        model = prune_model(net.model, sparsity)[0] if sparsity else net.model
        calib = {net.feed: net.calibration}
        natural = cimc.compile(model, shared, calibration=calib)
        want = cimc.run(natural, {net.feed: net.check}).outputs
        reports = {}
        for row, scheme, target in (("S2", "s2", shared), ("S3", "s3", shared), ("S1", "s1", per_group),
                                    ("auto/walden", "auto", shared)):
            program = cimc.compile(model, target, calibration=calib, sws=scheme)
            same = _same(cimc.run(program, {net.feed: net.check}).outputs, want)
            rows[row].identical = same if rows[row].identical is None else rows[row].identical and same
            reports[row] = program.report["adc"]["layers"]
            if scheme == "auto":
                pass_seconds += program.pass_seconds["sws"]
        for i, layer in enumerate(natural.report["adc"]["layers"]):
            rows["B1"].add(layer["b1"])
            rows["B2"].add(layer["b2"])
            for row in ("S2", "S3", "S1", "auto/walden"):
                rows[row].add(reports[row][i]["chosen"])
            s2, s3 = reports["S2"][i]["chosen"], reports["S3"][i]["chosen"]
            rows["auto/floor"].add(min((s2, s3), key=lambda c: (energy_pj(c["conversions_by_bits"], shared,
                                                                          "floor"), c["crossbars"])))
        rows["auto/floor"].identical = rows["S2"].identical and rows["S3"].identical
    return rows, pass_seconds


def accuracy(net: Net, sparsity: float, x: np.ndarray, y: np.ndarray) -> float:
    model = prune_model(net.model, sparsity)[0] if sparsity else net.model
    program = cimc.compile(model, chip(1), calibration={net.feed: net.calibration})
    out = next(iter(cimc.run(program, {net.feed: x}).outputs.values()))
    return float((out.reshape(len(x), -1).argmax(-1) == y).mean())


def gather_overhead(limit: int, repeat: int) -> dict:
    """Ideal-level wall time of ResNet-8 (90 % pruned, 1-bit cells) with and without SWS."""
    w = corpus_workload("resnet8", limit, 8)
    net, (x, _) = w.nets[0], w.test
    model = prune_model(net.model, 0.9)[0]
    programs = {name: cimc.compile(model, chip(1), calibration={net.feed: net.calibration}, sws=sws)
                for name, sws in (("natural", False), ("sws", True))}
    best = {name: float("inf") for name in programs}
    for p in programs.values():
        cimc.run(p, {net.feed: x[:8]})                                       # warm-up
    for _ in range(repeat):
        for name, p in programs.items():                                     # interleaved: fair to both
            began = time.perf_counter()
            cimc.run(p, {net.feed: x})
            best[name] = min(best[name], time.perf_counter() - began)
    return {"images": len(x), "repeat": repeat, **best, "ratio": best["sws"] / best["natural"]}


# -- report -----------------------------------------------------------------------------------

def _pct(value: float, base: float) -> str:
    return f"{100 * (1 - value / base):.1f} %" if base else "n/a"


def _vs(rows: dict, e: dict, row: str, base: str, model: str) -> str:
    """Energy saved by ``row`` against ``base``; blank where it says nothing (a baseline against itself
    or B1 against B2)."""
    return "" if row == base or (row, base) == ("B1", "B2") else _pct(e[row][model], e[base][model])


def table(title: str, results: dict[float, dict[str, Point]], cell_bits: int) -> list[str]:
    target = chip(cell_bits)
    lines = [f"\n### {title}, {cell_bits}-bit cells\n",
             "| sparsity | row | conversions | energy walden (nJ) | energy floor (nJ) | crossbars | "
             "walden vs B1 | walden vs B2 | floor vs B1 | floor vs B2 | crossbars vs B2 | identical |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for sparsity, rows in results.items():
        e = {r: {m: energy_pj(p.by_bits, target, m) for m in MODELS} for r, p in rows.items()}
        for r, p in rows.items():
            same = "" if p.identical is None else ("yes" if p.identical else "**NO**")
            lines.append(
                f"| {100 * sparsity:.0f} % | {r} | {p.conversions:,} | {e[r]['walden'] / 1e3:,.2f} | "
                f"{e[r]['floor'] / 1e3:,.2f} | {p.crossbars:,} | {_vs(rows, e, r, 'B1', 'walden')} | "
                f"{_vs(rows, e, r, 'B2', 'walden')} | {_vs(rows, e, r, 'B1', 'floor')} | "
                f"{_vs(rows, e, r, 'B2', 'floor')} | {p.crossbars - rows['B2'].crossbars:+,} | {same} |")
    return lines


def headline(results: dict, pass_seconds: dict, overhead: dict | None) -> list[str]:
    """The issue's figures, stated against both baselines, measured values first."""
    out = ["## Headline figures\n"]
    bert = results.get(("bert", 1), {}).get(0.9)
    if bert:
        t = chip(1)
        e = {r: {m: energy_pj(p.by_bits, t, m) for m in MODELS} for r, p in bert.items()}

        def less(r: str, base: str, m: str) -> float:
            return 100 * (1 - e[r][m] / e[base][m])
        legal = "auto/floor"
        checks = [
            (f"S2/S3 (auto/walden) energy vs B1 under the 2^b (walden) model: "
             f"{less('auto/walden', 'B1', 'walden'):.1f} % less (S1: {less('S1', 'B1', 'walden'):.1f} %)",
             "at least 97 %", less("auto/walden", "B1", "walden") >= 97),
            (f"crossbar-legal SWS (auto/floor) energy vs B2 under the floor model: {less(legal, 'B2', 'floor'):.1f} % "
             f"less (S2 {less('S2', 'B2', 'floor'):.1f} %, S3 {less('S3', 'B2', 'floor'):.1f} %)",
             "at least 35 %", less(legal, "B2", "floor") >= 35),
            (f"crossbars, crossbar-legal SWS vs B2: {bert[legal].crossbars:,} vs {bert['B2'].crossbars:,} "
             f"(S2 {bert['S2'].crossbars:,}, S3 {bert['S3'].crossbars:,}; S1 {bert['S1'].crossbars:,} with "
             f"per-group input routing)", "fewer than B2", bert[legal].crossbars < bert["B2"].crossbars),
            (f"S1 energy vs B2 under the floor model: {less('S1', 'B2', 'floor'):.1f} % less",
             "at least 70 %", less("S1", "B2", "floor") >= 70),
            ("outputs of every SWS program bit-identical to the natural program's",
             "identical", all(p.identical for p in bert.values() if p.identical is not None)),
            (f"for scale, B2 vs B1: {less('B2', 'B1', 'walden'):.1f} % less under walden, "
             f"{less('B2', 'B1', 'floor'):.1f} % under floor; SWS vs B2 under walden: auto "
             f"{less('auto/walden', 'B2', 'walden'):+.1f} %, S1 {less('S1', 'B2', 'walden'):+.1f} %", "", None),
        ]
        out += ["At 90 % sparsity, 1-bit cells, the six BERT-shaped layers together (per token):\n",
                "| figure | target | met |", "|---|---|---|"]
        out += [f"| {text} | {want} | {'' if ok is None else 'yes' if ok else '**no**'} |" for text, want, ok in checks]
    if pass_seconds:
        worst = max(pass_seconds.values())
        key = max(pass_seconds, key=pass_seconds.get)
        out += [f"\nSWS pass (auto: S2 and S3 built and costed) on all six BERT layers: at most {worst:.2f} s "
                f"(at {100 * key[1]:.0f} % sparsity, {key[0]}-bit cells; target under 5 s: "
                f"{'met' if worst < 5 else '**not met**'}); per point: " +
                ", ".join(f"{100 * s:.0f} %/{c}-bit {v:.2f} s" for (c, s), v in sorted(pass_seconds.items())) + "."]
    if overhead:
        out += [f"\nGather cost at the `ideal` level, ResNet-8 90 % pruned, {overhead['images']} CIFAR-10 images, "
                f"best of {overhead['repeat']}: natural {overhead['natural']:.2f} s, SWS {overhead['sws']:.2f} s, "
                f"ratio {overhead['ratio']:.3f} (target at most 1.10: "
                f"{'met' if overhead['ratio'] <= 1.10 else '**not met**'})."]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="bert,mnist,resnet8,vww,winml")
    ap.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES))
    ap.add_argument("--cell-bits", default="1,2")
    ap.add_argument("--limit", type=int, default=2000, help="test images for the accuracies (VWW: at most 500)")
    ap.add_argument("--check", type=int, default=32, help="inputs on which SWS outputs must be identical")
    ap.add_argument("--timing-images", type=int, default=1000, help="ResNet-8 images for the gather timing")
    ap.add_argument("--no-timing", action="store_true", help="skip the gather timing")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    keys = args.workloads.split(",")
    sparsities = [float(s) for s in args.sparsities.split(",")]
    cell_bits = [int(c) for c in args.cell_bits.split(",")]
    started = time.perf_counter()
    lines = ["# Sorted weight sectioning: ADC conversions, energy and crossbars\n",
             f"Written by `benchmarks/sws.py` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit "
             f"{git_commit()}, {platform.machine()}, {os.cpu_count()} cores. Definitions, targets and rows: the "
             f"script's docstring and `benchmarks/README.md`. Figures are per inference (BERT: per token, the "
             f"six layers summed); energies from the conversion counts under the `walden` model "
             f"(6.1 fJ x 2^b) and the `floor` model (max(0.27 pJ, 6.1 fJ x 2^b)). Percentages are energy "
             f"saved against the baseline named; crossbars vs B2 is the difference in crossbars.\n"]
    results: dict = {}
    accuracies: dict = {}
    pass_seconds: dict = {}
    notes, titles = [], {}
    for key in keys:
        w = bert() if key == "bert" else corpus_workload(key, args.limit, args.check)
        notes.append(f"- {w.title}: {w.note}")
        titles[key] = w.title
        for c in cell_bits:
            results[key, c] = {}
            for s in sparsities:
                rows, seconds = measure(w.nets, s, c)
                results[key, c][s] = rows
                if key == "bert":
                    pass_seconds[c, s] = seconds
                print(f"{key} {c}-bit {100 * s:.0f} %: " + ", ".join(
                    f"{r} {p.conversions:,}/{p.crossbars}" for r, p in rows.items()), flush=True)
        if w.test is not None:
            x, y = w.test
            accuracies[key] = {s: accuracy(w.nets[0], s, x, y) for s in sparsities}
            print(f"{key} accuracy: {accuracies[key]}", flush=True)
    overhead = None if args.no_timing or "resnet8" not in keys else gather_overhead(args.timing_images, 3)
    lines += headline(results, pass_seconds, overhead)
    if accuracies:
        lines += ["\n## Accuracy of the pruned models\n",
                  "cimc, `ideal` level, natural program (SWS outputs are bit-identical, see `identical` below); "
                  f"{args.limit} test images spread evenly over the test set (VWW: top-1 agreement with "
                  "onnxruntime on the dense model, at most 500 images). Magnitude pruning without fine-tuning: "
                  "the accuracy lost is the pruning's, not the chip's.\n",
                  "| model | " + " | ".join(f"{100 * s:.0f} %" for s in sparsities) + " |",
                  "|---|" + "---|" * len(sparsities)]
        for key, acc in accuracies.items():
            lines.append(f"| {CORPUS_CASES[key][0]} | " + " | ".join(f"{100 * a:.1f} %" for a in acc.values()) + " |")
    lines += ["\n## Per workload\n", "Inputs:", *notes]
    for (key, c), res in results.items():
        lines += table(titles[key], res, c)
    lines.append(f"\nTotal benchmark time {time.perf_counter() - started:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        (RESULTS / "sws.md").write_text(text)
        print(f"wrote {RESULTS / 'sws.md'}")


if __name__ == "__main__":
    main()
