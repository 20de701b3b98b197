"""The ``cimc`` command line: compile, run, inspect, targets.

User errors (:class:`cimc.errors.CimcError`) print one line and exit with status
2; anything else is a bug in cimc and exits with status 1 (set CIMC_DEBUG=1 for
the traceback). Every file is written atomically, so a failed command leaves
nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np

from cimc.errors import CimcError
from cimc.fsutil import atomic_path, check_writable, write_text_atomic

EXAMPLES = """examples:
  cimc compile model.onnx --target isaac -o model.cimp --calibration calib.npz --report-json report.json
  cimc inspect model.cimp --program | head
  cimc run model.cimp --input batch.npz --check model.onnx --stats-json stats.json
  cimc run model_sram.cimp --input batch.npz --multiplier pc3 --check model.onnx
  cimc inspect model.onnx --ir
  cimc targets isaac
  cimc sweep examples/sweep_mnist_resnet8.toml -o out/sweep
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cimc", description="Compile ONNX models for tiled computing-in-memory "
                                "accelerators and run them on the reference runtime.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"cimc {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compile", help="compile an ONNX model to a .cimp program")
    c.add_argument("model", help="ONNX model file")
    c.add_argument("--target", "-t", required=True, help="preset name (see `cimc targets`) or TOML file")
    c.add_argument("-o", "--output", required=True, help="program file to write (.cimp)")
    c.add_argument("--scheduler", default="layer", choices=["layer", "clsa", "cpsat"],
                   help="layer: layer by layer, one copy of each layer (the baseline, default); clsa: "
                        "CLSA-CIM cross-layer scheduling (sets start as soon as the rows they need exist) "
                        "with greedy weight duplication in the spare crossbars; cpsat: a local search over "
                        "copy counts, copies packed tile after tile or spread over the tiles (whichever "
                        "schedules shorter), then OR-Tools CP-SAT over set assignment and order (copies, GPEUs, "
                        "network links), hinted with clsa; every scheduler queues messages on busy links and "
                        "keeps each tile within its buffer, spilling rows to the target's global memory or "
                        "holding them back; the report gives a lower bound on any schedule and the gap to it")
    c.add_argument("--solver-work", type=float, default=2.0, metavar="UNITS",
                   help="cpsat's budget in units of CP-SAT's deterministic time (about a second each on "
                        "small models, 60 to 120 s on light_resnet50 on 2 cores), and per unit 10 copy "
                        "counts tried or as many as 20,000 sets scheduled allow: counted work, not time, "
                        "so the same options give the same program on any machine (default 2)")
    c.add_argument("--solver-time", type=float, default=300.0, metavar="SECONDS",
                   help="wall-clock cap on cpsat (default 300); a compile stopped by it rather than by "
                        "--solver-work says so (report: solver_limit = \"time\") and may differ between "
                        "machines")
    c.add_argument("--seed", type=int, default=0, help="CP-SAT's random seed (default 0)")
    c.add_argument("--set-rows", type=int, default=1, metavar="N",
                   help="output rows per set (default 1; larger sets: fewer, coarser scheduling decisions)")
    c.add_argument("--calibration", metavar="DATA.npz",
                   help="calibration samples, one array per model input named like it, shaped "
                        "(samples, *input shape); without it scales come from random inputs (warned)")
    c.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224",
                   help="fix a dynamic input shape (repeatable)")
    c.add_argument("--allow-reprogramming", action="store_true",
                   help="run a model larger than the chip in segments of layers, each programmed into "
                        "the crossbars in turn (every inference pays their writes in time and energy; clsa and "
                        "cpsat duplicate layers into the crossbars each segment leaves free); a layer "
                        "larger than the whole chip is cut by output channels into parts that fit")
    c.add_argument("--sws", nargs="?", const="auto", choices=["auto", "s1", "s2", "s3"], metavar="SCHEME",
                   help="sorted weight sectioning: lay out crossbar rows so that fewer ADC conversions "
                        "are needed, dropping rows that are zero for all outputs of a crossbar. SCHEME: "
                        "auto (default: per layer the cheapest of s2 and s3, and s1 where the target "
                        "routes inputs per group, under the target's ADC energy model), s2 (one row order "
                        "per crossbar), s3 (outputs regrouped, then s2), s1 (each output sorted on its "
                        "own; needs crossbar.input_routing = \"per_group\")")
    c.add_argument("--report-json", metavar="PATH", help="write the compile report as JSON; its adc section "
                   "has ADC conversions, energy and crossbars per layer and in total, against the "
                   "baselines B1 and B2")

    pr = sub.add_parser("prune", help="magnitude-prune the crossbar weights of an ONNX model")
    pr.add_argument("model", help="ONNX model file")
    pr.add_argument("--sparsity", type=float, required=True,
                    help="fraction of each Conv/ConvTranspose/Gemm/MatMul weight tensor set to zero, the "
                         "smallest magnitudes first, in [0, 1)")
    pr.add_argument("-o", "--output", required=True, help="pruned ONNX model to write")

    r = sub.add_parser("run", help="run a compiled program on the reference runtime")
    r.add_argument("program", help=".cimp program file")
    r.add_argument("--input", "-i", required=True, metavar="INPUTS.npz",
                   help="one array per model input, shaped like it or with an extra leading batch axis")
    r.add_argument("--level", default="ideal", choices=["ideal", "crossbar"],
                   help="numerics level: ideal (exact integer products, lossless ADCs; on a bfloat16 chip, "
                        "bfloat16 products with float32 sums) or crossbar (bit slices, bit-serial inputs, "
                        "per-column ADCs that clip; on a bfloat16 chip the same as ideal) (default: ideal)")
    r.add_argument("--arithmetic", default="exact", choices=["exact", "onnxruntime"],
                   help="integer arithmetic of pre-quantized models' layers: exact (the ONNX specification "
                        "and the hardware's arithmetic) or onnxruntime (reproduce the int8 arithmetic of the "
                        "installed onnxruntime on this CPU: int16 pair saturation of x86 AVX2 kernels when it "
                        "has it); ideal level only (default: exact)")
    r.add_argument("--multiplier", metavar="NAME",
                   help="programs for a digital target (sram: int8, sram-bf16: bfloat16): take every crossbar "
                        "product with this approximate 8-bit multiplier (exact, or, pc<k>, or-t<t>, pc<k>-t<t>, "
                        "mitchell, drum<k>, table; see `cimc multipliers`): sign-magnitude on the int8 codes, or "
                        "on the bfloat16 significands with exact signs and exponents and float32 sums; emulated "
                        "exactly at the ideal level. Stats: multiplier_error (sum |approx - exact| / sum |exact| over the "
                        "crossbar sums), and cycles and MAC energy scaled by the target's [multipliers] ratios "
                        "(multiplier_latency_cycles is an estimate; latency_cycles stays the compiled schedule's)")
    r.add_argument("--multiplier-table", metavar="FILE",
                   help="the 256x256 product table of the `table` multiplier (.npy, .npz with one array, or "
                        "text/CSV integers 0..65535, row = activation magnitude or significand); implies "
                        "--multiplier table")
    r.add_argument("--check", metavar="MODEL.onnx", help="run onnxruntime on the same inputs and compare")
    r.add_argument("--output", "-o", metavar="OUT.npz", help="write the outputs")
    r.add_argument("--stats-json", metavar="PATH", help="write run statistics as JSON")

    i = sub.add_parser("inspect", help="show a model's IR or a program's listing and schedule")
    i.add_argument("file", help="ONNX model or .cimp program")
    i.add_argument("--ir", action="store_true", help="the graph IR")
    i.add_argument("--schedule", action="store_true", help="the schedule (programs only)")
    i.add_argument("--program", action="store_true", help="the instruction listing (programs only)")
    i.add_argument("--format", default="text", choices=["text", "json", "dot", "html"],
                   help="output format: text, json or dot for graphs (--ir); text, json, dot (set dependency "
                        "graph) or html (self-contained Gantt chart page) for --schedule; text or json for "
                        "the listing (default: text)")
    i.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224",
                   help="fix a dynamic input shape of a model (repeatable)")

    t = sub.add_parser("targets", help="list the target presets, or print one")
    t.add_argument("name", nargs="?", help="preset to print in full")

    m = sub.add_parser("multipliers", help="characterize the approximate multipliers on all operand pairs")
    m.add_argument("names", nargs="*", metavar="NAME",
                   help="multipliers to characterize, e.g. pc3-t6 drum5 (default: the standard family)")
    m.add_argument("--table", metavar="FILE",
                   help="also characterize a table-driven multiplier: 256x256 integer products of 8-bit "
                        "magnitudes, row = first operand (.npy, .npz with one array, or text/CSV)")

    w = sub.add_parser("sweep", help="design-space sweep: compile (and run) models over target and compiler "
                       "parameters; table, Pareto plots, HTML report",
                       description="Expand a sweep spec (TOML: models with optional accuracy samples, a base "
                       "target, the parameters to vary on a grid or at random, fixed compile and run options, "
                       "the objectives; see examples/sweep_mnist_resnet8.toml and the README) into points, "
                       "compile each (and run its accuracy samples), and write RESULTS/results.csv (and "
                       "results.parquet when pyarrow is installed), one Pareto plot per model and pair of "
                       "objectives in RESULTS/plots/ (SVG, each dot linked to its point's schedule page, and "
                       "PNG), RESULTS/report.html (opens offline), and a schedule page per point in "
                       "RESULTS/schedules/. The whole spec (parameters, models, data files, the executor) is "
                       "checked before any point runs. Every finished point is kept in RESULTS as soon as it "
                       "finishes: rerunning the same command after an interruption (Ctrl-C, a kill, a crash) "
                       "skips them and finishes the rest; points are named by their content (model and data "
                       "hashes, target, options, cimc version), so none is ever computed twice. A point that "
                       "fails is recorded with its message and the sweep goes on. On a terminal a progress "
                       "line shows tasks done, failures and the ETA. Corpus models (corpus = \"mnist-8\") are "
                       "read from $CIMC_CORPUS, else ../shared/corpus.")
    w.add_argument("spec", help="sweep spec (TOML)")
    w.add_argument("-o", "--output", required=True, metavar="RESULTS",
                   help="results folder (created; an existing one is resumed)")
    w.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: a process pool on this machine (default); ray: Ray tasks, on a Ray instance "
                        "started here or on the cluster at --address (needs pip install 'cimc[ray]'); the "
                        "results are the same either way")
    w.add_argument("--workers", type=int, metavar="N",
                   help="local: worker processes (default: one per core); ray without --address: CPUs of the "
                        "Ray instance started here (default: all)")
    w.add_argument("--address", metavar="ray://HOST:PORT",
                   help="with --executor ray: an existing cluster, ray://HOST:PORT (Ray client server, "
                        "default port 10001), HOST:PORT (head node, from a cluster node) or auto; its nodes "
                        "need cimc installed (not the model files: they are shipped); checked before any "
                        "point runs")
    return p


