"""Human-readable output of every command: result records -> tables and lines of text.

One rule for every table: on a terminal it is a rich table that fits the terminal's
width (numbers never wrap or get cut; only names and details fold); piped into a
file or another program (not a TTY) it is plain text, one line per row with aligned
columns and no width limit, so ``| grep`` and ``| less`` see every row whole. Every
number carries its unit in the column header or next to it.

Nothing here computes a result: the records come from :mod:`partitiontuner.results`,
the executor, the exporter and the evaluator; the ``--json`` output is their
``to_dict()``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from partitiontuner.calibrate import cost_model_of

PROG = "partitiontuner"


def console(stderr: bool = False) -> Console:
    """The console every command prints to: no syntax highlighting; lines wrap at word
    boundaries on a terminal and never when piped (a pipe has no width)."""
    con = Console(stderr=stderr, highlight=False)
    con.soft_wrap = not con.is_terminal
    return con


def note(message: str, kind: str = "note") -> None:
    """One line on stderr: ``partitiontuner: note: ...`` (or ``warning``)."""
    print(f"{PROG}: {kind}: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------
# tables


@dataclass(frozen=True)
class Column:
    """A table column.

    Attributes:
        header: the column title, with the unit when it holds numbers (``start us``).
        numeric: right-aligned.
        wide: the one column that folds when the terminal is narrow (a detail or a
            description); every other column keeps its full width, so numbers and
            names are never cut.
    """

    header: str
    numeric: bool = False
    wide: bool = False


def table(con: Console, title: str, columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> None:
    """Print a table: rich on a terminal, aligned plain text otherwise.

    On a terminal too narrow for the whole table, the borders shrink and the ``wide``
    column folds; when even the other columns do not fit, the rows are printed as
    plain text (the terminal wraps them; nothing is cut).
    """
    rows = [list(r) for r in rows]
    widths = [max([len(c.header)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    if not con.is_terminal:
        con.out(plain_table(title, columns, rows), highlight=False)
        return
    full = sum(widths) + 3 * len(columns) + 1
    narrow = sum(w for w, c in zip(widths, columns, strict=True) if not c.wide) + 2 * len(columns)
    if full > con.width and narrow + 16 > con.width:
        con.out(plain_table(title, columns, rows), highlight=False)
        return
    t = Table(title=title, box=box.HEAVY_HEAD if full <= con.width else box.SIMPLE_HEAD,
              padding=(0, 1), expand=full > con.width)
    for c, w in zip(columns, widths, strict=True):
        if c.wide:
            t.add_column(c.header, justify="right" if c.numeric else "left", overflow="fold", ratio=1)
        else:
            t.add_column(c.header, justify="right" if c.numeric else "left", no_wrap=True, min_width=w)
    for r in rows:
        t.add_row(*r)
    con.print(t)


def plain_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """``title``, a header line, a rule and one line per row; columns separated by two
    spaces, numbers right-aligned."""
    widths = [max([len(c.header)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        out = [cell.rjust(w) if c.numeric else cell.ljust(w) for c, w, cell in zip(columns, widths, cells, strict=True)]
        return "  ".join(out).rstrip()

    head = line([c.header for c in columns])
    return "\n".join([title, head, "-" * len(head), *(line(r) for r in rows)])


def markdown(con: Console, text: str) -> None:
    """Markdown rendered by rich when it fits the terminal, else the markdown source
    itself (which reads well as plain text and cuts nothing)."""
    if con.is_terminal and max(map(len, text.splitlines()), default=0) <= con.width:
        from rich.markdown import Markdown

        con.print(Markdown(text))
    else:
        con.out(text.rstrip("\n"), highlight=False)


def _us(v: float) -> str:
    return f"{v:,.1f}"


# ---------------------------------------------------------------------------------
# models / graph


def models(con: Console, rows: Sequence[Any]) -> None:
    """``models``: rows of :class:`partitiontuner.results.ModelInfo`."""
    cols = [Column("name"), Column("ops", True), Column("input shape"), Column("GFLOPs", True), Column("paper"),
            Column("RL split"), Column("description", wide=True)]
    table(con, "Built-in models", cols, [
        (r.name, str(r.num_ops), "x".join(map(str, r.input_shape)), f"{r.gflops:.3f}", "yes" if r.paper else "",
         r.rl_split, r.description) for r in rows])


def graph(con: Console, summary: Any) -> None:
    """``graph``: a :class:`partitiontuner.results.GraphSummary`."""
    g, s = summary.graph, summary.structure
    names = [n.name for n in g.nodes]
    con.print(f"[bold]{g.name}[/bold]  {g.num_ops} ops, {len(g.edges)} edges, {g.total_flops / 1e9:.3f} GFLOPs, "
              f"inputs {', '.join(t.name + ' ' + 'x'.join(map(str, t.shape)) for t in g.inputs)}")
    counts = Counter(n.op_type for n in g.nodes)
    rows = []
    for op_type, k in counts.most_common():
        fl = sum(n.flops for n in g.nodes if n.op_type == op_type)
        wb = sum(n.weight_bytes for n in g.nodes if n.op_type == op_type)
        rows.append((op_type, str(k), f"{fl / 1e9:.4f}", f"{wb / 2**20:.2f}"))
    table(con, "Ops by type", [Column("op type"), Column("count", True), Column("GFLOPs", True),
                               Column("weights MiB", True)], rows)
    big = max(s.blocks, key=lambda b: len(b.ops))
    con.print(f"{len(s.cut_vertices)} cut vertices, {len(s.blocks)} blocks; largest block {len(big.ops)} ops "
              f"(ending at {names[big.cut] if big.cut is not None else 'the outputs'}); "
              f"max parallel width {s.max_parallel_width}")
    multi = [b for b in s.blocks if len(b.branches) > 1]
    if multi:
        table(con, "Blocks with parallel branches",
              [Column("block", True), Column("ops", True), Column("width", True),
               Column("branches (first op .. last op, length)", wide=True)],
              [(str(b.index), str(len(b.ops)), str(b.width),
                "; ".join(f"{names[br[0]]}..{names[br[-1]]} ({len(br)})" for br in b.branches)) for b in multi])
    con.print(f"{len(s.sequential_branches)} sequential branches; longest "
              f"{max(len(b) for b in s.sequential_branches)} ops")


# ---------------------------------------------------------------------------------
# plan / simulate


def partitions(con: Console, report: Any) -> None:
    """The partition table of a :class:`partitiontuner.report.PlacementReport`."""
    rows = []
    for p in report.partitions:
        span = p.ops[0] if len(p.ops) == 1 else f"{p.ops[0]} .. {p.ops[-1]}"
        par = ",".join(map(str, p.parallel_with[:6])) + ("..." if len(p.parallel_with) > 6 else "")
        rows.append((str(p.index), p.device, str(len(p.ops)), span, _us(p.start_us), _us(p.end_us),
                     _us(p.predicted_us), par))
    table(con, "Partitions", [Column("id", True), Column("PU"), Column("ops", True), Column("first .. last op"),
                              Column("start us", True), Column("end us", True), Column("time us", True),
                              Column("parallel with", wide=True)], rows)


def reason_detail(o: Any) -> str:
    """The ``detail`` of one op's placement in words, every number with its unit."""
    d = o.detail
    if o.reason == "cost":
        lat = ", ".join(f"{k} {v:,.1f} us" if v is not None else f"{k} -" for k, v in d["latency_us"].items())
        avoided, alt = d["transfer_avoided_us"], d.get("alternative")
        if alt is None or avoided == 0:
            moves = "no transfer difference" if alt is not None else "no alternative PU"
        elif avoided > 0:
            moves = f"avoids {avoided:,.1f} us of transfers vs {alt}"
        else:
            moves = f"costs {-avoided:,.1f} us more transfer than {alt}"
        text = f"{lat}; {moves}"
    elif o.reason in ("unsupported", "forbidden"):
        text = "; ".join(f"{k}: {v}" for k, v in d["excluded_by"].items())
    elif o.reason == "pinned":
        text = str(d["rule"])
    else:
        text = (f"faster on {d['faster_pu']}, which has {d['capacity_mib']} MiB and would need "
                f"{d['needed_extra_mib']} MiB more")
    if o.fallback is not None and o.reason != "unsupported":
        text += f"; no NPU can run {o.fallback}"
    return text


