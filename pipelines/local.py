"""Run the main pipeline on this machine with kfp.local: the same definition as on a cluster.

Each component runs as a subprocess of this Python environment (SubprocessRunner, use_venv=False); the
MLflow bank and registry default to an embedded sqlite store beside the run's outputs, and kfp.local's
cache makes a rerun of unchanged steps free.
"""

import os
from pathlib import Path

from rankadaptor.bank import default_tracking_uri
from rankadaptor.job import JobConfig


def run_local(job: JobConfig, root: str | Path) -> Path:
    """Run the job's pipeline under root; returns the report artifact's directory."""
    from kfp import local

    from pipelines.rankadaptor import arguments, build

    root = Path(root).resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", job.bank.tracking_uri or default_tracking_uri(root / "mlflow"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "pipeline"),
               raise_on_error=True, enable_caching=True)
    build(loop_cap=job.search.max_iterations)(**arguments(job))
    reports = sorted((root / "pipeline").glob("rankadaptor-*/register*/report/report.json"),
                     key=lambda p: p.stat().st_mtime)
    return reports[-1].parent
