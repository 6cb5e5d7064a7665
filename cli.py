"""The `planner` command line: thin click commands over the planner package."""
from __future__ import annotations

import functools
import json
import math
import sys

import click

from planner import __version__
from planner.core.errors import PlannerError


def _fail(exc: PlannerError) -> None:
    click.echo(f"planner: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def handles_errors(fn):
    """Bad input -> one line on stderr and the contract's exit code, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PlannerError as exc:
            _fail(exc)
    return wrapper


def as_options(build):
    """Run `build`; an InputError about a field becomes one about the matching option."""
    from planner.core.errors import InputError

    try:
        return build()
    except InputError as exc:
        if exc.source is None and exc.field in ("size", "root", "traffic"):
            raise InputError(exc.message, field=f"--{exc.field}") from None
        raise


def _echo_json(doc) -> None:
    from planner.core.plan import dumps

    click.echo(dumps(doc), nl=False)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the human view.")
reproducible_option = click.option("--reproducible", is_flag=True,
                                   help="Write wall-clock fields as 0 so the same input gives the same bytes.")


class PlannerGroup(click.Group):
    """Usage errors in one line too (option and problem), exit 2, like every bad input."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as asked
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.UsageError as exc:
            click.echo(f"planner: error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("planner: aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            click.echo(f"planner: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=PlannerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="planner")
def main() -> None:
    """Optimization-based planner for GPU clusters."""


# ---------------------------------------------------------------- topology
@main.group()
def topology() -> None:
    """List, show, validate, import and export topologies."""


@topology.command("list")
@json_option
def topology_list(as_json: bool) -> None:
    """The server presets (use NAME or NAMExN for N servers on a rail-optimized fabric)."""
    from topologies.presets import SERVER_PRESETS

    rows = [{"name": p.name, "gpus": p.gpus, "summary": p.summary} for p in SERVER_PRESETS.values()]
    if as_json:
        _echo_json({"presets": rows})
        return
    for r in rows:
        click.echo(f"{r['name']:12s} {r['gpus']:3d} GPUs  {r['summary']}")
    click.echo("Use <preset>x<N> for N servers on a non-blocking rail-optimized fabric, e.g. hgx-h100x4.")


@topology.command("show")
@click.argument("topo")
@json_option
@handles_errors
def topology_show(topo: str, as_json: bool) -> None:
    """GPUs, servers, per-GPU bandwidth, bisection and the levels of TOPO.

    With --json: the explicit form (nodes, links; loads back as a description) plus a
    `summary` the loader ignores."""
    from topologies.io import load_topology, topology_to_dict
    from topologies.render import render_text, summary

    t = load_topology(topo)
    info = summary(t)
    if as_json:
        _echo_json({**topology_to_dict(t), "summary": info})
    else:
        click.echo(render_text(t, info))


@topology.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@handles_errors
def topology_validate(file: str, as_json: bool) -> None:
    """Check a topology description file; exit 2 with the first fault. Also says whether
    every GPU reaches every other over the paths collectives may use (if not, collectives
    on it are infeasible: exit 3)."""
    from topologies.dataplane import data_plane_gap
    from topologies.io import load_topology_file

    t = load_topology_file(file)
    gap = data_plane_gap(t)
    if as_json:
        _echo_json({"valid": True, "name": t.name, "gpus": t.num_gpus, "servers": len(t.servers),
                    "nodes": len(t.nodes), "links": len(t.links), "collectives_reach_every_gpu": gap is None})
        return
    click.echo(f"ok: {file}: {t.num_gpus} GPUs in {len(t.servers)} server(s), {len(t.nodes)} nodes, "
               f"{len(t.links)} directed links")
    if gap is not None:
        click.echo(f"note: {gap}: collectives on it are infeasible")


def _topology_text(t, fmt: str, server: int) -> str:
    import yaml

    from topologies.io import topology_to_dict
    from topologies.nccl_xml import export_nccl_xml

    if fmt == "nccl-xml":
        return export_nccl_xml(t, server)
    doc = topology_to_dict(t)
    if fmt == "json":
        return json.dumps(doc, indent=1) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)


@topology.command("import-nccl")
@click.argument("nccl_xml", type=click.Path(dir_okay=False))
@click.option("-o", "output", type=click.Path(dir_okay=False), help="Write the description here (.yaml or .json).")
@handles_errors
def topology_import_nccl(nccl_xml: str, output: str | None) -> None:
    """Read an NCCL topology XML (NCCL_TOPO_FILE format) into a topology description."""
    from planner.core.plan import write_text_atomic
    from topologies.io import validate_topology
    from topologies.nccl_xml import import_nccl_xml

    t = import_nccl_xml(nccl_xml)
    validate_topology(t, nccl_xml)
    fmt = "json" if output and output.endswith(".json") else "yaml"
    text = _topology_text(t, fmt, 0)
    if output:
        write_text_atomic(output, text)
        click.echo(f"wrote {output}: {t.num_gpus} GPUs, {len(t.nodes)} nodes, {len(t.links)} directed links")
    else:
        click.echo(text, nl=False)


@topology.command("export")
@click.argument("topo")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "nccl-xml"]), default="yaml", show_default=True)
@click.option("--server", default=0, show_default=True, help="Which server, for nccl-xml (one file per server).")
@click.option("-o", "output", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@handles_errors
def topology_export(topo: str, fmt: str, server: int, output: str | None) -> None:
    """Print TOPO in the explicit description form or as NCCL topology XML."""
    from planner.core.errors import InputError
    from planner.core.plan import write_text_atomic
    from topologies.io import load_topology

    t = load_topology(topo)
    if fmt == "nccl-xml" and server not in t.servers:
        raise InputError(f"no server {server} (servers: 0..{len(t.servers) - 1})", field="--server")
    text = _topology_text(t, fmt, server)
    if output:
        write_text_atomic(output, text)
    else:
        click.echo(text, nl=False)


# ---------------------------------------------------------------- planning commands
class RegistryChoice(click.Choice):
    """A click.Choice read from a registry when first needed: the registries import the
    solvers, which the other commands do without."""

    def __init__(self, read):
        self._read = read
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._read())

    @choices.setter
    def choices(self, value) -> None:  # click's __init__ assigns the (empty) tuple
        pass


