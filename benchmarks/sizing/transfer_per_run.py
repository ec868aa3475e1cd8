"""Bytes of model weights moved per pipeline run on a cluster, computed from a compiled IR file.

KFP's launcher downloads every input artifact of a task to local disk before the user code starts
(backend/src/v2/component/launcher_v2.go: `execute` calls `downloadArtifacts` over all
`executorInput.inputs.artifacts`, with a TODO to copy only those whose path is used), and uploads every
output artifact afterwards. So each executed task that takes a model artifact as input costs one full
download of that model. This script follows the model artifacts through the IR (through sub-pipelines,
conditions and loops), counts how often each task runs in one run (benchmarks/sizing/kfp_ir.py: all unrolled
iterations by default, or the first `--max-iterations`), and multiplies by the model's size:
`params x (1 - prune ratio) x bytes per parameter` for the pruned model, `params x bytes` for the base.

Not counted (not visible in the IR): downloads a step makes itself from a URI parameter (the base model
read by `prune`; today `model_structure` also fetches a whole `s3://` base model folder to read its
config), adapters and data sets (small next to the weights).

    python -m benchmarks.sizing.transfer_per_run --params 6.7e9 --dtype bf16 --prune-ratio 0.2
    python -m benchmarks.sizing.transfer_per_run --ir pipelines/compiled/rankadaptor.yaml --max-iterations 2 --json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from benchmarks.sizing.kfp_ir import COMPILED, load, unroll_cap, walk

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
MODEL_ARTIFACTS = ("pruned_model", "base_model")  # output keys of the model artifacts followed through the IR


def model_inputs(spec: dict, max_iterations: int | None = None, artifacts=MODEL_ARTIFACTS) -> list[dict]:
    """One row per executed container task that takes a model artifact: step, path, artifact, times."""
    carried: dict[tuple[str, ...], dict[str, str]] = {(): {}}  # DAG path -> its input key -> model artifact
    rows = []
    for entry in walk(spec, max_iterations):
        parent = carried.get(entry.path[:-1], {})
        models = {}
        for key, source in entry.task.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" in source and source["taskOutputArtifact"]["outputArtifactKey"] in artifacts:
                models[key] = source["taskOutputArtifact"]["outputArtifactKey"]
            elif "componentInputArtifact" in source and source["componentInputArtifact"] in parent:
                models[key] = parent[source["componentInputArtifact"]]
        if entry.dag:
            carried[entry.path] = models
        elif entry.times:
            rows += [{"step": re.sub(r"-\d+$", "", entry.path[-1]), "path": "/".join(entry.path), "artifact": model,
                      "times": entry.times} for model in models.values()]
    return rows


def producers(spec: dict, artifacts=MODEL_ARTIFACTS) -> dict[str, int]:
    """How often each model artifact is produced (uploaded) in one run."""
    out: dict[str, int] = defaultdict(int)
    for entry in walk(spec):
        if entry.dag or not entry.times:
            continue
        outputs = spec["components"][entry.component].get("outputDefinitions", {}).get("artifacts", {})
        for key in outputs:
            if key in artifacts:
                out[key] += entry.times
    return dict(out)


def model_bytes(params: float, dtype: str, prune_ratio: float) -> dict[str, int]:
    return {"pruned_model": int(params * (1 - prune_ratio) * BYTES[dtype]), "base_model": int(params * BYTES[dtype])}


def report(path: Path, params: float, dtype: str, prune_ratio: float, max_iterations: int | None) -> dict:
    spec, _ = load(path)
    sizes = model_bytes(params, dtype, prune_ratio)
    rows = model_inputs(spec, max_iterations)
    steps: dict[str, dict] = {}
    for row in rows:
        step = steps.setdefault(row["step"], {"step": row["step"], "artifact": row["artifact"], "downloads": 0})
        step["downloads"] += row["times"]
    for step in steps.values():
        step["bytes"] = step["downloads"] * sizes[step["artifact"]]
    uploads = {k: n * sizes[k] for k, n in producers(spec).items()}
    downloads = sum(s["bytes"] for s in steps.values())
    return {"ir": Path(path).name, "cap": unroll_cap(spec), "max_iterations": max_iterations or unroll_cap(spec),
            "params": params, "dtype": dtype, "prune_ratio": prune_ratio, "model_bytes": sizes,
            "tasks": rows, "steps": sorted(steps.values(), key=lambda s: -s["bytes"]),
            "downloads": sum(s["downloads"] for s in steps.values()), "download_bytes": downloads,
            "upload_bytes": sum(uploads.values()), "total_bytes": downloads + sum(uploads.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ir", type=Path, default=COMPILED / "rankadaptor.yaml", help="compiled IR YAML")
    parser.add_argument("--params", type=float, default=6.7e9, help="parameters of the base model")
    parser.add_argument("--dtype", choices=sorted(BYTES), default="bf16", help="dtype the model artifacts are stored in")
    parser.add_argument("--prune-ratio", type=float, default=0.2, help="fraction of parameters pruning removes")
    parser.add_argument("--max-iterations", type=int, default=None,
                        help="search iterations that run (default: every unrolled iteration, the worst case)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 0 <= args.prune_ratio < 1 or args.params <= 0:
        parser.error(f"--prune-ratio must be in [0, 1) and --params > 0, got {args.prune_ratio}, {args.params}")
    result = report(args.ir, args.params, args.dtype, args.prune_ratio, args.max_iterations)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    gb = 1e9
    sizes = result["model_bytes"]
    print(f"{result['ir']}: {result['max_iterations']} of {result['cap']} unrolled iterations; {args.params:.3g} params, "
          f"{args.dtype}, prune ratio {args.prune_ratio}: pruned model {sizes['pruned_model'] / gb:.1f} GB\n")
    print("| step | model artifact | downloads per run | GB |")
    print("|---|---|---:|---:|")
    for s in result["steps"]:
        print(f"| {s['step']} | {s['artifact']} | {s['downloads']} | {s['bytes'] / gb:,.1f} |")
    print(f"| **all downloads** | | **{result['downloads']}** | **{result['download_bytes'] / gb:,.1f}** |")
    print(f"| uploads (producers) | | | {result['upload_bytes'] / gb:,.1f} |")
    print(f"| **total moved** | | | **{result['total_bytes'] / gb:,.1f}** |")


if __name__ == "__main__":
    main()
