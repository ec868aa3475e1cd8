"""Where the local job's time goes: each kfp.local step's wall time (from its log) split into the fresh
process's imports and the rest (the step's own work).

    python -m pipelines run 2>&1 | tee run.log      # or `make run`
    python -m benchmarks.sizing.job_steps run.log [--json]

Import time per step is measured here, in fresh interpreters (median of --repeat), as the modules that step
imports: kfp's executor (every kfp.local step starts as `python -m kfp.dsl.executor_main`) plus the step's
own; the steps that load a model import transformers/peft (and lm_eval when they score lm-eval tasks) lazily,
so those are imported explicitly here.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime

BASE = "import kfp.dsl.executor_main"
LIGHT = "import rankadaptor.job, rankadaptor.steps.search"
MODEL = "import rankadaptor.steps.model, rankadaptor.models.pruned_llama"
IMPORTS = {  # component name prefix -> what its process imports
    "configure": "import rankadaptor.job",
    "propose": LIGHT,
    "gate": LIGHT,
    "update": f"{LIGHT}, mlflow",
    "meta-pretrain": f"{LIGHT}, mlflow, rankadaptor.models.pruned_llama",
    "prepare-data": MODEL,
    "prune": MODEL,
    "recover": f"{MODEL}, peft",
    "evaluate": f"{MODEL}, peft",
    "bootstrap": f"{MODEL}, peft, mlflow",
    "baselines": f"{MODEL}, peft, lm_eval.evaluator",
    "evaluate-best": f"{MODEL}, peft, lm_eval.evaluator, mlflow, rankadaptor.steps.register",
    "register": "mlflow, rankadaptor.steps.register",
}
LINE = re.compile(r"(\d\d:\d\d:\d\d\.\d+) - INFO - (Executing task|Task) '([\w-]+)'( finished)?")


def step_walls(log: str) -> list[tuple[str, float]]:
    """(task, seconds) for every task that finished, in order, from kfp.local's log lines."""
    started, walls = {}, []
    for stamp, kind, task, finished in LINE.findall(re.sub(r"\x1b\[[0-9;]*m", "", log)):
        t = datetime.strptime(stamp, "%H:%M:%S.%f")
        if kind == "Executing task":
            started[task] = t
        elif finished and task in started:
            walls.append((task, (t - started.pop(task)).total_seconds() % 86400))
    return walls


def import_seconds(statement: str, repeat: int) -> float:
    """Wall time of a fresh interpreter that runs the statement: process start plus imports."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kind(task: str) -> str:
    return next(k for k in sorted(IMPORTS, key=len, reverse=True) if task.startswith(k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="output of a kfp.local run (python -m pipelines run)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    walls = step_walls(open(args.log).read())
    base = import_seconds("pass", args.repeat)
    imports = {k: import_seconds(f"{BASE}; {v}", args.repeat) for k, v in IMPORTS.items()
               if any(kind(task) == k for task, _ in walls)}
    rows = []
    for k in imports:
        tasks = [w for task, w in walls if kind(task) == k]
        rows.append({"step": k, "runs": len(tasks), "wall_s": sum(tasks), "max_wall_s": max(tasks),
                     "process_and_imports_s": imports[k], "rest_s": sum(tasks) - len(tasks) * imports[k]})
    total = {"wall_s": sum(r["wall_s"] for r in rows), "imports_s": sum(r["runs"] * r["process_and_imports_s"]
                                                                         for r in rows)}
    if args.json:
        print(json.dumps({"python_start_s": base, "steps": rows, "total": total}))
        return
    print(f"python start alone: {base:.2f} s; steps: {len(walls)}")
    print("| step | runs | wall (s) | slowest run (s) | process start + imports per run (s) | rest (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['runs']} | {r['wall_s']:.1f} | {r['max_wall_s']:.1f} | "
              f"{r['process_and_imports_s']:.2f} | {r['rest_s']:.1f} |")
    print(f"| all | {len(walls)} | {total['wall_s']:.1f} | | {total['imports_s']:.1f} (sum) | "
          f"{total['wall_s'] - total['imports_s']:.1f} |")


if __name__ == "__main__":
    main()
