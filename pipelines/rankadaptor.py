"""The RankAdaptor pipelines: the main search, the parallel bank bootstrap, and the baselines.

KFP v2 has no while loop, so the search loop is unrolled at compile time (LOOP_CAP iterations): iteration
i+1 runs only under `dsl.Else` of iteration i's gate, which stops the loop when the search converged or the
job's search.max_iterations trials are done; each way out ends in the register step. Parameters come from
`rankadaptor.job.JobConfig` (pipelines/parameters.py). The same pipeline runs on a cluster and under kfp.local.
The catalog pipeline runs the same search for each task of a task catalog that needs it, in parallel.
"""

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Dataset, Input, Model

from components.baselines import baselines
from components.bootstrap import bootstrap, bootstrap_trial, bootstrap_vectors
from components.catalog import plan_catalog, shared_job
from components.configure import configure
from components.data import prepare_data
from components.evaluate import evaluate
from components.gate import gate
from components.meta_pretrain import meta_pretrain
from components.propose import propose
from components.prune import prune
from components.recover import recover
from components.register import evaluate_best, register
from components.update import update
from pipelines.limits import LOOP_CAP, PARALLEL_TASKS, PARALLEL_TRIALS
from pipelines.parameters import named, with_parameters
from rankadaptor.job import MAIN_CHOICES

PLACEMENT = ("gpu_count", "node_selector", "tolerations", "s3_secret", "mlflow_secret", "gpu_step_cpu",
             "gpu_step_memory", "cpu_step_cpu", "cpu_step_memory")


def on_gpu(task, gpu_count: int, node_selector: dict, tolerations: list, cpu: str, memory: str,
           timeout_seconds: int = 24 * 3600):
    """GPU node pool placement and requests, shared memory for the data loader, retries for preempted pods."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpu_count)
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")  # noqa: S108 (a mount)
    kubernetes.set_timeout(task, timeout_seconds)
    task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2)
    return task


def with_credentials(task, s3_secret: str, mlflow_secret: str):
    """Credentials only from Kubernetes Secrets, by name; never as parameters. Every step gets both, and
    both are required: a pod whose Secret is missing does not start (CreateContainerConfigError naming it),
    rather than running with no credentials and writing the bank and the registry to a pod-local store that
    vanishes with it. Keys a setup may lack stay optional: the endpoint (AWS itself) and the MLflow user
    (a server without authentication)."""
    kubernetes.use_secret_as_env(task, s3_secret, {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                                   "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}, optional=False)
    kubernetes.use_secret_as_env(task, s3_secret, {"AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"}, optional=True)
    kubernetes.use_secret_as_env(task, mlflow_secret, {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}, optional=False)
    kubernetes.use_secret_as_env(task, mlflow_secret, {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                                                       "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"},
                                 optional=True)
    return task


def gpu_step(task, gpu_count, node_selector, tolerations, s3_secret, mlflow_secret, gpu_step_cpu, gpu_step_memory,
             **_):
    """A step on the GPU node pool, with its requests and credentials."""
    on_gpu(task, gpu_count, node_selector, tolerations, gpu_step_cpu, gpu_step_memory)
    return with_credentials(task, s3_secret, mlflow_secret)


def cpu_step(task, s3_secret, mlflow_secret, cpu_step_cpu, cpu_step_memory, **_):
    """A small step anywhere (no GPU), with its requests and credentials."""
    task.set_cpu_request(cpu_step_cpu).set_memory_request(cpu_step_memory).set_memory_limit(cpu_step_memory)
    return with_credentials(task, s3_secret, mlflow_secret)


GPU_RESOURCES = ("gpu_count", "gpu_step_cpu", "gpu_step_memory")
CPU_RESOURCES = ("cpu_step_cpu", "cpu_step_memory")


def resources(place: dict, names: tuple[str, ...] = GPU_RESOURCES) -> dict:
    """A step's placement values (a GPU step's by default) passed as its own inputs too: a task inside a
    condition or loop DAG gets only the channels its inputs name (KFP's compiler does not carry those read by
    the accelerator limit or the resource requests alone, and the backend cannot resolve them:
    tests/test_pipeline_ir.py)."""
    return {k: place[k] for k in names}


def split(params: dict) -> tuple[dict, dict]:
    """(job parameters, GPU placement) of a pipeline's arguments."""
    return {k: v for k, v in params.items() if k not in PLACEMENT}, {k: params[k] for k in PLACEMENT}


