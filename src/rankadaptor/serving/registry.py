"""Register a recovered model in the MLflow model registry and move the champion alias only when it wins.

A model version is the pyfunc "model from code" of `pyfunc_model.py` (no pickle) with the adapter
artifact, its rank vector, the evaluation report and a reference to the pruned base model (URI + checksum)
as artifacts. By default (`self_contained`) the pruned base is also copied into the version's artifacts, so
the version serves from the registry's artifact store alone, whatever the pipeline's artifact bucket keeps;
with `self_contained=False` it is only referenced (one ~10 GB copy less per version of a 7B base), and the
model verifies the base's checksum at load.

One registered model per (base model, pruning, task): a job names it by `default_model_name` unless
`model_name` is given, so each task has its own champion. Lineage is kept in version tags: tasks, scores,
the selection score, rank vector, trainable parameters, pruning report, pruned model URI + checksum, adapter
URI + checksum, the evaluation report, and caller lineage (task, base model, pipeline run, bank trial ids,
budget). A version either gets everything (tags are part of its creation, and any failure after creation
deletes it) or does not exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
import time
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from rankadaptor.config import option
from rankadaptor.errors import UserError, check
from rankadaptor.infra import storage
from rankadaptor.infra.tracking import configure, ensure_experiment, redact, tracking_errors
from rankadaptor.trial import canonical_json

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
MODEL_BYTES_TAG = "model_bytes"  # the served files' size: sizes the predictor's storage
MAX_TAG_LENGTH = 100_000  # MLflow's model-registry tag value limit
REQUIREMENTS = ("torch", "transformers", "peft", "safetensors", "boto3", "mlflow", "rankadaptor")
METRIC_NAME = r"[/\w.\- :]+"  # what MLflow accepts in a metric name
MODEL_NAME = r"[\w.\-]+"  # what MLflow accepts in a registered model's name (and a URI models:/<name>@alias)


@dataclasses.dataclass
class RegistryConfig:
    model_name: str = option("", "registered model name in the MLflow model registry; empty: one model per base "
                                 "model, pruning and task, named <base model>-<prune mode><ratio %>-<target "
                                 "task>, e.g. aidreams-260k-width20-ppl-heldout (docs/deploy.md)")
    tracking_uri: str = option("", "MLflow tracking/registry URI; empty: MLFLOW_TRACKING_URI, else the embedded "
                                   "sqlite store under ./mlflow", set_by_job=True)
    champion_alias: str = option("champion", "alias that points at the best version on the held-out split")
    selection_metric: str = option("report_mean", "score deciding the champion: <split>_mean or <split>_<task>, "
                                                  "read from the evaluation report of that split")
    self_contained: bool = option(True, "copy the pruned base model into the version, so it serves from the "
                                        "registry's artifact store alone (whatever the pipeline bucket keeps); "
                                        "false: reference it by URI + checksum (one base copy less per version)")
    experiment: str = option("rankadaptor-registry", "MLflow experiment of the runs that log registered models")

    def validate(self) -> None:
        check(self.model_name == "" or re.fullmatch(MODEL_NAME, self.model_name) is not None,
              f"model_name={self.model_name!r} must be letters, digits, '_', '-', '.' (empty: named by the rule "
              "<base model>-<pruning>-<task>)")
        check(re.fullmatch(r"[\w\-]+", self.champion_alias) is not None and self.champion_alias.lower() != "latest"
              and re.fullmatch(r"v\d+", self.champion_alias) is None,
              f"champion_alias={self.champion_alias!r} must be letters, digits, '_' or '-' (not 'latest' or v<N>)")
        check(re.fullmatch(r"[a-z0-9]+_\w+", self.selection_metric) is not None,
              f"selection_metric={self.selection_metric!r} must look like <split>_mean or <split>_<task>, "
              "e.g. 'report_mean'")
        check(bool(self.experiment), "experiment must be non-empty")


def default_model_name(base_model: str, prune_mode: str, ratio: float, nm: str, task: str) -> str:
    """The registered model of (base model, pruning, task): `<base model>-<prune mode><ratio %>-<task>`, each part
    with characters MLflow refuses replaced by '-': the base model's last path part (a hub id's name), the
    pruning as mode and percent removed (or the N:M pattern), the target task (`ppl:heldout` -> `ppl-heldout`)."""
    base = base_model.rstrip("/").rsplit("/", 1)[-1]
    pruning = f"{prune_mode}{nm}" if nm else f"{prune_mode}{ratio * 100:g}"
    name = "-".join(re.sub(r"[^\w.]+", "-", part).strip("-.") for part in (base, pruning, task))
    return re.sub(r"-{2,}", "-", name)


def selection_score(report: dict[str, Any], metric: str) -> float:
    """The value of `<split>_mean` / `<split>_<task>` from an evaluation report (metrics.json) of that split."""
    split, _, name = metric.partition("_")
    check(isinstance(report, dict) and isinstance(report.get("tasks"), dict),
          "report must be an evaluation report: {tasks: {name: {metric, value, ...}}, mean, split}")
    check(report.get("split") == split, f"selection_metric {metric!r} needs a report of split {split!r}, "
                                        f"got split {report.get('split')!r}")
    if name == "mean":
        value = report.get("mean")
    else:
        check(name in report["tasks"], f"selection_metric {metric!r}: task {name!r} is not in the report; "
                                       f"accepted: {[f'{split}_mean'] + [f'{split}_{t}' for t in report['tasks']]}")
        value = report["tasks"][name].get("value")
    check(isinstance(value, (int, float)) and not isinstance(value, bool),
          f"selection_metric {metric!r}: the report holds no numeric value ({value!r})")
    return float(value)


def register(adapter_uri: str, pruned_model_uri: str, report: dict[str, Any], config: RegistryConfig,
             lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register adapter + pruned base as a new version; move the champion alias if it beats the champion.

    lineage: extra version tags (e.g. pipeline_run_id, trial_ids, budget); values other than strings are
    stored as JSON. Returns {model_name, version, champion_moved, previous_champion} (versions as ints, None
    if none).
    Inputs are all checked before anything is written. The two halves run in two pipeline steps: log_version
    where the weights are (it uploads them), create_version in a small step that needs none."""
    return create_version(log_version(adapter_uri, pruned_model_uri, report, config, lineage), config)