def _collectives() -> tuple[str, ...]:
    from planner.core.collectives import COLLECTIVES

    return COLLECTIVES


def _kind(name: str):
    from planner.kinds import KINDS

    return KINDS[name]


def _union(kinds: tuple[str, ...], attr: str) -> tuple[str, ...]:
    out: list[str] = []
    for k in kinds:
        out += [x for x in getattr(_kind(k), attr) if x not in out]
    return tuple(out)


def plan_options(kind: str | tuple[str, ...], doc: str, time_limit_help: str, export_help: str):
    """The options every planning command shares, with --method and --export read from the
    kind's registry (a command whose input picks one of several kinds offers them all)."""
    kinds = (kind,) if isinstance(kind, str) else kind

    def decorate(fn):
        for option in reversed((
            click.option("--method", default="auto", show_default=True, type=RegistryChoice(
                lambda: _union(kinds, "method_names")), help=f"auto or a registered method ({doc})."),
            click.option("--time-limit", type=float, default=60.0, show_default=True, help=time_limit_help),
            click.option("--solver", default=None, help="Solver backend for exact methods (see `planner solvers`)."),
            click.option("-o", "output", type=click.Path(dir_okay=False), help="Write the plan JSON here."),
            click.option("--export", "export_fmt", type=RegistryChoice(lambda: _union(kinds, "exports")), default=None,
                         help=f"{export_help} (needs --export-file)."),
            click.option("--export-file", type=click.Path(dir_okay=False), default=None,
                         help="Where --export writes; written only after it parses back to the same plan."),
            json_option,
            reproducible_option,
        )):
            fn = option(fn)
        return fn
    return decorate