def prepared(gpu: dict, loop_cap: int = 0, **job_options):
    """configure -> prepare_data -> prune, the start of every pipeline: (job JSON, data, pruned model, its
    structure). configure always runs: it fingerprints the inputs, and its JSON keys every later step's cache."""
    job = cpu_step(configure(**job_options, loop_cap=loop_cap), **gpu).set_caching_options(False).output
    return (job, *pruned_from(job, gpu))


def pruned_from(job, gpu: dict):
    """prepare_data -> prune for a job JSON: (data, pruned model, its structure)."""
    corpus = gpu_step(prepare_data(job=job), **gpu).output
    pruning = gpu_step(prune(job=job, data=corpus), **gpu)
    return corpus, pruning.outputs["pruned_model"], pruning.outputs["structure"]


@dsl.pipeline(name="rankadaptor-iteration", description="One search iteration: propose, recover, evaluate, update.")
def iteration(job: str, search_state: Input[Artifact], pruned_model: Input[Model], data: Input[Dataset],
              gpu_count: int, node_selector: dict, tolerations: list, s3_secret: str, mlflow_secret: str,
              gpu_step_cpu: str, gpu_step_memory: str, cpu_step_cpu: str, cpu_step_memory: str) -> Artifact:
    place = {"gpu_count": gpu_count, "node_selector": node_selector, "tolerations": tolerations, "s3_secret": s3_secret,
             "mlflow_secret": mlflow_secret, "gpu_step_cpu": gpu_step_cpu, "gpu_step_memory": gpu_step_memory,
             "cpu_step_cpu": cpu_step_cpu, "cpu_step_memory": cpu_step_memory}
    proposal = cpu_step(propose(job=job, search_state=search_state), **place)
    adapter = gpu_step(recover(job=job, pruned_model=pruned_model, data=data, proposal=proposal.output), **place)
    metrics = gpu_step(evaluate(job=job, pruned_model=pruned_model, data=data, adapter=adapter.output), **place)
    next_state = cpu_step(update(job=job, search_state=search_state, proposal=proposal.output,
                                 metrics=metrics.output, adapter=adapter.output), **place)
    for task in (proposal, next_state):
        task.set_caching_options(False)  # they read and write the observation bank
    return next_state.outputs["next_state"]


def search(job, corpus, pruned, structure, seeded, gpu: dict, loop_cap: int) -> None:
    """baselines -> meta-pretrain (after the bootstrap `seeded`) -> the unrolled search loop -> register."""
    baseline = gpu_step(baselines(job=job, pruned_model=pruned, data=corpus), **gpu).output
    state = cpu_step(meta_pretrain(job=job, structure=structure, data=corpus, baselines=baseline).after(seeded),
                     **gpu).set_caching_options(False).output

    def finish(search_state):
        evaluated = gpu_step(evaluate_best(job=job, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, search_state=search_state,
                                           pruned_model=pruned, data=corpus, baselines=baseline, **resources(gpu)),
                             **gpu).set_caching_options(False).output
        cpu_step(register(job=job, evaluated=evaluated, **resources(gpu, CPU_RESOURCES)), **gpu).set_caching_options(False)

    def loop(search_state, i: int):
        next_state = iteration(job=job, search_state=search_state, pruned_model=pruned, data=corpus,
                               **gpu).set_display_name(f"iteration-{i}").output
        if i == loop_cap:
            finish(next_state)
            return
        stop = cpu_step(gate(job=job, search_state=next_state, iteration=i), **gpu)
        stop.set_display_name(f"gate-{i}").set_caching_options(False)
        with dsl.If(stop.output == True, name=f"stop-after-{i}"):  # noqa: E712 (a KFP condition)
            finish(next_state)
        with dsl.Else(name=f"continue-after-{i}"):
            loop(next_state, i + 1)

    loop(state, 1)


def build(loop_cap: int = LOOP_CAP):
    """The main pipeline with the search loop unrolled loop_cap times."""

    @dsl.pipeline(name="rankadaptor", description="Prune a LLaMA model and recover it with RankAdaptor: per-layer "
                                                  "LoRA ranks chosen by a meta-learned performance model.")
    @with_parameters()
    def rankadaptor(*args):
        """Run RankAdaptor end to end and register the best adapter in MLflow."""
        options, gpu = split(named(args))
        job, corpus, pruned, structure = prepared(gpu, loop_cap, **options)
        seeded = gpu_step(bootstrap(job=job, pruned_model=pruned, structure=structure, data=corpus),
                          **gpu).set_caching_options(False)
        search(job, corpus, pruned, structure, seeded, gpu, loop_cap)

    return rankadaptor


