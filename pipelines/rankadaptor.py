"""The RankAdaptor pipelines: the main search, the parallel bank bootstrap, and the baselines.

After the baselines, a go/no-go (cheap trials) decides whether the search runs at all; if not, the
uniform adapter is registered and the bootstrap, meta-pretraining and loop are skipped. KFP v2 has no while
loop, so the search loop is unrolled at compile time (LOOP_CAP iterations): iteration
i+1 runs only under `dsl.Else` of iteration i's gate, which stops the loop when the search converged or the
job's search.max_iterations trials are done; each way out ends in the register step. Parameters come from
`rankadaptor.job.JobConfig` (pipelines/parameters.py), the placement from one table (pipelines/placement.py:
every step is a `gpu_step` or a `cpu_step` of it). The same pipeline runs on a cluster and under kfp.local.
The catalog pipeline runs the same search for each task of a task catalog that needs it, in parallel.
"""

import re

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from components.baselines import baselines
from components.bootstrap import bootstrap, bootstrap_trial, bootstrap_vectors
from components.catalog import plan_catalog, shared_job
from components.configure import configure
from components.data import prepare_data
from components.evaluate import evaluate
from components.gate import gate
from components.go import go_check, go_gate
from components.meta_pretrain import meta_pretrain
from components.propose import propose
from components.prune import prune
from components.recover import recover
from components.register import evaluate_best, register
from components.update import update
from pipelines.limits import LOOP_CAP, PARALLEL_TASKS, PARALLEL_TRIALS, scratch_size
from pipelines.parameters import named, with_parameters
from pipelines.placement import NAMES, cpu_step, gpu_step, split, with_placement
from rankadaptor.job import MAIN_CHOICES, PROMOTED, promoted_name

DEFAULT_NAME = re.compile(r"(condition|condition-branches|for-loop)-\d+")  # what KFP calls an unnamed group


def name_branches(pipeline):
    """Name each If/Else pair's group after its branches (`stop-after-1-or-continue-after-1`): KFP has no name
    option for it and shows it as `condition-branches-N`."""
    spec = pipeline.pipeline_spec
    for dag in [spec.root.dag, *(c.dag for c in spec.components.values() if c.HasField("dag"))]:
        for task in dag.tasks.values():
            if DEFAULT_NAME.fullmatch(task.task_info.name) and task.task_info.name.startswith("condition-branches"):
                branches = spec.components[task.component_ref.name].dag.tasks.values()
                task.task_info.name = "-or-".join(sorted((t.task_info.name for t in branches), reverse=True))
    return pipeline


def prepared(place: dict, loop_cap: int = 0, **job_options):
    """configure -> prepare_data -> prune, the start of every pipeline: (job JSON, data, pruned model, its
    structure). configure always runs: it fingerprints the inputs, and its JSON keys every later step's cache."""
    job = cpu_step(configure, place, **job_options, loop_cap=loop_cap, scratch_size=scratch_size())
    job = job.set_caching_options(False).output
    return (job, *pruned_from(job, place))


def pruned_from(job, place: dict):
    """prepare_data -> prune for a job JSON: (data, pruned model, its structure)."""
    corpus = gpu_step(prepare_data, place, job=job).output
    pruning = gpu_step(prune, place, job=job, data=corpus)
    return corpus, pruning.outputs["pruned_model"], pruning.outputs["structure"]


@dsl.pipeline(name="rankadaptor-iteration", description="One search iteration: propose, recover, evaluate, update.")
@with_placement
def iteration(job: str, search_state: Input[Artifact], pruned_model: Input[Model], data: Input[Dataset],
              *placement) -> Artifact:
    place = dict(zip(NAMES, placement, strict=True))
    proposal = cpu_step(propose, place, job=job, search_state=search_state)
    adapter = gpu_step(recover, place, job=job, pruned_model=pruned_model, data=data, proposal=proposal.output)
    metrics = gpu_step(evaluate, place, job=job, pruned_model=pruned_model, data=data, adapter=adapter.output)
    next_state = cpu_step(update, place, job=job, search_state=search_state, proposal=proposal.output,
                          metrics=metrics.output, adapter=adapter.output)
    for task in (proposal, next_state):
        task.set_caching_options(False)  # they read and write the observation bank
    return next_state.outputs["next_state"]


