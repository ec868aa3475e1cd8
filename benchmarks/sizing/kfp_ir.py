"""Read a compiled KFP v2 IR file and walk one run of it: which tasks execute, how often, under which DAG.

Shared by `workflow_size.py` (Argo nodes per executed task) and `transfer_per_run.py` (weight downloads
per executed task), so both count the same run. The unrolled search loop is simulated: every task whose
trigger condition reads a `gate` task's output sees "not converged" until `max_iterations` loop bodies have
run (None: never converges, every unrolled iteration runs: the worst case). The go/no-go's branches are
taken as "go" (the search runs, the uniform-only branch does not). Other conditions are taken as true.
A `ParallelFor` (parameter or artifact iterator) runs `loop_items` times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPILED = ROOT / "pipelines" / "compiled"
LOOP_BODY = "rankadaptor-iteration"  # DAG task name prefix of the unrolled search-loop body (a sub-pipeline)
GATE = "pipelinechannel--gate"  # how a loop condition reads the `gate` task's boolean output
GO_GATE = "pipelinechannel--go-gate"  # how the search-pays / uniform-only branches read the go/no-go's


def load(path: Path) -> tuple[dict, dict]:
    """(pipeline spec, kubernetes platform spec: executor label -> config) of a compiled IR YAML file."""
    documents = list(yaml.safe_load_all(Path(path).read_text()))
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(documents) > 1 else {}
    return documents[0], platform


def compact(value) -> str:
    """JSON as the Go backend writes it: no whitespace, keys sorted (stablyMarshalJSON)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


@dataclass
class Executed:
    path: tuple[str, ...]  # task names from the root DAG down to this task
    task: dict  # the IR task spec
    component: str  # the component it calls
    times: int  # how many times it runs in this run (0: its condition is false)
    dag: bool  # the component is a DAG (sub-pipeline, condition, loop) rather than a container
    loop: bool  # the task is one unrolled search-loop body


def _ordered(tasks: dict) -> list[str]:
    """Topological order of a DAG's tasks (dependencies first; ties by name, like the backend)."""
    done: list[str] = []
    pending = sorted(tasks)
    while pending:
        ready = [n for n in pending if all(d in done or d not in tasks for d in tasks[n].get("dependentTasks", []))]
        if not ready:  # a cycle cannot compile; keep going rather than loop forever
            ready = pending[:1]
        for name in ready:
            done.append(name)
            pending.remove(name)
    return done


def walk(spec: dict, max_iterations: int | None = None, loop_items: int = 16) -> list[Executed]:
    """Every task of every DAG reached in one run, with how often it runs (see the module docstring)."""
    components = spec["components"]
    loops_run = 0
    out: list[Executed] = []

    def runs(condition: str | None) -> bool:
        if condition and GO_GATE in condition:  # the go/no-go says go: the search runs (the costly path)
            return not condition.lstrip().startswith("!")
        if not condition or GATE not in condition:
            return True
        converged = max_iterations is not None and loops_run >= max_iterations
        return (not converged) if condition.lstrip().startswith("!") else converged

    def visit(dag: dict, path: tuple[str, ...], multiplier: int) -> None:
        nonlocal loops_run
        tasks = dag["dag"]["tasks"]
        for name in _ordered(tasks):
            task = tasks[name]
            ref = task["componentRef"]["name"]
            callee = components[ref]
            iterated = "parameterIterator" in task or "artifactIterator" in task
            times = multiplier * (loop_items if iterated else 1) if runs(task.get("triggerPolicy", {}).get("condition")) else 0
            is_loop = name.startswith(LOOP_BODY)
            out.append(Executed(path + (name,), task, ref, times, "dag" in callee, is_loop))
            if times and "dag" in callee:
                if is_loop:
                    loops_run += 1
                visit(callee, path + (name,), times)

    visit(spec["root"], (), 1)
    return out


def unroll_cap(spec: dict) -> int:
    """How many search-loop bodies the IR unrolls (0 for a pipeline without the loop)."""
    return sum(1 for e in walk(spec) if e.loop)


def compile_main(cap: int, directory: Path) -> Path:
    """Compile the main pipeline with the search loop unrolled `cap` times; returns the IR file.

    The one place that knows how the project builds its main pipeline (`pipelines.rankadaptor.build`):
    adapt here if that signature changes. Runs in a subprocess so the caller's imports stay light.
    """
    path = Path(directory) / f"rankadaptor-cap{cap}.yaml"
    code = ("import sys; from kfp import compiler; from pipelines.rankadaptor import build; "
            "compiler.Compiler().compile(build(loop_cap=int(sys.argv[1])), sys.argv[2])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code, str(cap), str(path)], check=False, capture_output=True, text=True, env=env,
                            cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"compiling the main pipeline with cap {cap} failed: {result.stderr.strip().splitlines()[-1]}")
    return path


def temp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="rankadaptor-ir-"))


def main(argv: list[str] | None = None) -> None:
    """Print one run's executed container tasks of a compiled IR (path: count), as the two benchmarks walk it."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", type=Path, default=COMPILED / "rankadaptor.yaml", help="compiled IR YAML")
    parser.add_argument("--max-iterations", type=int, default=None,
                        help="loop bodies run before the gate converges (default: never, the worst case)")
    parser.add_argument("--loop-items", type=int, default=16, help="iterations of each ParallelFor")
    args = parser.parse_args(argv)
    spec, _ = load(args.ir)
    runs = {"/".join(e.path): e.times for e in walk(spec, args.max_iterations, args.loop_items) if not e.dag}
    print(json.dumps({"ir": str(args.ir), "unroll_cap": unroll_cap(spec), "tasks": runs}, indent=1))


if __name__ == "__main__":
    main()