def check_plan_options(time_limit: float, export_fmt: str | None, export_file: str | None,
                       solver: str | None) -> None:
    """Before any work: a positive time limit, --export with --export-file, a known solver."""
    from planner.core.errors import InputError

    if not (math.isfinite(time_limit) and time_limit > 0):
        raise InputError("must be a positive number of seconds", field="--time-limit")
    if bool(export_fmt) != bool(export_file):
        raise InputError("--export and --export-file go together", field="--export-file" if export_fmt else "--export")
    if solver is not None:
        from solvers.registry import get

        try:
            get(solver)  # unknown or unavailable names fail here, before any work
        except Exception as exc:  # the registry's UnknownSolver lists the available names
            raise InputError(str(exc), field="--solver") from None


def run_plan(kind: str, problem, method: str, time_limit: float, solver: str | None, output: str | None,
             export_fmt: str | None, export_file: str | None, as_json: bool, reproducible: bool, headline) -> None:
    """The one output path of every planning command: plan, write -o and --export-file,
    then --json or the human view (`headline(doc)` lines, then what every plan says)."""
    from planner.core.plan import dumps, write_plan, write_text_atomic
    from planner.kind import Options
    from planner.search import plan

    result = plan(_kind(kind), problem, method, Options(time_limit, solver, export_fmt))
    doc = result.plan.to_json(reproducible)
    if output:
        write_plan(result.plan, output, reproducible)
    if result.exported is not None:
        write_text_atomic(export_file, result.exported, field="--export-file")
    if as_json:
        click.echo(dumps(doc), nl=False)
        return
    for line in headline(doc):
        click.echo(line)
    attempt = doc["solver"] or doc["metrics"].get("milp_model", {}).get("solver")
    if attempt:
        gap = "-" if attempt["gap"] is None else f"{attempt['gap']:.3g}"
        whose = "solver" if doc["solver"] else "the exact method's solver (its plan lost)"
        click.echo(f"  {whose} {attempt['name']}: {attempt['status']}, gap {gap}, {attempt['seconds']:.2f} s"
                   + (f", {attempt['limit']} limit hit" if attempt.get("limit") else ""))
    if doc["fallback"]:
        click.echo(f"  fallback: {doc['fallback']}")
    for name, why in sorted(doc["metrics"].get("skipped", {}).items()):
        click.echo(f"  not used: {name} ({why})")
    if output:
        click.echo(f"  plan written to {output}")
    if result.exported is not None:
        click.echo(f"  {export_fmt} written to {export_file} ({_kind(kind).export_check})")


# ---------------------------------------------------------------- collective
@main.command()
@click.argument("coll", type=RegistryChoice(_collectives))
@click.option("--topology", "topo", required=True, help="Preset, <preset>x<N>, or a description file.")
@click.option("--size", default=None, help="Bytes, with an optional unit: 4096, 64KiB, 1MiB, 1GiB.")
@click.option("--traffic", type=click.Path(dir_okay=False), help="alltoallv: GxG byte matrix (JSON, CSV, NPY), or a generator with --size: "
                   "zipf:s=1.2,seed=0 | hotspot:gpus=2,share=0.5 | uniform (docs/traffic.md).")
@click.option("--root", default=0, show_default=True, help="Root rank of broadcast / reduce.")
@plan_options("collective", "docs/collectives.md", "Seconds for exact methods.",
              "Also write the schedule for a runtime")
