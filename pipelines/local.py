"""Run the main pipeline on this machine with kfp.local: the same definition as on a cluster.

Each component runs as a subprocess of this Python environment (SubprocessRunner, use_venv=False); the
MLflow bank and registry default to an embedded sqlite store beside the run's outputs, and kfp.local's
cache makes a rerun of unchanged steps free. The job's preflight runs first, so a bad input fails in
seconds; kfp.local's output (executor JSON, each step's logs and warnings) goes to `<root>/run.log`, and
the terminal shows one line per step and the search's progress (`verbose` shows everything).
"""

import io
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from rankadaptor.errors import ServiceError, UserError
from rankadaptor.flows.progress import PROGRESS
from rankadaptor.infra.tracking import default_tracking_uri
from rankadaptor.job import JobConfig
from rankadaptor.ops.preflight import check_job

STARTED = re.compile(r"Executing task '([\w-]+)'")
FINISHED = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
ERROR = re.compile(r"^\s*(?:rankadaptor\.errors\.)?(UserError|ServiceError): (.+)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class StepLines(io.TextIOBase):
    """A text stream that writes everything to the log and echoes, per step, one readable line."""

    def __init__(self, log, terminal, names: dict[str, str] | None = None):
        self.log, self.terminal, self.pending = log, terminal, ""
        self.names = names or {}  # task name -> the display name the Kubeflow UI shows
        self.started: dict[str, float] = {}
        self.error: str | None = None  # the last step error (a UserError's or ServiceError's message)
        self.outage = False  # whether that error was a ServiceError

    def write(self, text: str) -> int:
        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in map(lambda x: ANSI.sub("", x), lines):
            self._echo(line)
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()

    def _echo(self, line: str) -> None:
        if match := STARTED.search(line):
            self.started[match[1]] = time.monotonic()
        elif match := FINISHED.search(line):
            seconds = time.monotonic() - self.started.get(match[1], time.monotonic())
            done = f"done in {seconds:.0f} s" if match[2] == "SUCCESS" else f"FAILED after {seconds:.0f} s"
            self.terminal.write(f"{self.names.get(match[1], match[1]):<22} {done}\n")
        elif match := ERROR.match(line):
            self.outage, self.error = match[1] == "ServiceError", match[2]
        elif PROGRESS in line:
            self.terminal.write(f"  {line.split(PROGRESS, 1)[1]}\n")
        self.terminal.flush()


def _null_safe_integers() -> None:
    """kfp.local (2.17) casts every integer parameter with int(), so an `Optional[int] = None` input that a
    pipeline leaves unset fails with int(None); the cluster's executor passes null through. Wrap the cast
    to leave nulls as they are, so that kfp.local runs what a cluster runs."""
    from kfp.local import executor_input_utils

    cast = executor_input_utils.executor_input_to_dict
    if getattr(cast, "null_safe", False):
        return

    def null_safe(executor_input, component_spec):
        values = executor_input.inputs.parameter_values
        unset = [name for name, value in values.items() if value.WhichOneof("kind") in (None, "null_value")]
        for name in unset:
            del values[name]
        result = cast(executor_input, component_spec)
        for name in unset:
            values[name].null_value = 0
            result.setdefault("inputs", {}).setdefault("parameterValues", {})[name] = None
        return result

    null_safe.null_safe = True
    executor_input_utils.executor_input_to_dict = null_safe


_null_safe_integers()


def named_tasks(pipeline) -> Iterator:
    """Every (task name, task) of the pipeline's IR, in the root DAG and in each sub-DAG (loop bodies, branches)."""
    spec = pipeline.pipeline_spec
    for dag in [spec.root.dag, *(c.dag for c in spec.components.values() if c.HasField("dag"))]:
        yield from dag.tasks.items()


def tasks(pipeline) -> Iterator:
    """Every task of the pipeline's IR (named_tasks without the names)."""
    return (task for _, task in named_tasks(pipeline))


def without_retries(pipeline) -> None:
    """Drop the retry policies (meant for preempted pods on a cluster): here a failure is deterministic, and
    kfp.local would repeat it with minutes of backoff."""
    for task in tasks(pipeline):
        task.ClearField("retry_policy")


def run_local(job: JobConfig, root: str | Path, verbose: bool = False) -> Path:
    """Run the job's pipeline under root; returns the report artifact's directory."""
    check_job(job, str(root))
    from pipelines.rankadaptor import arguments, build

    root = Path(root).resolve()
    _run(build(loop_cap=job.search.max_iterations), arguments(job), root, job.bank.tracking_uri, verbose)
    reports = sorted((root / "pipeline").glob("rankadaptor-*/register*/report/report.json"),
                     key=lambda p: p.stat().st_mtime)
    return reports[-1].parent


def registered_lines(report: dict, alias: str, tracking_uri: str) -> str:
    """The run's last lines: which model, version and alias were registered, and the one-line commands that
    load it in Python and serve it from the run's registry (the environment's bin on PATH: the server runs
    uvicorn from it)."""
    registration = report["registration"]
    name, version = registration["model_name"], registration["version"]
    uri = f"models:/{name}@{alias}" if registration["champion_moved"] else f"models:/{name}/{version}"
    held = (f"alias '{alias}' now points at it" if registration["champion_moved"]
            else f"alias '{alias}' stays on version {registration.get('previous_champion')}")
    adapter = "the searched" if report["decision"]["register"] == "searched" else "the uniform"
    env = f"MLFLOW_TRACKING_URI={tracking_uri}"
    return (f"registered model {name} version {version} ({adapter} adapter; {held})\n"
            f"load it:  {env} python -c 'import mlflow; model = mlflow.pyfunc.load_model(\"{uri}\")'\n"
            f"serve it: {env} PATH={Path(sys.executable).parent}:$PATH mlflow models serve -m {uri} "
            "--env-manager local")


def run_catalog(catalog: str, root: str | Path, parallel: int, verbose: bool = False) -> list[Path]:
    """Run the catalog pipeline under root (`parallel` tasks searching at once); returns the report
    directories of the tasks that searched (none when every task is unchanged)."""
    from pipelines.cluster import check_parallel
    from rankadaptor.ops.catalog import check_catalog

    check_parallel(parallel)
    jobs = check_catalog(catalog, root=str(root))
    from pipelines.rankadaptor import build_catalog

    root = Path(root).resolve()
    _run(build_catalog(parallel, max(job.search.max_iterations for job in jobs)), {"catalog": catalog}, root,
         jobs[0].bank.tracking_uri, verbose)
    newest = max((root / "pipeline").glob("rankadaptor-catalog-*"), key=lambda p: p.stat().st_mtime)
    return sorted(p.parent for p in newest.glob("*/**/register*/report/report.json"))


def _run(pipeline, arguments: dict, root: Path, tracking_uri: str, verbose: bool) -> None:
    """Run a pipeline with kfp.local under root: its output to root/run.log and a line per step on the
    terminal; a failed step ends it with that step's one-line error."""
    from kfp import local

    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri or default_tracking_uri(root / "mlflow"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "pipeline"),
               raise_on_error=True, enable_caching=True)
    without_retries(pipeline)
    log_path = root / "run.log"
    with open(log_path, "a", encoding="utf-8") as log:
        names = {name: task.task_info.name for name, task in named_tasks(pipeline)}
        stream = StepLines(log, sys.stdout, names)
        try:
            if verbose:
                pipeline(**arguments)
            else:
                with redirect_stdout(stream), redirect_stderr(stream):
                    pipeline(**arguments)
        except RuntimeError as e:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
            step = re.findall(r"'([\w-]+)'", ANSI.sub("", str(e)).partition("Inner task failed:")[2])
            failure = ServiceError if stream.outage else UserError
            raise failure(f"step {names.get(step[0], step[0]) if step else '?'} failed: {stream.error or 'see the log'} "
                            f"(full log: {log_path})") from None