def placement(con: Console, report: Any) -> None:
    """``plan --report``: where every op runs and why."""
    table(con, "Placement report",
          [Column("op"), Column("type"), Column("PU"), Column("part", True), Column("start us", True),
           Column("end us", True), Column("reason"), Column("detail", wide=True)],
          [(o.op, o.op_type, o.device, str(o.partition), _us(o.start_us), _us(o.end_us), o.reason, reason_detail(o))
           for o in report.ops])


def plan(con: Console, result: Any, *, show_report: bool = False) -> None:
    """``plan``: a :class:`partitiontuner.results.PlanResult`."""
    problem, p, sim = result.problem, result.plan, result.sim
    partitions(con, result.report)
    if show_report:
        placement(con, result.report)
    busy = sim.busy_us()
    util = ", ".join(f"{pu} {100 * busy.get(pu, 0.0) / sim.makespan_us:.0f} %" for pu in problem.pus)
    con.print(f"[bold]{problem.graph.name}[/bold] on {problem.platform.name} with {p.method}: "
              f"makespan [bold]{sim.makespan_us:,.1f} us[/bold], {p.num_partitions} partitions, "
              f"planned in {result.planning_time_s:.3f} s (busy: {util}; profiles: {problem.profiles.source}; "
              f"{cost_model_of(problem)} cost model)")
    for key, unit in (("proven_optimal", ""), ("lower_bound_us", " us"), ("gap", "")):
        if key in p.info:
            con.print(f"  {key}: {p.info[key]}{unit}")
    if "policy_makespan_us" in p.info:
        con.print(rl_sources(p.info, sim.makespan_us), markup=False)
    written(con, result.files)