@handles_errors
def collective(coll, topo, size, traffic, root, method, time_limit, solver, output, export_fmt, export_file,
               as_json, reproducible):
    """Plan a collective COLL on a topology; verified by the simulator.

    With --export FMT --export-file F the verified schedule is written for a runtime: it is
    exported, parsed back, re-simulated, and written only when the data movement and the
    time are the same (else exit 1 with the reason)."""
    from planner.core.collectives import Collective
    from planner.core.errors import InputError
    from planner.core.traffic import is_generator, load_traffic, traffic_from_spec
    from planner.core.units import parse_size
    from planner.kinds.collective import collective_problem
    from topologies.io import load_topology

    check_plan_options(time_limit, export_fmt, export_file, solver)
    t = load_topology(topo)
    matrix = None
    if coll == "alltoallv":
        if not traffic:
            raise InputError("alltoallv needs --traffic FILE or a generator (e.g. zipf:s=1.2)", field="--traffic")
        if is_generator(traffic):
            if size is None:
                raise InputError("a traffic generator needs --size (the bytes each GPU sends)", field="--size")
            matrix = traffic_from_spec(traffic, t.num_gpus, parse_size(size, field="--size"))
        else:
            if size is not None:
                raise InputError("alltoallv takes its sizes from --traffic, not --size", field="--size")
            matrix = load_traffic(traffic, t.num_gpus)
        nbytes = 1  # the collective takes its size from the matrix
    else:
        if traffic:
            raise InputError(f"--traffic is for alltoallv, not {coll}", field="--traffic")
        if size is None:
            raise InputError("missing --size (e.g. 1GiB)", field="--size")
        nbytes = parse_size(size, field="--size")
    c = as_options(lambda: Collective(coll, t.num_gpus, nbytes, root=root, traffic=matrix).require_whole_blocks())
    run_plan("collective", collective_problem(c, t, topo), method, time_limit, solver, output, export_fmt, export_file,
             as_json, reproducible, _collective_headline)


def _collective_headline(doc: dict) -> list[str]:
    m, p = doc["metrics"], doc["problem"]
    return [f"{p['collective']} of {p['size_bytes']} bytes on {p['topology']} ({p['gpus']} GPUs): "
            f"method {doc['method']}",
            f"  time {m['time_us']:.2f} us   algbw {m['algbw_GBps']:.2f} GB/s   "
            f"bound {m['lower_bound_us']:.2f} us   ratio to bound {m['ratio_to_bound']:.3f}",
            f"  {m['transfers']} transfers in {m['steps']} steps, verified by the simulator; "
            f"synthesis {m['synthesis_seconds']:.3f} s"]


# ---------------------------------------------------------------- experts
@main.command()
@click.argument("loads", type=click.Path(dir_okay=False))
@click.option("--gpus", type=int, required=True, help="GPUs (EP ranks) the experts are placed on.")
@click.option("--nodes", type=int, default=1, show_default=True, help="Nodes the GPUs are split over (equally).")
@click.option("--slots-per-gpu", type=int, default=None, help="Expert slots per GPU (slots = GPUs x this).")
@click.option("--redundant", type=int, default=None, help="Redundant experts: slots = experts + this (default 0).")
@click.option("--groups", type=int, default=None,
              help="Expert groups for node-limited routing; every group stays on one node.")
@plan_options("experts", "docs/experts.md", "Seconds for milp, all layers.", "Also write the map for an engine")
@handles_errors
def experts(loads, gpus, nodes, slots_per_gpu, redundant, groups, method, time_limit, solver, output, export_fmt,
            export_file, as_json, reproducible):
    """Replicate and place MoE experts (LOADS: per-layer expert loads) on GPUs, balanced."""
    from planner.core.experts import expert_problem, read_loads

    check_plan_options(time_limit, export_fmt, export_file, solver)
    weights, coact = read_loads(loads)
    problem = expert_problem(weights, gpus, nodes, slots_per_gpu, redundant, groups, coact, source=loads)
    run_plan("experts", problem, method, time_limit, solver, output, export_fmt, export_file, as_json, reproducible,
             _experts_headline)