def _version() -> str:
    import cimc
    return cimc.__version__


def _write_json(path: str, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _check_outputs(*paths: str | None) -> None:
    """Every output is checked before any work, so a bad one fails fast and writes nothing."""
    for path in paths:
        if path:
            check_writable(path)


def _cmd_compile(args: argparse.Namespace) -> None:
    import cimc
    _check_outputs(args.output, args.report_json)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program = cimc.compile(args.model, args.target, scheduler=args.scheduler,
                               calibration=args.calibration, input_shapes=args.input_shape,
                               allow_reprogramming=args.allow_reprogramming, sws=args.sws or False,
                               solver_work=args.solver_work, solver_time=args.solver_time, seed=args.seed,
                               rows_per_set=args.set_rows)
    for w in caught:
        print(f"cimc: warning: {w.message}", file=sys.stderr)
    r = program.report
    # Write the report first: a failure there must not leave a program behind either.
    if args.report_json:
        _write_json(args.report_json, {**r, "pass_seconds": program.pass_seconds})
    program.save(args.output)
    segments = (f" in {r['segments']} segments ({r['write_cycles']} cycles of writes)"
                if r["segments"] > 1 else "")
    print(f"compiled {r['model']} for {r['target']}: {r['crossbars_used']} crossbars on {r['tiles_used']} "
          f"tiles{segments}, {r['scheduler']} schedule {r['makespan_cycles']} cycles ({r['makespan_us']:.2f} us), "
          f"PE utilization {100 * r['pe_utilization']:.1f} % -> {args.output}")
    from cimc.schedule_views import cycles
    duplicated = sum(c > 1 for c in r["copies"].values())
    print(f"  lower bound {r['lower_bound_cycles']} cycles (gap {100 * r['gap']:.1f} %); layers duplicated: "
          f"{duplicated} ({sum(r['copies'].values())} copies of {len(r['copies'])} layers, {r['placement']}"
          + (f", {sum(r['idle_copies'].values())} idle" if r["idle_copies"] else "") + "); "
          f"same mapping: "
          f"layer {cycles(r['comparison']['layer'])}, clsa {cycles(r['comparison']['clsa'])}; layer by layer "
          f"without duplication {cycles(r['comparison']['layer_one_copy'])}; activation buffer peak "
          f"{r['buffer_peak_kib']:.1f} KiB on tile {r['buffer_peak_tile']} (of {r['buffer_kib_per_tile']:g} KiB)"
          + (f", {r['memory']['stored_kib']:.1f} KiB spilled to the global memory and "
             f"{r['memory']['loaded_kib']:.1f} KiB loaded back" if r["memory"]["stored_kib"] else "")
          + (f"; CP-SAT {r['solver_status']} after {r['solver_work']:g} units of work "
             f"({program.pass_seconds['cpsat_solver']:.1f} s)" if r["solver_status"] else ""))
    if r.get("solver_limit") == "time":
        print(f"cimc: warning: CP-SAT was stopped by --solver-time {args.solver_time:g} before its work budget "
              f"(--solver-work {args.solver_work:g}): this program may differ from one compiled on another "
              f"machine; raise --solver-time or lower --solver-work for a reproducible compile", file=sys.stderr)
    if args.sws:
        print(_sws_summary(r["adc"]))


def _sws_summary(adc: dict) -> str:
    """One line: what SWS chose, and its ADC figures per inference against both baselines."""
    schemes: dict[str, int] = {}
    for layer in adc["layers"]:
        schemes[layer["scheme"]] = schemes.get(layer["scheme"], 0) + 1
    t = adc["total"]
    chosen, b1, b2 = t["chosen"], t["b1"], t["b2"]

    def less(key: str, base: dict) -> str:
        return f"{100 * (1 - chosen[key] / base[key]):.1f} % less" if base[key] else "n/a"
    return (f"SWS: {', '.join(f'{s} on {n} layer(s)' for s, n in sorted(schemes.items()))}; ADC per inference "
            f"({adc['energy_model']} model): {chosen['conversions']:,} conversions, "
            f"{chosen['energy_pj'] / 1e6:.4g} uJ, {chosen['crossbars']} crossbars; energy {less('energy_pj', b2)} "
            f"than B2 (natural order, per-column resolution: {b2['energy_pj'] / 1e6:.4g} uJ, {b2['crossbars']} "
            f"crossbars), {less('energy_pj', b1)} than B1 (natural order, fixed {adc['b1_bits']}-bit "
            f"ADCs: {b1['energy_pj'] / 1e6:.4g} uJ)")


def _cmd_prune(args: argparse.Namespace) -> None:
    import onnx
    from cimc.prune import check_sparsity, prune_file
    check_sparsity(args.sparsity)
    _check_outputs(args.output)
    model, done = prune_file(args.model, args.sparsity)
    with atomic_path(args.output) as tmp:
        onnx.save(model, str(tmp))
    size = sum(p.size for p in done)
    before, after = sum(p.zeros_before for p in done), sum(p.zeros_after for p in done)
    print(f"pruned {len(done)} weight tensor(s) of {args.model} to {100 * args.sparsity:g} % sparsity each: "
          f"{after:,} of {size:,} weights zero (before: {before:,}) -> {args.output}")


def _cmd_run(args: argparse.Namespace) -> None:
    import cimc
    from cimc.inputs import check_arrays, load_npz
    _check_outputs(args.output, args.stats_json)
    program = cimc.Program.load(args.program)
    data = load_npz(args.input, "input")
    result = cimc.run(program, data, level=args.level, arithmetic=args.arithmetic,
                      multiplier=args.multiplier, multiplier_table=args.multiplier_table)
    s = result.stats
    print(f"ran {s['batch']} inference(s) at level {s['level']}: latency {s['latency_cycles']} cycles "
          f"({s['latency_us']:.2f} us), PE utilization {100 * s['pe_utilization']:.1f} %, "
          f"{s['adc_conversions']} ADC conversions ({s['adc_energy_pj'] / 1e6:.3f} uJ) per inference, "
          + (f"{100 * s['clipped_fraction']:.3f} % clipped, " if s["level"] == "crossbar" else "") +
          f"wall {s['wall_seconds']:.2f} s")
    if s["multiplier"] is not None:
        print(_multiplier_summary(s, program.target.name))
    if args.check:
        from cimc.compare import compare, onnxruntime_outputs
        arrays, batched = check_arrays({k: tuple(v) for k, v in program.inputs.items()}, data, "input")
        if not batched:
            arrays = {k: v[0] for k, v in arrays.items()}
        reference = onnxruntime_outputs(args.check, arrays, batched)
        report = compare(result.outputs, reference, batched)
        s["check"] = report
        for name, e in report.items():
            line = (f"check against onnxruntime, output {name}: max abs error {e['max_abs_error']:.4g}, "
                    f"normalized error {e['normalized_error']:.4g}")
            if "top1_agreement" in e:
                line += f", top-1 agreement {100 * e['top1_agreement']:.2f} %"
            print(line)
    if args.stats_json:
        _write_json(args.stats_json, s)
    if args.output:
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **result.outputs)


