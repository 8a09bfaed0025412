"""Pictures of a plan: a Gantt chart of its simulated timing, and a Graphviz DOT
drawing of the partitioned graph (the idea of NEST-C's partition DAG dump).

Both are pure functions of (problem, plan[, timing]) plus an atomic write. The Gantt
chart uses matplotlib's object API (a ``Figure`` on an Agg canvas; SVG goes through
matplotlib's SVG writer), so it never touches pyplot's global state or needs a display.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from partitiontuner.atomic import write_atomic, write_text_atomic
from partitiontuner.errors import ConfigError
from partitiontuner.plan import Plan, validate_plan
from partitiontuner.problem import Problem
from partitiontuner.simulate import SimResult

#: one colour per PU, in platform order (matplotlib's tab10)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: light tints of the same colours, for DOT cluster backgrounds
TINTS = ("#dbe8f4", "#ffe8d4", "#dcf0dc", "#f6d9d9", "#e9e1f1", "#e8dedb", "#f9e2f3", "#e8e8e8", "#f1f1d3", "#d3f1f4")
GANTT_FORMATS = ("png", "svg")


def pu_color(problem: Problem, device: str) -> str:
    return PALETTE[problem.pus.index(device) % len(PALETTE)]


def main_op_types(problem: Problem, ops: tuple[int, ...], k: int = 2) -> str:
    """The ``k`` most frequent op types of a partition (ties: most FLOPs), e.g. ``Conv+Relu``."""
    nodes = problem.graph.nodes
    count = Counter(nodes[v].op_type for v in ops)
    flops = Counter()
    for v in ops:
        flops[nodes[v].op_type] += nodes[v].flops
    top = sorted(count, key=lambda t: (-count[t], -flops[t], t))[:k]
    return "+".join(top) + ("+..." if len(count) > k else "")


# ---------------------------------------------------------------------------------
# Gantt chart


def gantt_format(path: str | Path) -> str:
    """``png`` or ``svg`` from the file suffix (checked before any long work).

    Raises:
        ConfigError: any other suffix.
    """
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in GANTT_FORMATS:
        raise ConfigError(f"Gantt chart {path}: unsupported format {fmt!r}; use .png or .svg")
    return fmt


def gantt_chart(problem: Problem, plan: Plan, sim: SimResult, path: str | Path | None, title: str | None = None) -> Figure:
    """Draw the simulated timing of ``plan``: one lane per PU, then one per link
    direction that carries a transfer; write it to ``path`` (PNG or SVG by suffix).

    Partitions are labelled ``P<id> <main op types>`` when the bar is wide enough,
    ``P<id>`` when only that fits, and not at all otherwise (readable with 100+
    partitions); the makespan is a dashed line.

    Args:
        problem: the problem the plan was made for.
        plan: the plan (for op types and devices).
        sim: :func:`partitiontuner.simulate.simulate` of the plan.
        path: ``.png`` or ``.svg`` file, written atomically; ``None`` = do not write.
        title: figure title (default: model, platform, method, makespan).

    Returns:
        The figure (for inspection; nothing global holds it).

    Raises:
        ConfigError: an unsupported file suffix, or ``sim`` not of this plan.
    """
    fmt = gantt_format(path) if path is not None else None
    if len(sim.partitions) != plan.num_partitions or any(
        t.device != p.device for t, p in zip(sim.partitions, plan.partitions, strict=True)
    ):
        raise ConfigError("the timing given to gantt_chart is not the simulation of this plan")
    pus = list(problem.pus)
    links = sorted({(x.src_device, x.dst_device) for x in sim.transfers}, key=lambda ab: (pus.index(ab[0]), pus.index(ab[1])))
    lanes = pus + [f"{a}\u2192{b}" for a, b in links]
    lane_of = {pu: i for i, pu in enumerate(pus)} | {ab: len(pus) + i for i, ab in enumerate(links)}

    makespan = sim.makespan_us
    scale, unit = (1e-3, "ms") if makespan >= 10_000 else (1.0, "us")
    # fixed margins (inches) so the axes width, hence each bar's width in pixels, is
    # known before drawing: it decides which labels fit
    width_in, dpi = 13.0, 110
    left_in, right_in, top_in, bottom_in = 1.2, 0.3, 0.55, 1.0
    height_in = top_in + bottom_in + 0.5 * len(lanes) + 0.2
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)  # the Agg canvas, whatever pyplot's backend is
    fig.subplots_adjust(left=left_in / width_in, right=1 - right_in / width_in, top=1 - top_in / height_in,
                        bottom=bottom_in / height_in)
    ax = fig.add_subplot()
    ax.set_xlim(0, makespan * scale * 1.02 or 1.0)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_xlabel(f"time ({unit})")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)

    px_per_unit = (width_in - left_in - right_in) * dpi / (ax.get_xlim()[1] - ax.get_xlim()[0])
    fontsize = 7.0
    char_px = 0.62 * fontsize * dpi / 72.0

    def fits(text: str, bar_px: float) -> bool:
        return len(text) * char_px + 4.0 <= bar_px

    for t, p in zip(sim.partitions, plan.partitions, strict=True):
        y = lane_of[t.device]
        x0, w = t.start_us * scale, (t.end_us - t.start_us) * scale
        bar_px = w * px_per_unit
        ax.barh(y, w, left=x0, height=0.62, color=pu_color(problem, t.device), edgecolor="white",
                linewidth=0.6 if bar_px > 4 else 0.0)
        for label in (f"P{t.index} {main_op_types(problem, p.ops)}", f"P{t.index} {main_op_types(problem, p.ops, 1)}", f"P{t.index}"):
            if fits(label, bar_px):
                ax.text(x0 + w / 2, y, label, ha="center", va="center", fontsize=fontsize, color="white", clip_on=True)
                break
    for x in sim.transfers:
        y = lane_of[(x.src_device, x.dst_device)]
        ax.barh(y, (x.end_us - x.start_us) * scale, left=x.start_us * scale, height=0.4,
                color=pu_color(problem, x.src_device), alpha=0.45, hatch="///", edgecolor="black", linewidth=0.3)
    ax.axvline(makespan * scale, color="black", linestyle="--", linewidth=1.2)
    ax.text(makespan * scale, -0.5, f" makespan {makespan * scale:,.1f} {unit}", ha="right", va="bottom", fontsize=8)

    used = [pu for pu in pus if any(p.device == pu for p in plan.partitions)]
    handles = [Patch(color=pu_color(problem, pu), label=f"{pu} partition") for pu in used]
    if links:
        handles.append(Patch(facecolor="#bbbbbb", hatch="///", edgecolor="black", label="transfer (coloured by source)"))
    handles.append(Line2D([0], [0], color="black", linestyle="--", label="makespan"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    ax.set_title(title or f"{problem.graph.name} on {problem.platform.name}: {plan.method} "
                 f"({plan.num_partitions} partitions, makespan {makespan * scale:,.1f} {unit})", fontsize=10)
    if path is not None:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt))
    return fig


# ---------------------------------------------------------------------------------
# Graphviz DOT


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _size(n: int) -> str:
    for unit, k in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def plan_to_dot(problem: Problem, plan: Plan) -> str:
    """The partitioned graph in Graphviz DOT: one cluster per partition, filled with
    its PU's colour; ops as boxes, graph inputs and outputs as ellipses; edges that
    cross PUs are bold, in the source PU's colour, and labelled with the tensor size.

    Raises:
        InfeasiblePlanError: the plan is not valid for ``problem``.
    """
    validate_plan(problem, plan, check_constraints=False)
    g = problem.graph
    owner = {v: i for i, p in enumerate(plan.partitions) for v in p.ops}
    device = {v: plan.partitions[i].device for v, i in owner.items()}
    host = problem.pus[problem.host]

    def op_id(v: int) -> str:
        return _q(f"op:{g.nodes[v].name}")

    lines = [
        f"digraph {_q(g.name)} {{",
        f"  graph [rankdir=TB, compound=true, fontname=Helvetica, labelloc=t, "
        f"label={_q(f'{g.name} on {problem.platform.name}: {plan.method} ({plan.num_partitions} partitions)')}];",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica, fontsize=10];',
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    pu_legend = ", ".join(f"{pu}: {pu_color(problem, pu)}" for pu in problem.pus)
    lines.append(f"  // PU colours: {pu_legend}")
    for t in g.inputs:
        lines.append(f"  {_q('in:' + t.name)} [shape=ellipse, label={_q(t.name + chr(10) + 'x'.join(map(str, t.shape)))}];")
    for i, p in enumerate(plan.partitions):
        k = problem.pus.index(p.device) % len(PALETTE)
        lines.append(f"  subgraph {_q(f'cluster_p{i}')} {{")
        lines.append(f"    label={_q(f'P{i} {p.device} ({len(p.ops)} ops)')}; style=\"filled,rounded\"; "
                     f"fillcolor={_q(TINTS[k])}; color={_q(PALETTE[k])}; penwidth=1.5;")
        for v in p.ops:
            n = g.nodes[v]
            lines.append(f"    {op_id(v)} [label={_q(n.name + chr(10) + n.op_type)}];")
        lines.append("  }")
    for t in g.outputs:
        lines.append(f"  {_q('out:' + t.name)} [shape=ellipse, label={_q(t.name + chr(10) + 'x'.join(map(str, t.shape)))}];")

    def edge(src: str, dst: str, src_dev: str, dst_dev: str, size: int) -> str:
        if src_dev == dst_dev:
            return f"  {src} -> {dst};"
        c = _q(pu_color(problem, src_dev))
        return f"  {src} -> {dst} [label={_q(_size(size))}, color={c}, fontcolor={c}, penwidth=2];"

    for t in g.inputs:
        for v in g.input_consumers[t.name]:
            lines.append(edge(_q("in:" + t.name), op_id(v), host, device[v], t.size_bytes))
    for e in g.edges:
        lines.append(edge(op_id(e.src), op_id(e.dst), device[e.src], device[e.dst], e.size_bytes))
    for t in g.outputs:
        v = g.output_producers[t.name]
        lines.append(edge(op_id(v), _q("out:" + t.name), device[v], host, t.size_bytes))
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot(problem: Problem, plan: Plan, path: str | Path) -> None:
    """Write :func:`plan_to_dot` to ``path`` atomically."""
    write_text_atomic(path, plan_to_dot(problem, plan))


# ---------------------------------------------------------------------------------
# evaluation chart


#: one fixed colour per planner, the same in every chart (seaborn's "deep" palette)
METHOD_COLORS = {
    "cpu-only": "#8c8c8c", "npu-first": "#dd8452", "greedy": "#55a868", "partitiontuner": "#c44e52",
    "heft": "#8172b3", "random": "#937860", "oracle": "#4c72b0", "rl": "#da8bc3",
}
_OTHER_COLORS = ("#ccb974", "#64b5cd", "#1b1b1b")


def method_color(method: str) -> str:
    """The colour of ``method`` in every chart (unknown methods: a stable extra colour)."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _OTHER_COLORS[sum(map(ord, method)) % len(_OTHER_COLORS)]


