"""Same plans before and after a change: every method of both plan kinds, every export format.

    python -m bench.same_plans --base 27f3dbe          # the tree at that commit against this one
    python -m bench.same_plans --base HEAD~3 --only milp --keep /tmp/runs

Each case runs the `planner` command line with `--reproducible -o plan.json` (and
`--export-file` where it exports) twice: once from the base commit's files (`git archive`
into a temporary folder) and once from this working tree, each with its own code first on
the path. Exports must be equal byte for byte; plans are compared key by key, and a key
may differ only if it is one of UNIFIED, the fields a structural change unified on
purpose (each with its reason). Prints one row per case and exits 1 on any other difference.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

EPLB_EXAMPLE = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]

# (name, arguments; {in} is the folder of the input files)
CASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ring allgather dgx1 msccl-xml", ("collective", "allgather", "--topology", "dgx1", "--size", "1MiB",
                                       "--method", "ring", "--export", "msccl-xml")),
    ("ring reduce-scatter hgx-h100 msccl-exec-xml", ("collective", "reduce-scatter", "--topology", "hgx-h100",
                                                     "--size", "64MiB", "--method", "ring",
                                                     "--export", "msccl-exec-xml")),
    ("ring allreduce hgx-h100x2 mscclpp-json", ("collective", "allreduce", "--topology", "hgx-h100x2",
                                                "--size", "1GiB", "--method", "ring", "--export", "mscclpp-json")),
    ("tree allreduce dgx-a100x2", ("collective", "allreduce", "--topology", "dgx-a100x2", "--size", "16MiB",
                                   "--method", "tree")),
    ("hierarchical allgather hgx-h100x2 msccl-xml", ("collective", "allgather", "--topology", "hgx-h100x2",
                                                     "--size", "64MiB", "--method", "hierarchical",
                                                     "--export", "msccl-xml")),
    ("hierarchical alltoall mi300xx2", ("collective", "alltoall", "--topology", "mi300xx2", "--size", "16MiB",
                                        "--method", "hierarchical")),
    ("chain broadcast dgx1 root 3 msccl-exec-xml", ("collective", "broadcast", "--topology", "dgx1", "--size",
                                                    "1MiB", "--root", "3", "--method", "chain",
                                                    "--export", "msccl-exec-xml")),
    ("chain reduce mi300x mscclpp-json", ("collective", "reduce", "--topology", "mi300x", "--size", "1MiB",
                                          "--method", "chain", "--export", "mscclpp-json")),
    ("direct alltoall hgx-h100x2 msccl-xml", ("collective", "alltoall", "--topology", "hgx-h100x2", "--size",
                                              "16MiB", "--method", "direct", "--export", "msccl-xml")),
    ("spreadout alltoall hgx-h100x2", ("collective", "alltoall", "--topology", "hgx-h100x2", "--size", "16MiB",
                                       "--method", "spreadout")),
    ("flash alltoallv zipf hgx-h100x2", ("collective", "alltoallv", "--topology", "hgx-h100x2", "--traffic",
                                         "zipf:s=1.2,seed=0", "--size", "64MiB", "--method", "flash")),
    ("flash alltoallv file hgx-h100x2", ("collective", "alltoallv", "--topology", "hgx-h100x2",
                                         "--traffic", "{in}/traffic16.json", "--method", "flash")),
    ("flash alltoall hgx-h100x2 mscclpp-json", ("collective", "alltoall", "--topology", "hgx-h100x2", "--size",
                                                "16MiB", "--method", "flash", "--export", "mscclpp-json")),
    ("refused export: alltoallv msccl-xml", ("collective", "alltoallv", "--topology", "hgx-h100x2",
                                             "--traffic", "{in}/traffic16.json", "--method", "flash",
                                             "--export", "msccl-xml")),
    ("trees allgather dgx1", ("collective", "allgather", "--topology", "dgx1", "--size", "64MiB",
                              "--method", "trees")),
    ("trees broadcast mi250", ("collective", "broadcast", "--topology", "mi250", "--size", "64MiB",
                               "--method", "trees")),
    ("milp allgather dgx1 4KiB", ("collective", "allgather", "--topology", "dgx1", "--size", "4KiB",
                                  "--method", "milp", "--time-limit", "30")),
    ("milp broadcast hgx-h100 64KiB", ("collective", "broadcast", "--topology", "hgx-h100", "--size", "64KiB",
                                       "--method", "milp", "--time-limit", "30")),
    ("lp alltoall dgx1", ("collective", "alltoall", "--topology", "dgx1", "--size", "1MiB", "--method", "lp",
                          "--time-limit", "30")),
    ("milp alltoall dgx1", ("collective", "alltoall", "--topology", "dgx1", "--size", "1MiB", "--method", "milp",
                            "--time-limit", "30")),
    ("auto allreduce dgx1 1GiB", ("collective", "allreduce", "--topology", "dgx1", "--size", "1GiB")),
    ("auto allgather dgx1 16KiB", ("collective", "allgather", "--topology", "dgx1", "--size", "16KiB",
                                   "--time-limit", "30")),
    ("auto alltoall hgx-h100x2", ("collective", "alltoall", "--topology", "hgx-h100x2", "--size", "64MiB")),
    ("auto allreduce hgx-h100x2 msccl-xml", ("collective", "allreduce", "--topology", "hgx-h100x2", "--size",
                                             "1GiB", "--export", "msccl-xml")),
    ("auto reduce-scatter mi250 msccl-exec-xml", ("collective", "reduce-scatter", "--topology", "mi250", "--size",
                                                  "256MiB", "--export", "msccl-exec-xml")),
    ("experts milp eplb groups sglang", ("experts", "{in}/eplb.json", "--gpus", "8", "--nodes", "2",
                                         "--redundant", "4", "--groups", "4", "--method", "milp",
                                         "--time-limit", "10", "--export", "sglang")),
    ("experts auto eplb vllm", ("experts", "{in}/eplb.json", "--gpus", "8", "--nodes", "2", "--redundant", "4",
                                "--time-limit", "10", "--export", "vllm")),
    ("experts greedy synthetic gpu-list", ("experts", "{in}/synthetic.json", "--gpus", "32", "--nodes", "4",
                                           "--slots-per-gpu", "9", "--method", "greedy", "--export", "gpu-list")),
    ("experts eplb synthetic groups sglang", ("experts", "{in}/synthetic.json", "--gpus", "32", "--nodes", "4",
                                              "--slots-per-gpu", "9", "--groups", "8", "--method", "eplb",
                                              "--export", "sglang")),
    ("experts milp synthetic", ("experts", "{in}/synthetic.json", "--gpus", "32", "--nodes", "4",
                                "--slots-per-gpu", "9", "--method", "milp", "--time-limit", "8")),
    ("experts milp coactivation vllm", ("experts", "{in}/coactivation.json", "--gpus", "16", "--nodes", "2",
                                        "--slots-per-gpu", "5", "--method", "milp", "--time-limit", "8",
                                        "--export", "vllm")),
    ("experts milp one layer (one model)", ("experts", "{in}/one_layer.json", "--gpus", "8", "--redundant", "4",
                                            "--method", "milp", "--time-limit", "4")),
    ("experts greedy coactivation", ("experts", "{in}/coactivation.json", "--gpus", "16", "--nodes", "2",
                                     "--slots-per-gpu", "5", "--method", "greedy")),
)

# Plan fields a structural change unifies on purpose: (plan kind or "*", key pattern, why).
# A pattern is a dotted path (fnmatch wildcards allowed) and covers every key below it;
# everything else must be equal.
UNIFIED: tuple[tuple[str, str, str], ...] = (
    ("*", "solver.limit", "the limit that stopped the solve (time | work | null) beside limit_hit: every solver "
                          "entry is the solver layer's one result"),
    ("*", "solver.objective", "every solver entry is the solver layer's result (the trees' LP entry and the "
                              "experts' entry were hand-made dicts without it)"),
    ("*", "solver.dual_bound", "as solver.objective"),
    ("*", "metrics.milp_model.solver.limit", "as solver.limit, for the exact attempt that lost"),
    ("*", "metrics.skipped", "a search lists every method it did not try, with why (auto now says why it left "
                             "out the milp or lp)"),
    ("experts", "metrics.candidates", "both kinds list a search's candidates and their scores (experts had none)"),
    ("experts", "problem.method_requested", "every kind echoes the method, time limit and solver asked for "
                                            "(experts did not)"),
    ("experts", "problem.solver_requested", "as problem.method_requested"),
    ("experts", "problem.time_limit_s", "as problem.method_requested"),
    ("experts", "provenance", "one provenance for every kind: planner_version, heuristic, verified_by, auto_choice "
                              "(experts had only `planner`)"),
    ("experts", "method", "under auto: the method that made the plan (milp or greedy), as the contract says, not "
                          "'auto'"),
    ("experts", "fallback", "under auto: why the milp was not tried moved to metrics.skipped, as for collectives"),
    ("experts", "metrics.milp_model.traffic_model.seconds", "a wall-clock field: now 0 under --reproducible"),
)


def write_inputs(folder: Path) -> None:
    """The input files the cases read: the EPLB example, seeded synthetic loads, seeded
    loads with co-activation pairs, and a traffic matrix."""
    rng = np.random.default_rng(0)
    (folder / "eplb.json").write_text(json.dumps({"weights": EPLB_EXAMPLE}))
    (folder / "one_layer.json").write_text(json.dumps({"weights": EPLB_EXAMPLE[:1]}))
    synthetic = np.round(rng.lognormal(0.0, 1.5, (6, 64)) * 1000).astype(int)
    (folder / "synthetic.json").write_text(json.dumps({"weights": synthetic.tolist()}))
    weights, pairs = [], []
    for _ in range(3):
        picks = rng.choice(64, size=(2000, 4), p=_popularity(rng, 64))
        weights.append(np.bincount(picks.ravel(), minlength=64).tolist())
        counts: dict[tuple[int, int], int] = {}
        for row in picks.tolist():
            row = sorted(set(row))
            for a in range(len(row)):
                for b in range(a + 1, len(row)):
                    counts[row[a], row[b]] = counts.get((row[a], row[b]), 0) + 1
        pairs.append([[a, b, n] for (a, b), n in sorted(counts.items())])
    (folder / "coactivation.json").write_text(json.dumps({"weights": weights, "coactivation": pairs}))
    traffic = rng.integers(0, 4 << 20, size=(16, 16))
    np.fill_diagonal(traffic, 0)
    (folder / "traffic16.json").write_text(json.dumps(traffic.tolist()))


def _popularity(rng, n: int) -> np.ndarray:
    p = rng.lognormal(0.0, 1.0, n)
    return p / p.sum()


def base_tree(commit: str, into: Path) -> Path:
    """The files of `commit` (no .git) under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_case(tree: Path, args: tuple[str, ...], inputs: Path, out: Path) -> dict:
    """Run one case with `tree`'s code; the plan, the export (bytes) and the exit code."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [a.replace("{in}", str(inputs)) for a in args]
    argv += ["--reproducible", "-o", str(out / "plan.json")]
    export = None
    if "--export" in argv:
        export = out / ("export" + (".json" if argv[argv.index("--export") + 1] in ("mscclpp-json", "sglang", "vllm",
                                                                                     "gpu-list") else ".xml"))
        argv += ["--export-file", str(export)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(tree / "cli.py"), *argv], cwd=out, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else None
    return {"rc": proc.returncode, "stderr": proc.stderr.strip().splitlines()[-1:] if proc.stderr else [],
            "plan": plan, "export": export.read_bytes() if export is not None and export.exists() else None,
            "seconds": seconds}


def differences(a, b, path: str = "") -> list[str]:
    """Dotted paths where two JSON values differ (lists compared whole below their first
    differing index)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(sub)
            else:
                out += differences(a[key], b[key], sub)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return differences(x, y, f"{path}[{i}]")
        return []
    return [] if a == b else [path or "(whole plan)"]