def _experts_headline(doc: dict) -> list[str]:
    m, p = doc["metrics"], doc["problem"]
    lines = [f"{p['layers']} layers x {p['experts']} experts on {p['gpus']} GPUs ({p['nodes']} nodes, "
             f"{p['slots_per_gpu']} slots per GPU, {p['redundant']} redundant): method {doc['method']}",
             f"  max/mean {m['max_over_mean']:.4f} (worst layer {m['worst_layer_max_over_mean']:.4f})   "
             f"bound {m['lower_bound_max_over_mean']:.4f}   ratio to bound {m['ratio_to_bound']:.4f}   "
             f"synthesis {m['synthesis_seconds']:.3f} s"]
    if "cross_node_fraction" in m:
        lines.append(f"  cross-node co-activated tokens {m['cross_node_coactivated_tokens']:.0f} "
                     f"({100 * m['cross_node_fraction']:.1f}% of pairs)")
    return lines


# ---------------------------------------------------------------- parallelize
@main.command()
@click.option("--model", "model_arg", required=True,
              help="A MODEL file, or a preset: gpt3-175b, megatron-1.7b ... megatron-1t, megatron-22b, llama2-7b, "
                   "llama2-13b, llama2-70b, llama3-8b, llama3-70b, llama3-405b, mixtral-8x7b, mixtral-8x22b, deepseek-v3.")
@click.option("--topology", "topo", required=True, help="Preset, <preset>x<N>, or a description file (GPU models set).")
@click.option("--workload", required=True, type=click.Path(dir_okay=False),
              help="WORKLOAD file: mode train (training plan) or mode serve (serving plan, docs/serving.md).")
@click.option("--fix", default=None,
              help="k=v,... Training: fix these and search the rest (all of them: evaluate that one configuration); "
                   "keys tp, pp, dp, cp, ep, micro_batch, interleave (positive whole numbers), recompute "
                   "(none|selective|full), sequence_parallel, distributed_optimizer (0|1); the workload's "
                   "micro_batch and recompute count as fixes. Serving: evaluate one replica; keys tp, pp, ep (0|1), "
                   "gpu (a GPU preset of the pool), role (colocated|prefill|decode).")
@click.option("--top", type=int, default=5, show_default=True, help="Configurations reported, the plan's included.")
@plan_options(("parallelism", "serving"), "training: grid | milp | rule; serving: homogeneous | greedy | milp",
              "Seconds for the exact method (training: the stage MILP; serving: the replica MILP).",
              "Write the plan as Megatron-LM arguments (training) or vLLM / SGLang launch commands (serving)")
@handles_errors
def parallelize(model_arg, topo, workload, fix, top, method, time_limit, solver, output, export_fmt, export_file,
                as_json, reproducible):
    """Choose the training parallelism (TP/PP/DP/CP/EP, micro-batch, interleaving, recompute,
    optimizer sharding, layers per stage) of MODEL on TOPO for WORKLOAD, by a calibrated cost
    model (docs/parallelism.md).

    auto runs grid (every valid configuration that fits, ranked by step time) and then milp
    (the best configurations' layers re-split over the pipeline stages), and returns the
    faster; rule (Megatron's rule of thumb) runs only when asked for. "bound" is the step
    no configuration can beat under the model (model FLOPs at the GPUs' full matmul rate);
    "synthesis" is the seconds the search took."""
    from planner.core.serving import ServeWorkload, load_any_workload, parse_serve_fix
    from planner.core.training import parse_fix
    from planner.core.transformer import load_model
    from planner.kinds.parallelism import training_problem
    from planner.kinds.serving import serving_problem
    from topologies.io import load_topology

    check_plan_options(time_limit, export_fmt, export_file, solver)
    work = load_any_workload(workload)
    serving = isinstance(work, ServeWorkload)
    fixes = parse_serve_fix(fix) if serving else parse_fix(fix)
    spec = load_model(model_arg)
    cluster = load_topology(topo)
    if serving:
        problem = serving_problem(spec, work, cluster, fixes, topology_name=topo)
        run_plan("serving", problem, method, time_limit, solver, output, export_fmt, export_file, as_json,
                 reproducible, _serving_headline)
        return
    problem = training_problem(spec, work, cluster, fixes, top, topology_name=topo, workload_source=workload)
    run_plan("parallelism", problem, method, time_limit, solver, output, export_fmt, export_file, as_json,
             reproducible, _parallelize_headline)