def rl_sources(info: Any, returned_us: float) -> str:
    """The RL planner's sources beside the returned makespan, so the policy's own
    result is always in view (``-``: that source did not run)."""
    def us(key: str) -> str:
        v = info.get(key)
        return "-" if v is None else f"{v:,.1f} us"

    heuristic = f"{us('heuristic_makespan_us')}" + (f" ({info['heuristic_method']})" if info.get("heuristic_method") else "")
    return (f"  returned {returned_us:,.1f} us from {info.get('winner', 'policy')}; policy alone (greedy) "
            f"{us('policy_makespan_us')}, best sample {us('sampled_makespan_us')}, best heuristic {heuristic}, "
            f"search {us('search_makespan_us')}")


def written(con: Console, files: dict[str, str]) -> None:
    """Where each output file went (plan, Gantt chart, DOT graph)."""
    for kind, path in files.items():
        con.print(f"{kind} written to {path}", markup=False)


def simulation(con: Console, result: Any) -> None:
    """``simulate``: a :class:`partitiontuner.results.SimulationResult`."""
    partitions(con, result.report())
    g, sim = result.problem.graph, result.sim
    con.print(f"[bold]{g.name}[/bold] on {result.problem.platform.name}: makespan [bold]{sim.makespan_us:,.1f} us"
              f"[/bold], {result.plan.num_partitions} partitions, {len(sim.transfers)} transfers "
              f"({cost_model_of(result.problem)} cost model)")
    written(con, result.files)


# ---------------------------------------------------------------------------------
# profile


def profile(con: Console, result: Any) -> None:
    """``profile``: a :class:`partitiontuner.results.ProfileTable`."""
    problem, pus = result.problem, result.pus
    prof = problem.profiles

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}"

    table(con, f"{problem.graph.name} on {problem.platform.name}: op latency (us, {prof.source})",
          [Column("op"), Column("type"), *(Column(f"{pu} us", True) for pu in pus), Column("fastest")],
          [(o["name"], o["op_type"], *(cell(o["latency_us"][pu]) for pu in pus), o["fastest"]) for o in result.ops()])
    groups = result.groups()
    if groups:
        rows = []
        for grp in groups:
            cells = []
            for pu in pus:
                v, s = grp["latency_us"][pu], grp["sum_us"][pu]
                cells.append("-" if v is None else f"{v:,.1f} ({v / s:.2f}x)" if s else cell(v))
            rows.append((" > ".join(grp["ops"]), "-".join(grp["op_types"]), *cells))
        table(con, "op groups: latency (us) and ratio to the sum of their ops",
              [Column("ops", wide=True), Column("types"), *(Column(f"{pu} us", True) for pu in pus)], rows)
    totals = ", ".join(f"{pu} {v:,.0f} us" for pu, v in result.totals_us().items())
    con.print(f"{problem.graph.num_ops} ops, {len(groups)} groups; sum of supported op latencies: {totals}"
              + (f"; exported to {result.export}" if result.export else ""), markup=False)


# ---------------------------------------------------------------------------------
# run / export / evaluate


