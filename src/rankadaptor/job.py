"""The job: one typed configuration of a whole RankAdaptor run, validated once when it loads.

Top-level fields are the main choices (the Kubeflow UI's parameters); each stage has its typed config; the
bank's location and the runtime settings (how a run goes, never what it computes) have their own sections.
A step runs `job.<stage>_config(...)`: the stage's options plus what the job sets (seed, runtime, inputs).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankadaptor import config as cfg
from rankadaptor import widths
from rankadaptor.config import option
from rankadaptor.errors import UserError, check
from rankadaptor.evaluate.config import EvalConfig
from rankadaptor.evaluate.tasks import ACCEPTED, TASKS, task_ok
from rankadaptor.infra.bank import DEFAULT_EXPERIMENT
from rankadaptor.infra.claims import DIGEST
from rankadaptor.prune.config import PruneConfig
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.surrogate import SurrogateConfig
from rankadaptor.serving.registry import RegistryConfig, default_model_name
from rankadaptor.trial import CHEAP_FRACTION, fidelity

BUNDLED = Path(__file__).parent / "bundled"
STAGES = ("prune", "recover", "evaluate", "surrogate", "search", "registry")
# The main choices: typed top-level pipeline parameters; every other field travels in `stage_options`.
MAIN_CHOICES = ("base_model", "data", "heldout_text", "target_task", "source_tasks", "report_tasks", "eval_data_dir",
                "bootstrap_trials", "adalora_baseline", "seed")
# The stage options people change most, promoted to typed top-level parameters of the main pipeline (named
# <stage>_<field>, e.g. prune_ratio); from_parameters merges them back into their stage.
PROMOTED = ("prune.ratio", "recover.epochs", "search.max_iterations", "search.threshold", "registry.model_name")
INPUTS = ("base_model", "data", "heldout_text", "eval_data_dir")  # the fields naming the user's weights and data
FINGERPRINTS = "fingerprints"  # the job JSON's key for its inputs' content (rankadaptor.infra.fingerprint)
DIGEST_TAG = DIGEST  # a registered version's tag holding its job's digest (job_digest), as a claim's


def _runtime_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    """One field per runtime option of the stages (same name: same setting), with its type and help."""
    fields: dict[str, tuple[str, Any, dataclasses.Field]] = {}
    for cls in (RecoverConfig, PruneConfig, EvalConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if cfg.is_runtime(f) and f.name not in fields:
                fields[f.name] = (f.name, hints[f.name], option(cfg.default_of(f), cfg.help_text(f)))
    return list(fields.values())


RuntimeConfig = dataclasses.make_dataclass("RuntimeConfig", _runtime_fields())
RuntimeConfig.__module__ = __name__
RuntimeConfig.__doc__ = ("How a job's steps run (device, memory, speed, checkpointing), never what they compute: "
                         "generated from the stage options marked runtime=True, and left out of trial identity.")


@dataclass
class BankConfig:
    tracking_uri: str = option("", "MLflow tracking URI of the observation bank and the model registry; empty: "
                                   "MLFLOW_TRACKING_URI, else the embedded sqlite store")
    experiment: str = option(DEFAULT_EXPERIMENT, "MLflow experiment of the observation bank")


@dataclass
class JobConfig:
    base_model: str = option("", "Base model to prune: local checkpoint directory, s3:// URI or hub id (from the "
                                 "image's cache).")
    data: str = option("", "Recovery data (Alpaca JSON/JSONL or text, local or s3://); empty samples a "
                           "self-distillation corpus from the base model.")
    heldout_text: str = option("", "Held-out text for the ppl:heldout task when data is given.")
    target_task: str = option("ppl:heldout", "What the search maximises: an lm-eval task (e.g. boolq), your "
                                             "multiple-choice task mc:<name>, ppl:heldout, ppl:<lm-eval task> or "
                                             "your text ppl:<name> (docs/tasks.md).")
    source_tasks: list[str] = option(["ppl:boolq", "ppl:piqa", "ppl:hellaswag", "ppl:openbookqa"],
                                     "Tasks of the bootstrap trials the surrogate is meta-pretrained on.")
    report_tasks: list[str] = option(list(TASKS), "Zero-shot tasks of the final comparison table (lm-eval tasks, "
                                                  "mc:<name>).")
    eval_data_dir: str = option("", "Directory (local or s3://) of <task>_<split>.jsonl files and your tasks' "
                                    "<name>.jsonl / <name>.txt; empty uses lm-eval's hub datasets.")
    task_files: dict[str, str] = option({}, "Your tasks' own files by task name, e.g. {'mc:tickets': "
                                            "'s3://b/tickets.jsonl', 'ppl:notes': 'notes.txt'}, instead of "
                                            "<name>.jsonl / <name>.txt in eval_data_dir.")
    bootstrap_trials: int = option(6, "Random rank vectors measured on the source tasks when the bank lacks them.")
    bootstrap_fraction: float = option(CHEAP_FRACTION, "Share of the recovery steps a bootstrap trial trains (1 = a "
                                                       "full recovery): a short recovery ranks vectors as well as a "
                                                       "second full one (benchmarks/RESULTS.md, 'Fidelities').")
    adalora_baseline: bool = option(False, "Also run the AdaLoRA baseline.")
    losa_baseline: bool = option(False, "Also run LoSA's rank allocation (ranks from the prune report's reconstruction "
                                        "error, the baseline's budget) as a baseline row; always on for "
                                        "unstructured-sparse jobs.")
    losa_start: bool = option(False, "Give the search LoSA's rank vector as a measured starting trial (runs the "
                                     "LoSA baseline).")
    seed: int = option(0, "The job's one seed: corpus, calibration, bootstrap vectors, recovery, evaluation "
                          "splits, surrogate and search sampler.")
    corpus_docs: int = option(400, "Documents sampled for the self-distillation corpus.")
    corpus_tokens: int = option(96, "Tokens per sampled document.")
    prune: PruneConfig = option(PruneConfig(), "Pruning options (the model and calibration text come from the job).")
    recover: RecoverConfig = option(RecoverConfig(), "Recovery options; recover.rank is the baseline's uniform rank "
                                                     "and sets the search's default budget.")
    evaluate: EvalConfig = option(EvalConfig(), "Evaluation options (tasks, split and data come from the job).")
    surrogate: SurrogateConfig = option(SurrogateConfig(), "Performance-model options.")
    search: SearchConfig = option(SearchConfig(),
                                  "Search options (threshold, max_iterations, budget, ...).")
    registry: RegistryConfig = option(RegistryConfig(), "Model-registry options (model_name, champion rule, ...).")
    bank: BankConfig = option(BankConfig(), "Where the observation bank (and the registry) lives.")
    runtime: RuntimeConfig = option(RuntimeConfig(), "How steps run (device, compile, memory, checkpoints); "
                                                     "never part of a trial's identity.")

    @staticmethod
    def owns_stage_inputs(names: list[str]) -> str:
        """Why the job refuses these stage options (config.from_dict asks)."""
        runtime = {f.name for f in dataclasses.fields(RuntimeConfig)}
        if set(names) <= runtime:
            return f"set them under `runtime` ({sorted(runtime)})"
        return "the job sets them (seed: the job's seed; models, data, tasks and splits: its artifacts and fields)"

    @property
    def bootstrap_fidelity(self) -> str:
        """The bootstrap trials' fidelity name (trial.fidelity of bootstrap_fraction)."""
        return fidelity(self.bootstrap_fraction)

    @property
    def baseline_rank(self) -> int:
        """The uniform LoRA rank of the baseline, of the default budget, and of every report text."""
        return self.recover.rank

    @property
    def is_sparse(self) -> bool:
        """An unstructured-sparse job (prune.mode unstructured): every recovery is masked so it stays sparse."""
        return self.prune.mode == "unstructured"

    @property
    def trial_method(self) -> str:
        """How trials and the uniform anchor recover: masked LoRA (losa) for sparse jobs, else LoRA."""
        return "losa" if self.is_sparse else "lora"

    @property
    def table_tasks(self) -> list[str]:
        """The tasks of the comparison table, once each: the target, then the report tasks (it may be one)."""
        return list(dict.fromkeys([self.target_task, *self.report_tasks]))

    @property
    def all_tasks(self) -> list[str]:
        """Every task the job scores, once each: the table's and the source tasks."""
        return list(dict.fromkeys([*self.table_tasks, *self.source_tasks]))

    def validate(self) -> None:
        check(bool(self.base_model), "base_model is required: a local checkpoint directory, s3:// URI or hub id")
        for task in [self.target_task, *self.source_tasks, *self.report_tasks]:
            check(task_ok(task), f"task {task!r} is not accepted: use an lm-eval task or one of your own; "
                                 f"accepted: {ACCEPTED}")
        unused = sorted(set(self.task_files) - set(self.all_tasks))
        check(not unused, f"task_files names {unused}, which no task of the job uses (target_task, source_tasks, "
                          "report_tasks)")
        for name in ("source_tasks", "report_tasks"):
            tasks = getattr(self, name)
            check(len(set(tasks)) == len(tasks), f"{name}={tasks} lists a task twice")
        check(self.target_task not in self.source_tasks,
              f"target_task {self.target_task!r} is also a source task: meta-pretraining must not see it")
        check(0 < self.bootstrap_fraction <= 1, f"bootstrap_fraction={self.bootstrap_fraction} must be in (0, 1]: "
                                                "a share of the recovery steps")
        check(self.bootstrap_trials == 0 or self.bootstrap_trials >= 3,
              f"bootstrap_trials={self.bootstrap_trials}: meta-pretraining needs 0 (none) or at least 3 per "
              "source task")
        check(self.corpus_docs >= 10 and self.corpus_tokens >= 16,
              f"corpus_docs={self.corpus_docs} must be >= 10 and corpus_tokens={self.corpus_tokens} >= 16")
        for name, config in (("prune", self.prune_config("")), ("recover", self.recover_config("")),
                             ("evaluate", self.eval_config(self.all_tasks, "select", None)),
                             ("surrogate", self.surrogate_config()), ("search", self.search_config([1])),
                             ("registry", self.registry_config())):
            try:
                config.validate()
            except UserError as e:
                raise UserError(f"{name}: {e}") from None
        outside = sorted(set(self.search.candidates) - set(self.recover.candidates))
        check(not outside, f"search.candidates={self.search.candidates} has rank(s) {outside} that recovery refuses "
                           f"(recover.candidates={self.recover.candidates}): make the search's candidates a subset")
        check(self.search.searched_layers is None or self.search.fixed_rank in self.recover.candidates,
              f"search.fixed_rank={self.search.fixed_rank} is not in recover.candidates={self.recover.candidates}")

    # ---- the config each step runs: the stage's options plus what the job sets

    def _filled(self, config: Any, **inputs: Any) -> Any:
        names = {f.name for f in dataclasses.fields(config)}
        runtime = {k: v for k, v in dataclasses.asdict(self.runtime).items() if k in names}
        return dataclasses.replace(config, **{**runtime, **({"seed": self.seed} if "seed" in names else {}), **inputs})

    def prune_config(self, calibration: str, ppl_text: str | None = None) -> PruneConfig:
        return self._filled(self.prune, model=self.base_model, calibration=calibration, ppl_text=ppl_text)

    def recover_config(self, data: str, rank_vector: list[int] | None = None, method: str | None = None,
                       schedule: str | None = None) -> RecoverConfig:
        """A recovery run the job's way (method: the trial method unless a baseline names another). A search
        budget of the job's own holds its trials instead of recovery's (uniform recover.rank)."""
        return self._filled(self.recover, data=data, rank_vector=rank_vector, method=method or self.trial_method,
                            allow_over_budget=self.runtime.allow_over_budget or self.search.budget is not None,
                            **({"schedule": schedule} if schedule else {}))

    def eval_config(self, tasks: list[str], split: str, heldout: str | None) -> EvalConfig:
        return self._filled(self.evaluate, tasks=tasks, split=split, data_dir=self.eval_data_dir or None,
                            task_files={t: u for t, u in self.task_files.items() if t in tasks}, ppl_text=heldout)

    def surrogate_config(self) -> SurrogateConfig:
        return self._filled(self.surrogate)

    def search_config(self, cost_per_rank: list[int]) -> SearchConfig:
        """The search's options, its default budget being the baseline rank on every layer of this model."""
        return self._filled(self.search, budget=self.budget(cost_per_rank))

    def budget(self, cost_per_rank: list[int]) -> int:
        """The LoRA parameters every trial may train: search.budget, else the baseline's uniform rank."""
        return widths.budget(cost_per_rank, self.search.budget, self.baseline_rank)

    def registry_config(self) -> RegistryConfig:
        """The registry's options; an empty model_name becomes this job's (base model, pruning, task) model."""
        name = self.registry.model_name or default_model_name(self.base_model, self.prune.mode, self.prune.ratio,
                                                              self.prune.nm, self.target_task)
        return self._filled(self.registry, tracking_uri=self.bank.tracking_uri, model_name=name)

    def tracking_uri(self) -> str | None:
        return self.bank.tracking_uri or None