def _serving_headline(doc: dict) -> list[str]:
    m, p = doc["metrics"], doc["problem"]
    w = p["workload"]
    lines = [f"{p['model']['name']} serving on {p['topology']} (pool {p['pool']}): method {doc['method']}",
             f"  {m['replicas']} replicas on {m['gpus_used']}, ${m['cost_per_hour']:.2f}/h, serves "
             f"{m['served_rps']:.2f} requests/s (capacities); simulated at {m['simulated_rate_rps']:.2f}/s: "
             f"{100 * m['slo_attainment']:.1f}% meet TTFT {w['ttft_slo_s']:g} s and TPOT {w['tpot_slo_s']:g} s "
             f"(target {100 * w['slo_quantile']:.0f}%"
             f"{', within sampling error' if m['slo_attainment'] < w['slo_quantile'] else ''})",
             f"  TTFT p50/p90/p99 {m['ttft_p50_s']:.3f} / {m['ttft_p90_s']:.3f} / {m['ttft_p99_s']:.3f} s   "
             f"TPOT {1e3 * m['tpot_p50_s']:.1f} / {1e3 * m['tpot_p90_s']:.1f} / {1e3 * m['tpot_p99_s']:.1f} ms"]
    if "prefill_ms" in m:
        lines.append(f"  one replica: prefill {m['prefill_ms']:.1f} ms"
                     + (f", decode step {m['decode_step_ms']:.2f} ms at batch {w['decode_batch']}"
                        if "decode_step_ms" in m else "")
                     + f", goodput {m['goodput_rps']:.2f} requests/s, KV cache {m['kv_cache_tokens']} tokens")
    if "goodput_per_dollar" in m:
        bound = doc["bound"]
        lines.append(f"  {m['goodput_per_dollar']:.0f} requests per $, ${m['cost_per_million_output_tokens']:.3f} per "
                     f"million output tokens; synthesis {m['synthesis_seconds']:.2f} s")
        if m.get("ratio_to_bound"):
            key = "cost_per_hour" if "cost_per_hour" in bound else "goodput_rps"
            lines.append(f"  bound: {key} {bound[key]:.4g} (plan at {m['ratio_to_bound']:.3f} of it)")
    groups: dict[tuple, list[dict]] = {}
    for r in doc["plan"]["replicas"]:
        groups.setdefault((r["gpu"], r["tp"], r["pp"], r["ep"], r["role"], round(r["rate_rps"], 6)), []).append(r)
    for (gpu, tp, pp, ep, role, rate), members in groups.items():
        where = ", ".join(f"{r['gpus'][0]}" + (f"..{r['gpus'][-1]}" if len(r["gpus"]) > 1 else "") for r in members)
        lines.append(f"  {len(members)} x {gpu} tp{tp} pp{pp}{' ep' if ep else ''} {role}: {rate:.2f} requests/s "
                     f"each, on {where}")
    return lines