def search(job, corpus, pruned, structure, seeded, place: dict, loop_cap: int) -> None:
    """baselines -> go/no-go -> (go) the bootstrap `seeded()` -> meta-pretrain -> the unrolled search loop ->
    register, or (no-go) the uniform anchor alone -> register. seeded: makes (or returns) the bootstrap task."""
    baseline = gpu_step(baselines, place, job=job, pruned_model=pruned, data=corpus).output
    decision = gpu_step(go_check, place, job=job, pruned_model=pruned, structure=structure, data=corpus,
                        baselines=baseline).set_caching_options(False).output  # it reads and writes the bank
    verdict = cpu_step(go_gate, place, decision=decision).set_caching_options(False)

    def start(pretrain: bool):
        return cpu_step(meta_pretrain, place, job=job, structure=structure, data=corpus, baselines=baseline,
                        go_decision=decision, pretrain=pretrain).set_display_name("meta-pretrain").set_caching_options(False)

    def finish(search_state):
        evaluated = gpu_step(evaluate_best, place, job=job, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                             search_state=search_state, pruned_model=pruned, data=corpus,
                             baselines=baseline, go_decision=decision)
        evaluated.set_display_name("evaluate-best").set_caching_options(False)
        registered = cpu_step(register, place, job=job, evaluated=evaluated.output)
        registered.set_display_name("register").set_caching_options(False)

    def loop(search_state, i: int):
        next_state = iteration(job=job, search_state=search_state, pruned_model=pruned, data=corpus,
                               **place).set_display_name(f"iteration-{i}").output
        if i == loop_cap:
            finish(next_state)
            return
        stop = cpu_step(gate, place, job=job, search_state=next_state, iteration=i)
        stop.set_display_name(f"gate-{i}").set_caching_options(False)
        with dsl.If(stop.output == True, name=f"stop-after-{i}"):  # noqa: E712 (a KFP condition)
            finish(next_state)
        with dsl.Else(name=f"continue-after-{i}"):
            loop(next_state, i + 1)

    with dsl.If(verdict.output == True, name="search-pays"):  # noqa: E712 (a KFP condition)
        loop(start(True).after(seeded()).output, 1)
    with dsl.Else(name="uniform-only"):
        finish(start(False).output)


def build(loop_cap: int = LOOP_CAP):
    """The main pipeline with the search loop unrolled loop_cap times."""

    @dsl.pipeline(name="rankadaptor", description="Prune a LLaMA model and recover it with RankAdaptor: per-layer "
                                                  "LoRA ranks chosen by a meta-learned performance model.")
    @with_parameters(MAIN_CHOICES, PROMOTED)
    def rankadaptor(*args):
        """Run RankAdaptor end to end and register the best adapter in MLflow."""
        options, place = split(named(args, MAIN_CHOICES, PROMOTED))
        job, corpus, pruned, structure = prepared(place, loop_cap, **options)
        search(job, corpus, pruned, structure, lambda: gpu_step(
            bootstrap, place, job=job, pruned_model=pruned, structure=structure, data=corpus).set_caching_options(False),
            place, loop_cap)  # the bootstrap runs only if the go/no-go says go

    return name_branches(rankadaptor)


