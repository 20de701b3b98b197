"""How many copies of each layer to program: weight duplication within the crossbar budget.

A layer's copies each hold its whole matrix and compute different sets at once,
so a layer with w cycles of crossbar work on c copies needs about w / c. The
greedy rule of CLSA-CIM and of PIMCOMP's balance heuristic gives one more copy
to the layer with the most work per copy (the pipeline's bottleneck) while its
copy still fits the chip, and skips a layer whose copy does not fit. A layer
never gets more copies than it has sets. ``cpsat`` starts its local search over
copy counts from here.

A model run in segments is duplicated segment by segment: the copies of a
segment's layers take the crossbars its first copies leave free (each segment is
programmed whole, copies included, in the time of its longest crossbar write, so
copies cost write energy but no write time).
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import Callable

from cimc.passes.mapping import crossbars_spanned, first_crossbars, placement_order
from cimc.passes.schedule.problem import Problem


def layer_work(problem: Problem) -> dict[str, int]:
    """Crossbar-busy cycles of each layer's sets on one copy."""
    work: dict[str, int] = {}
    for opts in problem.options:
        if opts[0].kind == "mvm":
            work[opts[0].node] = work.get(opts[0].node, 0) + opts[0].compute
    return work


def fits(sizes: dict[str, int], copies: dict[str, int], names: list[str], per_tile: int, available: int) -> bool:
    """Whether the copies of ``names`` (one segment's layers) place on the chip with every first
    copy where it is without them."""
    spanned = crossbars_spanned([sizes[n] for n, _ in placement_order(names, copies)], per_tile)
    return spanned <= available


def greedy_copies(problem: Problem, per_tile: int) -> dict[str, int]:
    """Copies per layer by the bottleneck rule (``problem``: the model mapped once). The layers
    of a segment whose first copies only fit the chip packed across tiles get none."""
    mapping = problem.mapping
    copies = {name: 1 for name in mapping.layers}
    sizes = mapping.copy_sizes()
    segment_of = {n: names for names in mapping.segment_layers() for n in names}
    work, sets = layer_work(problem), problem.layer_sets()
    heap = [(-work[name], name) for name in copies if sets[name] > 1 and work.get(name)
            and fits(sizes, copies, segment_of[name], per_tile, mapping.crossbars_available)]
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        copies[name] += 1
        if not fits(sizes, copies, segment_of[name], per_tile, mapping.crossbars_available):
            copies[name] -= 1              # this layer's copy does not fit: leave it, try the next
            continue
        if copies[name] < sets[name]:
            heapq.heappush(heap, (-work[name] / copies[name], name))
    return copies


def surrogate(problem: Problem, copies: dict[str, int], per_tile: int) -> Problem:
    """The problem of a model mapped once (``problem``) as if each layer had ``copies[layer]``
    copies: each copy timed like the first, on the home tile it would be placed on, and vector
    sets on the tiles their inputs would be written on. What the local search schedules to compare
    copy counts without mapping every candidate (placement changes only the small transfer and
    reduction times, which stay those of the first copy, its partial sums' links moved with its home
    tile)."""
    sizes = problem.mapping.copy_sizes()
    home: dict[tuple[str, int], int] = {}
    for names in problem.mapping.segment_layers():
        sequence = placement_order(names, copies)
        home.update((key, first // per_tile)
                    for key, first in zip(sequence, first_crossbars([sizes[n] for n, _ in sequence], per_tile, True)))
    graph = problem.graph
    places: dict[str, tuple[int, ...]] = {}
    for node in graph.nodes():
        places[node.outputs[0]] = (tuple(dict.fromkeys(home[(node.name, c)] for c in range(copies.get(node.name, 1))))
                                   if node.is_crossbar else
                                   next((places[t] for t in node.inputs if t in places), (0,)))
    options = []
    for opts in problem.options:
        o = opts[0]
        tiles = places[graph.node(o.node).outputs[0]]
        if o.kind == "vec":
            options.append([replace(o, tile=t, resources=(f"gpeu:{t}",)) for t in tiles])
        else:
            chip = problem.cost.target.chip.tiles
            options.append([replace(o, copy=c, tile=home[(o.node, c)],
                                    reductions=tuple(((t - o.tile + home[(o.node, c)]) % chip, cycles)
                                                     for t, cycles in o.reductions))
                            for c in range(copies.get(o.node, 1))])
    return replace(problem, options=options)


def improve_copies(copies: dict[str, int], work: dict[str, int], sets: dict[str, int],
                   sizes: dict[str, int], segments: list[list[str]], per_tile: int, available: int,
                   evaluate: "Callable[[dict[str, int]], int]", evaluations: int) -> tuple[dict[str, int], int]:
    """Local search over copy counts from ``copies``: move crossbars from the layers that lose
    least by giving up a copy to the layers with the most work per copy (of the same segment:
    only they share its crossbars), keeping a move when ``evaluate`` (the makespan of a schedule
    under those counts) improves. The first ``width`` candidates on each side are tried; when
    none improves, twice as many (the bottleneck by work per copy is not always the layer on the
    schedule's critical path). Returns the best counts and their makespan; stops when no move of
    any width improves or after ``evaluations`` calls of ``evaluate`` (a count, not a time, so
    the result does not depend on the machine)."""
    segment = {n: s for s, names in enumerate(segments) for n in names}
    best, best_span = dict(copies), evaluate(copies)
    spent, width = 1, 3
    while spent < evaluations:
        receivers = sorted((n for n in best if best[n] < sets[n] and work.get(n)),
                           key=lambda n: (-work[n] / best[n], n))
        donors = sorted((n for n in best if best[n] > 1), key=lambda n: (work.get(n, 0) / (best[n] - 1), n))
        moved = False
        for take in receivers[:width]:
            names = segments[segment[take]]
            for give in [None] + [d for d in donors if segment[d] == segment[take]][:width]:
                if give == take:
                    continue
                trial = dict(best)
                trial[take] += 1
                while give is not None and trial[give] > 1 and not fits(sizes, trial, names, per_tile, available):
                    trial[give] -= 1
                if not fits(sizes, trial, names, per_tile, available):
                    continue
                span = evaluate(trial)
                spent += 1
                if span < best_span:
                    best, best_span, moved = trial, span, True
                    break
                if spent >= evaluations:
                    return best, best_span
            if moved:
                break
        if moved:
            width = 3
        elif width >= max(len(receivers), len(donors)):
            break                                   # a local optimum for every width
        else:
            width *= 2
    return best, best_span