def _parallelize_headline(doc: dict) -> list[str]:
    from planner.kinds.parallelism import describe_config

    m, p, c = doc["metrics"], doc["problem"], doc["plan"]["config"]
    lines = [f"{p['model']['name']} on {p['topology']} ({p['gpus']} GPUs): method {doc['method']}",
             f"  tp {c['tp']} pp {c['pp']} dp {c['dp']} cp {c['cp']} ep {c['ep']}  micro-batch {c['micro_batch']}  "
             f"interleave {c['interleave']}  recompute {c['recompute']}  sequence-parallel "
             f"{int(c['sequence_parallel'])}  distributed-optimizer {int(c['distributed_optimizer'])}",
             f"  step {m['step_time_s']:.3f} s   {m['tokens_per_s']:.0f} tokens/s   MFU {m['mfu']:.3f}   "
             f"memory {m['memory_per_gpu_GB']:.1f} GB/GPU   bound {m['lower_bound_step_time_s']:.3f} s   "
             f"synthesis {m['synthesis_seconds']:.2f} s",
             "  step: " + ", ".join(f"{k} {v:.3f}" for k, v in m["breakdown_s"].items() if v > 0),
             "  memory: " + ", ".join(f"{k} {v:.1f}" for k, v in m["memory_breakdown_GB"].items())]
    if len(set(doc["plan"]["layers_per_stage"])) > 1:
        lines.append(f"  layers per stage {doc['plan']['layers_per_stage']}"
                     + (f" (the grid's split: {m['default_split_step_time_s']:.3f} s)" if "default_split_step_time_s" in m else ""))
    for i, other in enumerate(m.get("top", []), 2):
        lines.append(f"  #{i}: {other['step_time_s']:.3f} s, MFU {other['mfu']:.3f}, {other['memory_per_gpu_GB']:.1f} GB"
                     f" ({describe_config(other['config'])})")
    if m.get("why_best"):
        lines.append(f"  why: {m['why_best']}")
    return lines


# ---------------------------------------------------------------- place
@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option("--topology", "topo", required=True,
              help="The cluster: a preset, <preset>x<N>, a description file, or a Slurm topology.conf (with --server).")
@click.option("--server", default=None, help="With a topology.conf: the server preset of every node.")
@click.option("--node-state", default=None, type=click.Path(dir_okay=False),
              help="With a topology.conf: `sinfo -N -h -o '%N %t'` lines; a node not idle is not free.")
@click.option("--oversubscription", default=None, type=float,
              help="With a topology.conf: each switch's uplink carries 1/R of what it serves (default 1: non-blocking).")
@plan_options("placement", "greedy | milp | best-fit | random | linear", "Seconds for the placement MILP.",
              "Write the rank table as an Open MPI rankfile, a SLURM_HOSTFILE or per-host CUDA_VISIBLE_DEVICES")
@handles_errors
def place(job_file, topo, server, node_state, oversubscription, method, time_limit, solver, output, export_fmt,
          export_file, as_json, reproducible):
    """Place JOB's ranks on the free GPUs of a cluster so its DP / PP / CP / EP groups stay
    inside leaf and spine domains (docs/placement.md). auto runs greedy, then the MILP (blocks
    of ranks to leaves) under --time-limit, and returns the less spread; best-fit (Slurm
    topology/tree), random and linear are baselines run when asked for."""
    from planner.core.errors import InputError
    from planner.core.placement import load_job
    from planner.kinds.placement import placement_problem
    from topologies.io import load_topology
    from topologies.slurm import slurm_topology

    check_plan_options(time_limit, export_fmt, export_file, solver)
    job = load_job(job_file)
    if server is not None:
        if oversubscription is not None and not 1 <= oversubscription < float("inf"):
            raise InputError(f"must be a number >= 1, got {oversubscription!r}", field="--oversubscription")
        cluster = slurm_topology(topo, server, node_state, oversubscription or 1.0)
    elif node_state is not None or oversubscription is not None:
        raise InputError("goes with a Slurm topology.conf and --server",
                         field="--node-state" if node_state is not None else "--oversubscription")
    else:
        cluster = load_topology(topo)
    run_plan("placement", placement_problem(job, cluster, topo), method, time_limit, solver, output, export_fmt,
             export_file, as_json, reproducible, _place_headline)