def build_catalog(parallel: int = PARALLEL_TASKS, loop_cap: int = LOOP_CAP):
    """The catalog pipeline: plan (read the catalog), then for the tasks that need it one shared corpus,
    pruning and bootstrap, and a search per task, `parallel` at once."""

    @dsl.pipeline(name="rankadaptor-catalog", description="Keep a champion for every task of a task catalog: "
                                                          "search only the tasks that are new or whose data changed.")
    @with_parameters(None)
    def rankadaptor_catalog(*args):
        """Search and register each task of the catalog that has no champion yet or whose data changed."""
        options, place = split(named(args, None))
        planned = cpu_step(plan_catalog, place, catalog=options["catalog"], loop_cap=loop_cap,
                           scratch_size=scratch_size(), run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        planned.set_caching_options(False)  # it reads the catalog and the registry
        shared = cpu_step(shared_job, place, planned=planned.output).set_caching_options(False).output
        with dsl.If(shared != "", name="any-task-searches"):
            corpus, pruned, structure = pruned_from(shared, place)
            seeded = gpu_step(bootstrap, place, job=shared, pruned_model=pruned, structure=structure,
                              data=corpus).set_caching_options(False)
            with dsl.ParallelFor(planned.output, parallelism=parallel, name="each-planned-task") as job:
                search(job, corpus, pruned, structure, lambda: seeded, place, loop_cap)  # shared by every task

    return name_branches(rankadaptor_catalog)


BOOTSTRAP_CHOICES = ("base_model", "data", "heldout_text", "source_tasks", "eval_data_dir", "bootstrap_trials", "seed")
BASELINES_CHOICES = ("base_model", "data", "heldout_text", "target_task", "report_tasks", "eval_data_dir", "seed")


@dsl.pipeline(name="rankadaptor-bootstrap", description="Fill the observation bank: random rank vectors measured "
                                                        "on the source tasks, in parallel GPU trials.")
@with_parameters(BOOTSTRAP_CHOICES)
def bootstrap_pipeline(*args):
    """Bootstrap trials for meta-pretraining, run in parallel."""
    options, place = split(named(args, BOOTSTRAP_CHOICES))
    job, corpus, pruned, structure = prepared(place, target_task="ppl:heldout", report_tasks=[],
                                              adalora_baseline=False, **options)
    vectors = cpu_step(bootstrap_vectors, place, job=job, structure=structure, data=corpus).output
    with dsl.ParallelFor(vectors, parallelism=PARALLEL_TRIALS, name="each-bootstrap-vector") as rank_vector:
        gpu_step(bootstrap_trial, place, job=job, pruned_model=pruned, structure=structure, data=corpus,
                 rank_vector=rank_vector).set_caching_options(False)


@dsl.pipeline(name="rankadaptor-baselines", description="The comparison rows alone: pruned without recovery, "
                                                        "uniform LoRA at the baseline rank and AdaLoRA, on both splits.")
@with_parameters(BASELINES_CHOICES)
def baselines_pipeline(*args):
    """Baselines on the same budget and splits as the search."""
    options, place = split(named(args, BASELINES_CHOICES))
    job, corpus, pruned, _ = prepared(place, source_tasks=[], bootstrap_trials=0, adalora_baseline=True, **options)
    gpu_step(baselines, place, job=job, pruned_model=pruned, data=corpus)


PIPELINES = {"rankadaptor": build(), "bootstrap": bootstrap_pipeline, "baselines": baselines_pipeline,
             "catalog": build_catalog()}
CHOICES = {"rankadaptor": MAIN_CHOICES, "bootstrap": BOOTSTRAP_CHOICES, "baselines": BASELINES_CHOICES}
PROMOTED_IN = {"rankadaptor": PROMOTED}  # the pipelines with promoted stage options; others carry them in stage_options


def arguments(job, pipeline: str = "rankadaptor") -> dict:
    """Pipeline arguments for a `rankadaptor.job.JobConfig` (the same job locally and on a cluster)."""
    from rankadaptor.job import parameters

    promoted = PROMOTED_IN.get(pipeline, ())
    values = parameters(job, promoted)
    names = {*CHOICES[pipeline], *map(promoted_name, promoted), "stage_options"}
    return {k: v for k, v in values.items() if k in names}