def bar_chart(evaluation, path: str | Path, zoom_max: float = 1.10) -> Figure:
    """Each method's makespan normalised to the oracle (or, without an oracle row, to the
    best method), per model, in two panels: every ratio on a log axis (nothing capped),
    and a linear zoom on ``1 .. zoom_max`` where the 1-5 % differences between good
    plans are visible (bars above it are cut, their value written on top). Each method
    keeps one colour in every chart (:data:`METHOD_COLORS`); an oracle that did not
    prove optimality is hatched and marked ``?`` (its ratio 1.0 is then only the best
    plan known). ``evaluation`` is an :class:`partitiontuner.evaluate.Evaluation`."""
    import numpy as np

    rows = evaluation.rows
    models = list(dict.fromkeys(r.model for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    has_oracle = "oracle" in methods
    values = np.full((len(models), len(methods)), np.nan)
    unproven = np.zeros(len(models), dtype=bool)
    for r in rows:
        i, j = models.index(r.model), methods.index(r.method)
        if has_oracle and r.ratio_to_oracle is not None:
            values[i, j] = r.ratio_to_oracle
        else:
            values[i, j] = r.makespan_us
        if r.method == "oracle" and r.oracle_proven is False:
            unproven[i] = True
    if not has_oracle:
        values = values / np.nanmin(values, axis=1, keepdims=True)
    fig = Figure(figsize=(max(8.0, 1.1 * len(models) + 2), 7.6), dpi=110)
    FigureCanvasAgg(fig)
    full, zoom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.3]})
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(models))
    lo = min(0.99, float(np.nanmin(values)) - 0.005) if np.isfinite(values).any() else 0.99
    for j, m in enumerate(methods):
        v = values[:, j]
        xs = x + (j - (len(methods) - 1) / 2) * width
        hatch = ["//" if m == "oracle" and unproven[i] else "" for i in range(len(models))]
        for ax, top in ((full, None), (zoom, zoom_max)):
            heights = v if top is None else np.minimum(v, top)
            bars = ax.bar(xs, heights - (lo if top is not None else 0), width, bottom=lo if top is not None else 0,
                          label=m if ax is full else None, color=method_color(m), edgecolor="white", linewidth=0.4)
            for bar, h in zip(bars, hatch, strict=True):
                if h:
                    bar.set_hatch(h)
                    bar.set_edgecolor("black")
        for i, val in enumerate(v):
            if np.isfinite(val) and val > zoom_max:
                zoom.text(xs[i], zoom_max, f"{val:.2f}", ha="center", va="bottom", fontsize=6, rotation=90)
            if m == "oracle" and unproven[i]:
                zoom.text(xs[i], min(val, zoom_max), "?", ha="center", va="bottom", fontsize=9, fontweight="bold")
    what = "makespan / oracle" if has_oracle else "makespan / best method"
    full.set_yscale("log")
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    ticks = [t for t in (1.0, 1.1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100, 1000) if t <= top * 1.05] or [1.0]
    full.set_yticks(ticks, [f"{t:g}x" for t in ticks])
    full.yaxis.set_minor_formatter(NullFormatter())
    full.set_ylabel(f"{what} (log)")
    full.axhline(1.0, color="black", linewidth=0.8)
    full.legend(ncol=min(len(methods), 8), fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False)
    zoom.set_ylim(lo, zoom_max)
    zoom.set_ylabel(f"{what} (zoom)")
    zoom.axhline(1.0, color="black", linewidth=0.8)
    zoom.grid(axis="y", alpha=0.3)
    zoom.set_xticks(x, models, rotation=30, ha="right")
    note = "; ? hatched = oracle not proven optimal (best plan known)" if unproven.any() else ""
    fig.suptitle(f"Plan quality on {evaluation.platform} (simulated; lower is better){note}", fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    return fig


# ---------------------------------------------------------------------------------
# measured vs simulated


def gantt_measured_vs_simulated(problem: Problem, plan: Plan, sim: SimResult, measured, path: str | Path | None,
                                title: str | None = None) -> Figure:
    """Two panels on one time axis: the measured median run (``measured``, an
    :class:`~partitiontuner.execute.ExecutionResult`) above, the simulation below; one
    lane per PU, hand-offs as hatched bars on the receiving PU's lane edge. The gap
    between a partition's two bars is where the cost model is wrong.

    Raises:
        ConfigError: an unsupported file suffix, or timings not of this plan.
    """
    fmt = None
    if path is not None:
        fmt = Path(path).suffix.lower().lstrip(".")
        if fmt not in GANTT_FORMATS:
            raise ConfigError(f"Gantt chart {path}: unsupported format {fmt!r}; use .png or .svg")
    if len(measured.partitions) != plan.num_partitions or len(sim.partitions) != plan.num_partitions:
        raise ConfigError("the timings given to gantt_measured_vs_simulated are not of this plan")
    pus = list(problem.pus)
    end = max(measured.measured_makespan_us, sim.makespan_us, *(q.measured_end_us for q in measured.partitions))
    scale, unit = (1e-3, "ms") if end >= 10_000 else (1.0, "us")
    fig = Figure(figsize=(13.0, 1.6 + 0.9 * len(pus)), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    panels = (
        ("measured (median run)", [(q.device, q.measured_start_us, q.measured_end_us) for q in measured.partitions],
         [(t.dst_device, t.start_us, t.end_us, t.src_device) for t in measured.transfers], measured.measured_makespan_us),
        (f"simulated ({measured.cost_model})", [(t.device, t.start_us, t.end_us) for t in sim.partitions],
         [(x.dst_device, x.start_us, x.end_us, x.src_device) for x in sim.transfers], sim.makespan_us),
    )
    for ax, (name, bars, moves, makespan) in zip(axes, panels, strict=True):
        for dev, s, e in bars:
            ax.barh(pus.index(dev), (e - s) * scale, left=s * scale, height=0.6, color=pu_color(problem, dev),
                    edgecolor="white", linewidth=0.4)
        for dev, s, e, src in moves:
            ax.barh(pus.index(dev) - 0.38, (e - s) * scale, left=s * scale, height=0.12, color=pu_color(problem, src),
                    alpha=0.5, hatch="///", linewidth=0)
        ax.axvline(makespan * scale, color="black", linestyle="--", linewidth=1.0)
        ax.set_yticks(range(len(pus)), pus)
        ax.set_ylim(len(pus) - 0.5, -0.6)
        ax.set_title(f"{name}: makespan {makespan * scale:,.1f} {unit}", fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[1].set_xlabel(f"time ({unit})")
    axes[1].set_xlim(0, end * scale * 1.02 or 1.0)
    fig.suptitle(title or f"{problem.graph.name} on {problem.platform.name}: {plan.method}, measured vs simulated "
                 f"(ratio {measured.ratio:.3f})", fontsize=10)
    fig.tight_layout()
    if path is not None:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt))
    return fig