def unified(path: str, kind: str) -> bool:
    return any(k in ("*", kind) and (fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + ".*"))
               for k, pattern, _ in UNIFIED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare against (e.g. 27f3dbe)")
    parser.add_argument("--only", default=None, help="only the cases whose name contains this")
    parser.add_argument("--keep", default=None, help="keep the runs in this folder")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="same-plans-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = work / "inputs"
    inputs.mkdir(exist_ok=True)
    write_inputs(inputs)
    base = base_tree(args.base, work / "base-tree")
    cases = [c for c in CASES if args.only is None or args.only in c[0]]
    print(f"base {args.base} against the working tree; {len(cases)} cases; runs in {work}")
    print("| case | exit | export | plan | unified fields that differ | base s | now s |")
    print("|---|---|---|---|---|---|---|")
    failed = 0
    for i, (name, case_args) in enumerate(cases):
        before = run_case(base, case_args, inputs, work / "base" / f"{i:02d}")
        after = run_case(ROOT, case_args, inputs, work / "now" / f"{i:02d}")
        diffs = differences(before["plan"], after["plan"]) if before["plan"] or after["plan"] else []
        kind = case_args[0]  # the command is the plan kind: collective, experts
        allowed = sorted({d for d in diffs if unified(d, kind)})
        bad = [d for d in diffs if not unified(d, kind)]
        same_export = before["export"] == after["export"]
        same_rc = before["rc"] == after["rc"]
        # a refusal (exit 2 or 3) is the same when its one line is
        ok = same_rc and same_export and (not bad if before["rc"] == 0 else before["stderr"] == after["stderr"])
        failed += not ok
        export = "-" if before["export"] is None and after["export"] is None else (
            "same bytes" if same_export else "DIFFERS")
        plan = "same" if not diffs else ("same but unified" if not bad else "DIFFERS: " + ", ".join(bad[:8]))
        rc = f"{before['rc']}" if same_rc else f"{before['rc']} -> {after['rc']}"
        if before["rc"] or after["rc"]:
            rc += " " + " / ".join(before["stderr"] + after["stderr"])
        print(f"| {name} | {rc} | {export} | {plan} | {', '.join(allowed) or '-'} | {before['seconds']:.1f} | "
              f"{after['seconds']:.1f} |", flush=True)
    if UNIFIED:
        print("\nunified on purpose:")
        for kind, pattern, why in UNIFIED:
            print(f"- {pattern} ({'every kind' if kind == '*' else kind}): {why}")
    print(f"\n{len(cases) - failed} of {len(cases)} cases the same")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