def _place_headline(doc: dict) -> list[str]:
    m, p = doc["metrics"], doc["problem"]
    lines = [f"{p['job']['world']} ranks ({p['job']['order']}) on {p['topology']} ({p['free_nodes']} of {p['nodes']} "
             f"nodes free): method {doc['method']}",
             f"  score {m['score']:.3f} (bound {m['lower_bound_score']:.3f}), {m['nodes_used']} nodes used, "
             f"{m['free_nodes_left']} free nodes left; synthesis {m['synthesis_seconds']:.2f} s"]
    for kind, tiers in m["spread"].items():
        lines.append(f"  {kind} spread: " + ", ".join(f"{t} max {v['max']} mean {v['mean']:.2f}"
                                                      for t, v in tiers.items()))
    return lines


# ---------------------------------------------------------------- simulate
@main.command()
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--topology", "topo", required=True, help="Preset, <preset>x<N>, or a description file.")
@click.option("--size", default=None,
              help="MSCCL XML / MSCCL++ plans: SIZE in bytes (default: what the file says, else 1 MiB per chunk).")
@json_option
@handles_errors
def simulate(plan_file: str, topo: str, size: str | None, as_json: bool) -> None:
    """Check and time a collective plan, an MSCCL XML (either dialect, any writer) or an
    MSCCL++ execution plan on a topology."""
    from planner.replay import replay_plan
    from planner.core.units import parse_size
    from topologies.io import load_topology

    nbytes = parse_size(size, field="--size") if size is not None else None
    report = replay_plan(plan_file, load_topology(topo), nbytes)
    if as_json:
        _echo_json(report)
    elif not report["correct"]:
        click.echo(f"{plan_file}: INCORRECT: {report['error']}")
    if not report["correct"]:
        sys.exit(1)
    if as_json:
        return
    click.echo(f"{plan_file}: correct; time {report['time_us']:.2f} us, algbw {report['algbw_GBps']:.2f} GB/s, "
               f"bound {report['lower_bound_us']:.2f} us, ratio {report['ratio_to_bound']:.3f}")
    problems = report.get("runtime_problems")
    if problems:
        click.echo(f"  but a runtime would object ({len(problems)} problem(s)); first: {problems[0]}")


# ---------------------------------------------------------------- quickstart
@main.command()
@click.option("--topology", "topo", default="hgx-h100x2", show_default=True)
@click.option("--size", default="1GiB", show_default=True)
@click.option("-o", "out_dir", default="planner-out", show_default=True, type=click.Path(file_okay=False))
@json_option
@reproducible_option
@handles_errors
def quickstart(topo: str, size: str, out_dir: str, as_json: bool, reproducible: bool) -> None:
    """Plan the baseline collectives on a default cluster; write plans and a report."""
    from planner.quickstart import run_quickstart

    report = as_options(lambda: run_quickstart(topo, size, out_dir, reproducible))
    if as_json:
        _echo_json(report)
        return
    click.echo(report["table"])
    click.echo(f"\nplans and report written to {out_dir}/")


# ---------------------------------------------------------------- solvers
@main.command("solvers")
@json_option
def solvers_cmd(as_json: bool) -> None:
    """The solver backends installed here and what they solve."""
    from solvers import SolverError, get, registered

    rows = []
    for name in sorted(registered()):
        try:
            backend = get(name)
        except SolverError:  # registered but not usable on this machine
            rows.append({"name": name, "available": False, "integer": False, "continuous": False})
            continue
        rows.append({"name": name, "available": True, "integer": backend.supports_integer,
                     "continuous": backend.supports_continuous})
    if as_json:
        _echo_json({"solvers": rows})
        return
    for r in rows:
        kinds = "+".join(k for k in ("integer", "continuous") if r[k])
        click.echo(f"{r['name']:8s} {'available' if r['available'] else 'missing':10s} {kinds}")


if __name__ == "__main__":
    main()