def _multiplier_summary(s: dict, target: str) -> str:
    """One line: the multiplier, its error on this run, and its cost figures from the target."""
    line = (f"multiplier {s['multiplier']}: crossbar sums off by {100 * s['multiplier_error']:.3f} % "
            f"(sum |approx - exact| / sum |exact|, bias {100 * s['multiplier_bias']:+.3f} %), "
            f"{s['macs']:,} MACs per inference")
    if s["multiplier_cycle_ratio"] is None:
        return line + f"; target {target} lists no cycle and energy ratios for it: costs not reported"
    return (line + f", MAC energy {s['mac_energy_pj'] / 1e6:.4g} uJ (x{s['multiplier_energy_ratio']:g}), "
            f"latency estimate {s['multiplier_latency_cycles']:.0f} cycles (crossbar cycles "
            f"x{s['multiplier_cycle_ratio']:g}; the schedule's: {s['latency_cycles']})")


def _print_graph(graph, fmt: str) -> None:
    if fmt == "html":
        raise CimcError("graphs print as text, json or dot; html is for --schedule")
    print(json.dumps(graph.to_dict(), indent=2) if fmt == "json" else graph.to_dot() if fmt == "dot"
          else graph.format())


def _cmd_inspect(args: argparse.Namespace) -> None:
    from cimc.program import MAGIC
    path = Path(args.file)
    if path.suffix == ".cimp" or (path.is_file() and path.open("rb").read(4) == MAGIC):
        from cimc import schedule_views
        from cimc.listing import render_listing
        from cimc.program import Program
        program = Program.load(path)
        if args.ir:
            _print_graph(program.graph(), args.format)
        elif args.schedule:
            print(json.dumps(schedule_views.schedule_json(program), indent=2) if args.format == "json"
                  else schedule_views.render_dot(program) if args.format == "dot"
                  else schedule_views.render_html(program) if args.format == "html"
                  else schedule_views.render_text(program))
        else:
            if args.format in ("dot", "html"):
                raise CimcError(f"the listing prints as text or json; {args.format} is for --schedule "
                                f"(or dot for --ir)")
            if args.format == "json":
                print(json.dumps({"manifest": program.manifest, "report": program.report,
                                  "crossbars": program.crossbars, "tiles": program.tiles}, indent=2))
            else:
                print(render_listing(program), end="")
        return
    if args.schedule or args.program:
        raise CimcError(f"{path} is a model: --schedule and --program need a compiled .cimp program")
    from cimc.frontend import import_onnx
    graph = import_onnx(path, args.input_shape, memory_check=False).graph   # inspecting allocates nothing
    _print_graph(graph, args.format)