def job_from_dict(values: dict[str, Any]) -> JobConfig:
    return cfg.from_dict(JobConfig, values)


def job_to_json(job: JobConfig, fingerprints: dict[str, str] | None = None) -> str:
    """The JSON every step receives; with the inputs' fingerprints, so that a pipeline cache keyed by it
    misses when the content behind an input's URI changes (rankadaptor.infra.fingerprint)."""
    return json.dumps({**cfg.to_dict(job), **({FINGERPRINTS: fingerprints} if fingerprints else {})})


def job_from_json(text: str) -> JobConfig:
    values = json.loads(text)
    values.pop(FINGERPRINTS, None)  # only for cache keys: the steps read the inputs themselves
    return job_from_dict(values)


def job_digest(text: str) -> str:
    """What a job's JSON computes, as one hash: its options and its inputs' fingerprints, not `runtime` (how
    its steps run). A registered version keeps it (tag job_digest), so a task catalog can tell an unchanged
    task from one whose data or options changed (rankadaptor.ops.catalog)."""
    import hashlib

    values = json.loads(text)
    values.pop("runtime", None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def job_inputs(job: JobConfig) -> dict[str, str]:
    """The job's inputs that are set, by field name (a task's own file: task_files.<task>): the URIs a user
    gives."""
    return {**{name: getattr(job, name) for name in INPUTS if getattr(job, name)},
            **{f"task_files.{task}": uri for task, uri in job.task_files.items()}}


def load_job(yaml_path: str | None = None, overrides: dict | None = None) -> JobConfig:
    """A job from YAML (default: the bundled tiny-model job, its relative paths made absolute); overrides
    replace whole top-level fields (a stage's section too)."""
    import yaml

    if yaml_path is not None:
        return cfg.load(JobConfig, yaml_path, overrides)
    values = yaml.safe_load((BUNDLED / "default.yaml").read_text())
    for key in ("base_model", "eval_data_dir"):
        values[key] = str(BUNDLED / values[key])
    return job_from_dict({**values, **(overrides or {})})


def _changed(value: Any, default: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in default or v != default[k]}  # task_files: default {}
    return value


def promoted_name(path: str) -> str:
    """The pipeline parameter of a promoted stage option: prune.ratio -> prune_ratio."""
    return path.replace(".", "_")


def promoted_fields(paths: tuple[str, ...] = PROMOTED) -> list[tuple[str, str, Any, dataclasses.Field]]:
    """(parameter name, stage, type, the stage config's field) of each promoted stage option, for the
    pipeline's typed parameters (name, type, default and help come from the field)."""
    stages = {f.name: type(cfg.default_of(f)) for f in dataclasses.fields(JobConfig)}
    found = []
    for path in paths:
        stage, name = path.split(".")
        field = {f.name: f for f in dataclasses.fields(stages[stage])}[name]
        found.append((promoted_name(path), stage, typing.get_type_hints(stages[stage])[name], field))
    return found


def _without(values: dict[str, Any], promoted: tuple[str, ...]) -> dict[str, Any]:
    cut = {tuple(p.split(".")) for p in promoted}
    return {k: {n: x for n, x in v.items() if (k, n) not in cut} if isinstance(v, dict) else v
            for k, v in values.items()}


def parameters(job: JobConfig, promoted: tuple[str, ...] = ()) -> dict[str, Any]:
    """The job as pipeline arguments: the main choices, the `promoted` stage options as their own parameters,
    and in `stage_options` what else differs from the defaults (KFP parameters cannot hold null, and a run's
    options read best as what it changed)."""
    values = cfg.to_dict(job)
    lifted = {name: values[stage][field.name] for name, stage, _, field in promoted_fields(promoted)}
    values, defaults = _without(values, promoted), _without(cfg.to_dict(JobConfig()), promoted)
    options = {k: _changed(v, defaults[k]) for k, v in values.items()
               if k not in MAIN_CHOICES and v != defaults[k]}
    nulls = sorted(f"{k}.{n}" for k, v in options.items() if isinstance(v, dict) for n, x in v.items() if x is None)
    check(not nulls, f"{nulls} cannot be null in pipeline parameters; leave them at their defaults")
    return {**{k: values[k] for k in MAIN_CHOICES}, **lifted, "stage_options": options}


def from_parameters(stage_options: dict[str, Any], **choices: Any) -> JobConfig:
    """The job back from pipeline arguments (what the configure component validates): the main choices, the
    promoted stage options merged into their stage (None: not a parameter of this pipeline), stage_options."""
    unknown = sorted(set(stage_options) & set(MAIN_CHOICES))
    check(not unknown, f"stage_options may not hold the main choices {unknown}: set them as parameters")
    promoted = promoted_fields()
    extra = sorted(set(choices) - set(MAIN_CHOICES) - {name for name, *_ in promoted})
    check(not extra, f"unknown pipeline parameters {extra}; accepted: {[*MAIN_CHOICES, *(n for n, *_ in promoted)]}")
    nested = {k: dict(v) if isinstance(v, dict) else v for k, v in stage_options.items()}
    for name, stage, _, field in promoted:
        if choices.get(name) is None:
            continue
        section = nested.setdefault(stage, {})
        check(isinstance(section, dict) and field.name not in section,
              f"stage_options sets {stage}.{field.name} and so does the parameter {name}: set it once, as {name}")
        section[field.name] = choices[name]
    return job_from_dict({**{k: v for k, v in choices.items() if k in MAIN_CHOICES}, **nested})


def check_loop_cap(job: JobConfig, loop_cap: int) -> None:
    """A compiled pipeline unrolls its search loop loop_cap times (0: it has no search loop): refuse a job
    that needs more."""
    check(loop_cap == 0 or job.search.max_iterations <= loop_cap,
          f"search.max_iterations={job.search.max_iterations} is more than the {loop_cap} iterations this compiled "
          f"pipeline holds: lower it, or compile the pipeline with a larger loop")