def log_version(adapter_uri: str, pruned_model_uri: str, report: dict[str, Any], config: RegistryConfig,
                lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything of a version but the version itself: the checks, its tags and the logged pyfunc model (the
    pruned base copied in when self-contained). Returns what create_version needs, as plain JSON."""
    config.validate()
    check(bool(config.model_name), "registry model_name is empty: give one (a job names it by "
                                   "default_model_name from its base model, pruning and task)")
    score = selection_score(report, config.selection_metric)
    adapter_dir, base_dir = storage.local_dir(adapter_uri), storage.local_dir(pruned_model_uri)
    check((adapter_dir / "rank_vector.json").is_file(),
          f"adapter {adapter_uri!r} has no rank_vector.json: expected an adapter artifact written by recover")
    ranks = storage.read_json(adapter_dir / "rank_vector.json")
    check("trainable_params" in ranks, f"adapter {adapter_uri!r}: rank_vector.json has no trainable_params: "
                                       "expected an adapter artifact written by recover")
    rank_vector = ranks["rank_vector"]
    base_ref = {"uri": _absolute(pruned_model_uri), "checksum": storage.checksum(base_dir)}
    tags = version_tags(report, score, config.selection_metric, ranks, base_dir, base_ref,
                        _absolute(adapter_uri), storage.checksum(adapter_dir), config.self_contained, lineage or {})
    served = [adapter_dir, *([base_dir] if config.self_contained else [])]  # what a predictor downloads
    tags[MODEL_BYTES_TAG] = str(sum(f.stat().st_size for d in served for f in d.rglob("*") if f.is_file()))

    uri = configure(config.tracking_uri or None)
    with tracking_errors(uri):
        model_info = _log_model(adapter_dir, base_dir, base_ref, rank_vector, report, config, uri)
    return {"model_name": config.model_name, "model_uri": model_info.model_uri, "run_id": model_info.run_id,
            "model_id": model_info.model_id, "score": score, "tags": tags}


def create_version(logged: dict[str, Any], config: RegistryConfig, description: str = "",
                   model_description: str = "") -> dict[str, Any]:
    """The registered version of a logged model (log_version) and the champion rule; a version either gets
    its tags, its description and the rule or does not exist. model_description: the registered model's,
    set when it has none."""
    check(logged.get("model_name") == config.model_name, f"the logged model is for {logged.get('model_name')!r}, "
                                                         f"not {config.model_name!r}")
    uri = configure(config.tracking_uri or None)
    with tracking_errors(uri):
        from mlflow import MlflowClient

        client = MlflowClient()
        _ensure_registered_model(client, config.model_name, model_description)
        created = client.create_model_version(config.model_name, source=logged["model_uri"], run_id=logged["run_id"],
                                              tags=logged["tags"], model_id=logged["model_id"],
                                              description=redact(description) or None)
        try:
            moved, previous = _maybe_move_champion(client, config, int(created.version), logged["score"],
                                                   logged["tags"].get(ROWS_TAG))
        except BaseException:
            client.delete_model_version(config.model_name, created.version)
            raise
    return {"model_name": config.model_name, "version": int(created.version), "champion_moved": moved,
            "previous_champion": previous}


def _absolute(uri: str) -> str:
    """A URI that means the same from another working directory (local paths made absolute)."""
    return uri if storage.is_s3(uri) else str(Path(uri).expanduser().resolve())


def _ensure_registered_model(client, name: str, description: str = "") -> None:
    """The registered model, created with `description` (or given it, when it has none)."""
    from mlflow.exceptions import MlflowException

    description = redact(description)
    try:
        client.create_registered_model(name, description=description or None)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        if description and not client.get_registered_model(name).description:
            client.update_registered_model(name, description=description)


def log_report(run_id: str, directory: Path, metrics: dict[str, float], params: dict[str, Any],
               config: RegistryConfig) -> None:
    """The report into the run that logged the version: every file of `directory` (report.md, report.json,
    the plots) as artifacts under report/, `metrics` (flat, MLflow-valid names) and `params` (the job's main
    settings; values other than strings as JSON)."""
    from mlflow.entities import Metric, Param

    names = sorted(k for k in metrics if re.fullmatch(METRIC_NAME, k) is None)
    check(not names, f"metric names {names} hold characters MLflow refuses (accepted: letters, digits, _ - . / : "
                     "and spaces)")
    uri = configure(config.tracking_uri or None)
    with tracking_errors(uri):
        from mlflow import MlflowClient

        client = MlflowClient()
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                         params=[Param(k, redact(v if isinstance(v, str) else canonical_json(v)))
                                 for k, v in params.items()])
        client.log_artifacts(run_id, str(directory), "report")


def version_tags(report: dict[str, Any], score: float, metric: str, ranks: dict[str, Any], base_dir: Path,
                 base_ref: dict[str, str], adapter_uri: str, adapter_checksum: str, self_contained: bool,
                 lineage: dict[str, Any]) -> dict[str, str]:
    tags = {
        "tasks": ",".join(sorted(report["tasks"])),
        "split": str(report["split"]),
        "scores": canonical_json({t: r.get("value") for t, r in report["tasks"].items()}),
        metric: repr(score),
        "selection_metric": metric,
        "rank_vector": canonical_json(ranks["rank_vector"]),
        "trainable_params": str(ranks["trainable_params"]),
        "pruned_model_uri": base_ref["uri"],
        "pruned_model_checksum": base_ref["checksum"],
        "adapter_uri": adapter_uri,
        "adapter_checksum": adapter_checksum,
        "self_contained": str(self_contained).lower(),
        "evaluation_report": canonical_json(report),
    }
    if (base_dir / "prune_report.json").is_file():
        tags["pruning"] = canonical_json(storage.read_json(base_dir / "prune_report.json"))
    clash = sorted(set(lineage) & set(tags))
    check(not clash, f"lineage keys {clash} are reserved; reserved tags: {sorted(tags)}")
    tags.update({k: v if isinstance(v, str) else canonical_json(v) for k, v in lineage.items()})
    tags = {k: redact(v) for k, v in tags.items()}
    too_long = sorted(k for k, v in tags.items() if len(v) > MAX_TAG_LENGTH)
    check(not too_long, f"version tag(s) {too_long} exceed MLflow's {MAX_TAG_LENGTH}-character limit")
    return tags


def _log_model(adapter_dir: Path, base_dir: Path, base_ref: dict[str, str], rank_vector: list[int],
               report: dict[str, Any], config: RegistryConfig, tracking_uri: str):
    """Log the pyfunc model in its own run (ended FAILED if logging fails); returns MLflow's ModelInfo."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="rankadaptor-register-") as tmp:
        files = {"base_model_ref": base_ref, "rank_vector": {"rank_vector": rank_vector}, "evaluation_report": report}
        artifacts = {"adapter": str(adapter_dir)}
        for name, content in files.items():
            storage.write_json_atomic(Path(tmp, f"{name}.json"), content)
            artifacts[name] = str(Path(tmp, f"{name}.json"))
        if config.self_contained:
            artifacts["base_model"] = str(base_dir)  # log_model copies it into the registry's artifact store
        with mlflow.start_run(experiment_id=ensure_experiment(config.experiment, tracking_uri),
                              run_name=f"register-{config.model_name}", nested=True):
            return mlflow.pyfunc.log_model(name="model", python_model=str(PYFUNC_FILE), artifacts=artifacts,
                                           input_example=input_example(), pip_requirements=requirements())


def registered_model(client, name: str):
    """The registered model `name` (MLflow's RegisteredModel), or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def model_state(name: str, alias: str = "champion", tracking_uri: str | None = None
                ) -> tuple[int | None, int | None, dict[str, str]]:
    """(the version the alias points at, the latest version, its tags) of a registered model; None (no tags)
    for what it lacks: a model never registered lacks all."""
    uri = configure(tracking_uri)
    with tracking_errors(uri):
        from mlflow import MlflowClient

        client = MlflowClient()
        if (model := registered_model(client, name)) is None:
            return None, None, {}
        versions = client.search_model_versions(f"name='{name}'")
        latest = max(versions, key=lambda v: int(v.version), default=None)
    champion = model.aliases.get(alias)
    return (int(champion) if champion is not None else None, int(latest.version) if latest else None,
            dict(latest.tags) if latest else {})


ROWS_TAG = "task_checksum"  # lineage tag: the content hash of the rows a version's scores are measured on


def _maybe_move_champion(client, config: RegistryConfig, version: int, score: float,
                         rows: str | None = None) -> tuple[bool, int | None]:
    """Point the alias at `version` if there is no champion, the new score is strictly higher, or the champion
    was scored on other rows of the task (ROWS_TAG differs: its score is not comparable, and the new rows win)."""
    champion_version = client.get_registered_model(config.model_name).aliases.get(config.champion_alias)
    if champion_version is None:
        moves, previous = True, None
    else:
        champion = client.get_model_version(config.model_name, str(champion_version))
        previous = int(champion.version)
        moves = (rows is not None and champion.tags.get(ROWS_TAG, rows) != rows) or score > _score_of(champion, config)
    if moves:
        client.set_registered_model_alias(config.model_name, config.champion_alias, str(version))
        _settle_champion(client, config, rows)
    return moves, previous


def _settle_champion(client, config: RegistryConfig, rows: str | None) -> None:
    """Compare-and-set after the write: MLflow's alias update is a plain overwrite, so two runs registering at
    once could leave the worse version champion. After moving the alias, each writer re-reads the versions
    scored on the same rows and points the alias at the best (the earliest among equals, as the rule keeps
    an equal champion); whichever writer finishes last has seen every version, so the alias settles there."""
    versions = [v for v in client.search_model_versions(f"name='{config.model_name}'")
                if rows is None or v.tags.get(ROWS_TAG) == rows]
    scored = []
    for v in versions:
        with contextlib.suppress(UserError):
            scored.append((_score_of(v, config), -int(v.version)))
    if scored:
        best = str(-max(scored)[1])
        if str(client.get_registered_model(config.model_name).aliases.get(config.champion_alias)) != best:
            client.set_registered_model_alias(config.model_name, config.champion_alias, best)


def _score_of(champion, config: RegistryConfig) -> float:
    """The champion version's selection score, read from its tag."""
    value = champion.tags.get(config.selection_metric)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"current {config.champion_alias!r} of {config.model_name!r} (version {champion.version}) "
                        f"has no numeric tag {config.selection_metric!r} ({value!r}): cannot compare; set "
                        "that tag or move the alias by hand") from None


def input_example() -> tuple[list[str], dict[str, Any]]:
    """A request (prompts, params): MLflow builds the version's signature from it and predict's type hints
    (input: strings, checked on every request; output: strings; params: max_new_tokens and temperature with
    these defaults), running it once when the model is logged."""
    from rankadaptor.serving.pyfunc_model import DEFAULT_MAX_NEW_TOKENS

    return ["Once upon a time"], {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "temperature": 0.0}


def requirements() -> list[str]:
    """Pinned to what registered the model (so MLflow does not infer them by loading the model)."""
    return [f"{name}=={installed_version(name)}" for name in REQUIREMENTS]