def _cmd_targets(args: argparse.Namespace) -> None:
    from cimc.targets import load_target, preset_names, preset_text
    if args.name:
        if args.name not in preset_names():
            raise CimcError(f"no preset named {args.name!r}; presets: {', '.join(preset_names())}")
        print(preset_text(args.name), end="")
        return
    for name in preset_names():
        t = load_target(name)
        print(f"{name:<10} {t.description}")


def _cmd_multipliers(args: argparse.Namespace) -> None:
    from cimc.runtime.multipliers import DOMAINS, STANDARD_NAMES, characterize, format_table, get_multiplier
    names = args.names or ([] if args.table else list(STANDARD_NAMES))
    if args.table and "table" not in names:
        names.append("table")
    mults = [get_multiplier(name, args.table if name == "table" else None) for name in names]
    print(format_table([(m, {d: characterize(m, d) for d in DOMAINS}) for m in mults]), end="")
    print("\nrelative error (approx - exact) / exact over every operand pair; mean = mean |error|, bias = mean "
          "error,\nexact = fraction of exact products; bf16: significands 128..255 (16,384 pairs); int8: "
          "sign-magnitude,\nthe 65,025 signed pairs with a nonzero product")


def _cmd_sweep(args: argparse.Namespace) -> None:
    import cimc
    table = cimc.sweep(args.spec, args.output, executor=args.executor, workers=args.workers, address=args.address)
    print(f"sweep {table.name}: {table.summary}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"compile": _cmd_compile, "run": _cmd_run, "inspect": _cmd_inspect, "targets": _cmd_targets,
         "multipliers": _cmd_multipliers, "prune": _cmd_prune, "sweep": _cmd_sweep}[args.command](args)
    except CimcError as exc:
        print(f"cimc: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        sys.stderr.close()           # `cimc inspect ... | head` closed the pipe: not an error
        return 0
    except KeyboardInterrupt:
        print("cimc: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in cimc, not the user's fault
        if os.environ.get("CIMC_DEBUG"):
            traceback.print_exc()
        print(f"cimc: internal error: {type(exc).__name__}: {exc} (this is a bug in cimc; rerun with "
              f"CIMC_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