def execution(con: Console, res: Any) -> None:
    """``run``: a :class:`partitiontuner.execute.ExecutionResult`."""
    rows = []
    for q in res.partitions:
        ratio = f"{q.measured_us_median / q.simulated_us:.2f}" if q.simulated_us > 0 else "-"
        rows.append((str(q.index), q.device + ("*" if q.emulated else ""), str(len(q.ops)), _us(q.measured_start_us),
                     _us(q.simulated_start_us), _us(q.measured_us_median), _us(q.simulated_us), ratio))
    table(con, f"{res.model} on {res.platform}: {res.method} (* = emulated)",
          [Column("id", True), Column("PU"), Column("ops", True), Column("start us", True),
           Column("pred. start us", True), Column("time us", True), Column("pred. time us", True),
           Column("ratio", True)], rows)
    con.print(f"makespan: measured [bold]{res.measured_makespan_us:,.1f} us[/bold] (median of {res.repeat}; "
              f"p10 {res.measured_p10_us:,.1f}, p90 {res.measured_p90_us:,.1f} us), simulated "
              f"[bold]{res.simulated_makespan_us:,.1f} us[/bold] ({res.cost_model} cost model), "
              f"measured/simulated {res.ratio:.3f}")
    verdict = "[green]match[/green]" if res.outputs_match else "[red]DO NOT match[/red]"
    con.print(f"outputs {verdict} the whole-model ONNX Runtime run (rtol {res.rtol:g}, atol {res.atol:g}; "
              f"max abs error {res.max_abs_error:.3g})")
    for line in res.notes:
        con.print(f"note: {line}", markup=False)
    for w in res.warnings:
        note(w, "warning")


def export(con: Console, res: Any) -> None:
    """``export``: a :class:`partitiontuner.export.ExportResult`."""
    m = res.manifest
    per_pu = ", ".join(f"{pu} {len(ids)}" for pu, ids in m["order"].items() if ids)
    con.print(f"exported {len(res.files)} partitions of {m['model']['name']} ({per_pu}) to {res.out_dir}/ "
              f"with manifest.json and manifest.yaml", markup=False)


def evaluation(con: Console, ev: Any, files: Sequence[Any], out_dir: str) -> None:
    """``evaluate``: the paper-style tables and where the files went."""
    from partitiontuner.evaluate import to_markdown

    markdown(con, to_markdown(ev))
    con.print(f"wrote {len(files)} files to {out_dir}/ (results.csv, results.md, makespan_vs_oracle.png, "
              "Gantt charts, plans)", markup=False)


# ---------------------------------------------------------------------------------
# fidelity: plan --tune, calibrate


def tuning(con: Console, tuned: Any) -> None:
    """``plan --tune``: predicted vs measured for every candidate, and the rank agreement."""
    rows = []
    for i, c in enumerate(tuned.candidates):
        m = c.measured
        rows.append((str(i), c.source, str(c.plan.num_partitions), _us(c.predicted_us), _us(m.measured_makespan_us),
                     _us(m.measured_p10_us), _us(m.measured_p90_us), f"{m.measured_makespan_us / c.predicted_us:.3f}",
                     "<- chosen" if i == tuned.chosen else ""))
    table(con, "--tune: candidates in predicted order",
          [Column("#", True), Column("source"), Column("parts", True), Column("predicted us", True),
           Column("measured us", True), Column("p10 us", True), Column("p90 us", True), Column("meas./pred.", True),
           Column("")], rows)
    tau = tuned.kendall_tau
    con.print(f"rank agreement predicted vs measured: Kendall tau {'n/a' if tau != tau else f'{tau:.2f}'} over "
              f"{len(tuned.candidates)} plans; returning {tuned.best.source} (measured fastest)")
    for w in dict.fromkeys(w for c in tuned.candidates for w in c.measured.warnings if "loaded" in w):
        note(w, "warning")


def calibration(con: Console, cal: Any, path: Any) -> None:
    """``calibrate``: the fitted parameters and the error before and after."""
    rows = []
    for pu, v in cal.launch_us.items():
        rows.append((f"{pu} launch per partition", f"{v:.1f} us", str(cal.launch_samples.get(pu, ""))))
        rows.append((f"{pu} work scale", f"x{cal.work_scale.get(pu, 1.0):.3f}", ""))
    for (a, b), f in cal.links.items():
        rows.append((f"{a}->{b} latency / bandwidth",
                     f"{f.latency_us:.1f} us / {1 / max(f.us_per_byte, 1e-12) / 1000:.2f} GB/s", str(f.samples)))
    table(con, f"calibration of {cal.platform} on this host ({cal.plans} plans, {cal.seconds:.0f} s)",
          [Column("parameter"), Column("fitted", True), Column("samples", True)], rows)
    con.print(f"median |simulated / measured - 1| on the microbenchmarks: {100 * (cal.error_before or 0):.1f} % "
              f"uncalibrated, {100 * (cal.error_after or 0):.1f} % calibrated")
    con.print(f"written to {path}; used from now on with measured profiles (--no-calibration to opt out)", markup=False)