def build_catalog(parallel: int = PARALLEL_TASKS, loop_cap: int = LOOP_CAP):
    """The catalog pipeline: plan (read the catalog), then for the tasks that need it one shared corpus,
    pruning and bootstrap, and a search per task, `parallel` at once."""

    @dsl.pipeline(name="rankadaptor-catalog", description="Keep a champion for every task of a task catalog: "
                                                          "search only the tasks that are new or whose data changed.")
    @with_parameters(None)
    def rankadaptor_catalog(*args):
        """Search and register each task of the catalog that has no champion yet or whose data changed."""
        options, gpu = split(named(args, None))
        planned = cpu_step(plan_catalog(catalog=options["catalog"], loop_cap=loop_cap), **gpu)
        planned.set_caching_options(False)  # it reads the catalog and the registry
        shared = cpu_step(shared_job(planned=planned.output), **gpu).set_caching_options(False).output
        with dsl.If(shared != "", name="any-task-searches"):
            corpus, pruned, structure = pruned_from(shared, gpu)
            seeded = gpu_step(bootstrap(job=shared, pruned_model=pruned, structure=structure, data=corpus),
                              **gpu).set_caching_options(False)
            with dsl.ParallelFor(planned.output, parallelism=parallel) as job:
                search(job, corpus, pruned, structure, seeded, gpu, loop_cap)

    return rankadaptor_catalog


BOOTSTRAP_CHOICES = ("base_model", "data", "heldout_text", "source_tasks", "eval_data_dir", "bootstrap_trials", "seed")
BASELINES_CHOICES = ("base_model", "data", "heldout_text", "target_task", "report_tasks", "eval_data_dir", "seed")


@dsl.pipeline(name="rankadaptor-bootstrap", description="Fill the observation bank: random rank vectors measured "
                                                        "on the source tasks, in parallel GPU trials.")
@with_parameters(BOOTSTRAP_CHOICES)
def bootstrap_pipeline(*args):
    """Bootstrap trials for meta-pretraining, run in parallel."""
    options, gpu = split(named(args, BOOTSTRAP_CHOICES))
    job, corpus, pruned, structure = prepared(gpu, target_task="ppl:heldout", report_tasks=[],
                                              adalora_baseline=False, **options)
    vectors = cpu_step(bootstrap_vectors(job=job, structure=structure, data=corpus), **gpu).output
    with dsl.ParallelFor(vectors, parallelism=PARALLEL_TRIALS) as rank_vector:
        gpu_step(bootstrap_trial(job=job, pruned_model=pruned, structure=structure, data=corpus,
                                 rank_vector=rank_vector, **resources(gpu)),
                 **gpu).set_caching_options(False)


@dsl.pipeline(name="rankadaptor-baselines", description="The comparison rows alone: pruned without recovery, "
                                                        "uniform LoRA at the baseline rank and AdaLoRA, on both splits.")
@with_parameters(BASELINES_CHOICES)
def baselines_pipeline(*args):
    """Baselines on the same budget and splits as the search."""
    options, gpu = split(named(args, BASELINES_CHOICES))
    job, corpus, pruned, _ = prepared(gpu, source_tasks=[], bootstrap_trials=0, adalora_baseline=True, **options)
    gpu_step(baselines(job=job, pruned_model=pruned, data=corpus), **gpu)


PIPELINES = {"rankadaptor": build(), "bootstrap": bootstrap_pipeline, "baselines": baselines_pipeline,
             "catalog": build_catalog()}
CHOICES = {"rankadaptor": MAIN_CHOICES, "bootstrap": BOOTSTRAP_CHOICES, "baselines": BASELINES_CHOICES}


def arguments(job, pipeline: str = "rankadaptor") -> dict:
    """Pipeline arguments for a `rankadaptor.job.JobConfig` (the same job locally and on a cluster)."""
    from rankadaptor.job import parameters

    values = parameters(job)
    return {k: v for k, v in values.items() if k in CHOICES[pipeline] or k == "stage_options"}
