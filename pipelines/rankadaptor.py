"""The RankAdaptor pipelines: the main search, the parallel bank bootstrap, and the baselines.

KFP v2 has no while loop, so the search loop is unrolled at compile time: iteration i+1 runs only under
`dsl.Else` of iteration i's `converged` gate (a single-output bool component), and each way out of the
loop (converged at i, or max_iterations reached) ends in the register step. The same pipeline function
runs on a cluster (compiled IR) and locally under kfp.local.
"""

import inspect

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Dataset, Input, Model

from components.baselines import baselines
from components.bootstrap import bootstrap, bootstrap_trial, bootstrap_vectors
from components.configure import configure
from components.data import prepare_data
from components.evaluate import evaluate
from components.gate import converged
from components.meta_pretrain import meta_pretrain
from components.propose import propose
from components.prune import prune
from components.recover import recover
from components.register import register
from components.update import update

DEFAULT_MAX_ITERATIONS = 6
PARALLEL_TRIALS = 4  # bootstrap trials running at once (KFP needs it at compile time)
SEVEN_TASKS = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
PARAMETERS = {  # what the Kubeflow UI says of each pipeline parameter: one text per name, for every pipeline
    "base_model": "Base model to prune: hub id (from the image's cache), s3:// URI or path in the image.",
    "data": "Recovery data (Alpaca JSON/JSONL or text, s3://); empty samples a self-distillation corpus.",
    "heldout_text": "Held-out text for the ppl:heldout task when data is given.",
    "target_task": "What the search maximises: an lm-eval task (e.g. boolq) or ppl:heldout.",
    "source_tasks": "Tasks of the bootstrap trials the surrogate is meta-pretrained on.",
    "report_tasks": "Zero-shot lm-eval tasks of the comparison table.",
    "eval_data_dir": "s3:// directory of <task>_<split>.jsonl files; empty uses lm-eval's hub datasets.",
    "bootstrap_trials": "Random rank vectors measured on the source tasks when the bank lacks them.",
    "adalora_baseline": "Also run the AdaLoRA baseline.",
    "seed": "Seed of the corpus, bootstrap vectors, recovery and evaluation splits.",
    "stage_options": 'Per-stage options, e.g. {"prune": {"ratio": 0.2}, "search": {"threshold": 0.005, '
                     '"max_iterations": 6}, "registry": {"model_name": "llama-7b-pruned20"}}.',
    "gpu_count": "GPUs per GPU step.",
    "node_selector": "Node selector of the GPU node pool.",
    "tolerations": "Tolerations of the GPU node pool's taints.",
    "s3_secret": "Name of the Kubernetes Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_ENDPOINT_URL.",
    "mlflow_secret": "Name of the Kubernetes Secret with MLFLOW_TRACKING_URI (and basic-auth user/password).",
}


def documented(pipeline_func):
    """Append an Args section from PARAMETERS to the docstring, which KFP reads for the UI's descriptions."""
    args = "".join(f"    {name}: {PARAMETERS[name]}\n" for name in inspect.signature(pipeline_func).parameters)
    pipeline_func.__doc__ = f"{pipeline_func.__doc__}\n\nArgs:\n{args}"
    return pipeline_func


def on_gpu(task, gpu_count: int, node_selector: dict, tolerations: list, timeout_seconds: int = 24 * 3600):
    """GPU node pool placement, shared memory for the data loader, retries for preempted pods."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpu_count)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    kubernetes.set_timeout(task, timeout_seconds)
    task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2)
    return task


def with_credentials(task, s3_secret: str, mlflow_secret: str):
    """Credentials only from Kubernetes Secrets, by name; never as parameters."""
    kubernetes.use_secret_as_env(task, s3_secret, {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                                   "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
                                                   "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"}, optional=True)
    kubernetes.use_secret_as_env(task, mlflow_secret, {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
                                                       "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                                                       "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"},
                                 optional=True)
    return task


def gpu_step(task, gpu_count, node_selector, tolerations, s3_secret, mlflow_secret):
    return with_credentials(on_gpu(task, gpu_count, node_selector, tolerations), s3_secret, mlflow_secret)


def prepared(gpu: dict, **job_options):
    """configure -> prepare_data -> prune, the start of every pipeline: (job JSON, data, pruned model)."""
    job = configure(**job_options).output
    corpus = gpu_step(prepare_data(job=job), **gpu).output
    pruned = gpu_step(prune(job=job, data=corpus), **gpu).outputs["pruned_model"]
    return job, corpus, pruned


@dsl.pipeline(name="rankadaptor-iteration", description="One search iteration: propose, recover, evaluate, update.")
def iteration(job: str, search_state: Input[Artifact], pruned_model: Input[Model], data: Input[Dataset],
              gpu_count: int, node_selector: dict, tolerations: list, s3_secret: str,
              mlflow_secret: str) -> Artifact:
    proposal = with_credentials(propose(job=job, search_state=search_state), s3_secret, mlflow_secret)
    adapter = gpu_step(recover(job=job, pruned_model=pruned_model, data=data, proposal=proposal.output),
                       gpu_count, node_selector, tolerations, s3_secret, mlflow_secret)
    metrics = gpu_step(evaluate(job=job, pruned_model=pruned_model, data=data, adapter=adapter.output),
                       gpu_count, node_selector, tolerations, s3_secret, mlflow_secret)
    next_state = with_credentials(update(job=job, search_state=search_state, proposal=proposal.output,
                                         metrics=metrics.output, adapter=adapter.output, pruned_model=pruned_model,
                                         data=data), s3_secret, mlflow_secret)
    for task in (proposal, next_state):
        task.set_caching_options(False)  # they read and write the observation bank
    return next_state.outputs["next_state"]


def build(max_iterations: int = DEFAULT_MAX_ITERATIONS):
    """The main pipeline with the search loop unrolled max_iterations times."""

    @dsl.pipeline(name="rankadaptor", description="Prune a LLaMA model and recover it with RankAdaptor: per-layer "
                                                  "LoRA ranks chosen by a meta-learned performance model.")
    @documented
    def rankadaptor(
        base_model: str,
        data: str = "",
        heldout_text: str = "",
        target_task: str = "ppl:heldout",
        source_tasks: list = ["ppl:boolq", "ppl:piqa", "ppl:hellaswag", "ppl:openbookqa"],
        report_tasks: list = SEVEN_TASKS,
        eval_data_dir: str = "",
        bootstrap_trials: int = 6,
        adalora_baseline: bool = False,
        seed: int = 0,
        stage_options: dict = {},
        gpu_count: int = 1,
        node_selector: dict = GPU_NODE_SELECTOR,
        tolerations: list = GPU_TOLERATIONS,
        s3_secret: str = "rankadaptor-s3",
        mlflow_secret: str = "rankadaptor-mlflow",
    ):
        """Run RankAdaptor end to end and register the best adapter in MLflow."""
        gpu = dict(gpu_count=gpu_count, node_selector=node_selector, tolerations=tolerations,
                   s3_secret=s3_secret, mlflow_secret=mlflow_secret)
        job, corpus, pruned = prepared(gpu, base_model=base_model, data=data, heldout_text=heldout_text,
                                       target_task=target_task, source_tasks=source_tasks, report_tasks=report_tasks,
                                       eval_data_dir=eval_data_dir, bootstrap_trials=bootstrap_trials,
                                       adalora_baseline=adalora_baseline, seed=seed, stage_options=stage_options)
        baseline = gpu_step(baselines(job=job, pruned_model=pruned, data=corpus), **gpu).output
        seeded = gpu_step(bootstrap(job=job, pruned_model=pruned, data=corpus), **gpu).set_caching_options(False)
        state = with_credentials(meta_pretrain(job=job, pruned_model=pruned, data=corpus, baselines=baseline).after(seeded),
                                 s3_secret, mlflow_secret).set_caching_options(False).output

        def finish(search_state):
            gpu_step(register(job=job, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, search_state=search_state,
                              pruned_model=pruned, data=corpus, baselines=baseline), **gpu).set_caching_options(False)

        def loop(search_state, i: int):
            next_state = iteration(job=job, search_state=search_state, pruned_model=pruned, data=corpus,
                                   **gpu).set_display_name(f"iteration-{i}").output
            if i == max_iterations:
                finish(next_state)
                return
            gate = with_credentials(converged(job=job, search_state=next_state), s3_secret, mlflow_secret)
            gate.set_display_name(f"converged-{i}")
            with dsl.If(gate.output == True, name=f"converged-at-{i}"):  # noqa: E712 (a KFP condition)
                finish(next_state)
            with dsl.Else(name=f"continue-after-{i}"):
                loop(next_state, i + 1)

        loop(state, 1)

    return rankadaptor


@dsl.pipeline(name="rankadaptor-bootstrap", description="Fill the observation bank: random rank vectors measured "
                                                        "on the source tasks, in parallel GPU trials.")
@documented
def bootstrap_pipeline(base_model: str, data: str = "", heldout_text: str = "",
                       source_tasks: list = ["ppl:boolq", "ppl:piqa", "ppl:hellaswag", "ppl:openbookqa"],
                       eval_data_dir: str = "", bootstrap_trials: int = 16, seed: int = 0,
                       stage_options: dict = {}, gpu_count: int = 1,
                       node_selector: dict = GPU_NODE_SELECTOR, tolerations: list = GPU_TOLERATIONS,
                       s3_secret: str = "rankadaptor-s3", mlflow_secret: str = "rankadaptor-mlflow"):
    """Bootstrap trials for meta-pretraining, run in parallel."""
    gpu = dict(gpu_count=gpu_count, node_selector=node_selector, tolerations=tolerations,
               s3_secret=s3_secret, mlflow_secret=mlflow_secret)
    job, corpus, pruned = prepared(gpu, base_model=base_model, data=data, heldout_text=heldout_text,
                                   target_task="ppl:heldout", source_tasks=source_tasks, report_tasks=[],
                                   eval_data_dir=eval_data_dir, bootstrap_trials=bootstrap_trials,
                                   adalora_baseline=False, seed=seed, stage_options=stage_options)
    vectors = bootstrap_vectors(job=job, pruned_model=pruned).output
    with dsl.ParallelFor(vectors, parallelism=PARALLEL_TRIALS) as rank_vector:
        gpu_step(bootstrap_trial(job=job, pruned_model=pruned, data=corpus, rank_vector=rank_vector),
                 **gpu).set_caching_options(False)


@dsl.pipeline(name="rankadaptor-baselines", description="The comparison rows alone: pruned without recovery, "
                                                        "uniform LoRA r=8 and AdaLoRA, on both splits.")
@documented
def baselines_pipeline(base_model: str, data: str = "", heldout_text: str = "", target_task: str = "ppl:heldout",
                       report_tasks: list = SEVEN_TASKS, eval_data_dir: str = "", seed: int = 0,
                       stage_options: dict = {}, gpu_count: int = 1, node_selector: dict = GPU_NODE_SELECTOR,
                       tolerations: list = GPU_TOLERATIONS, s3_secret: str = "rankadaptor-s3",
                       mlflow_secret: str = "rankadaptor-mlflow"):
    """Baselines on the same budget and splits as the search."""
    gpu = dict(gpu_count=gpu_count, node_selector=node_selector, tolerations=tolerations,
               s3_secret=s3_secret, mlflow_secret=mlflow_secret)
    job, corpus, pruned = prepared(gpu, base_model=base_model, data=data, heldout_text=heldout_text,
                                   target_task=target_task, source_tasks=[], report_tasks=report_tasks,
                                   eval_data_dir=eval_data_dir, bootstrap_trials=0, adalora_baseline=True, seed=seed,
                                   stage_options=stage_options)
    gpu_step(baselines(job=job, pruned_model=pruned, data=corpus), **gpu)


PIPELINES = {"rankadaptor": build(), "bootstrap": bootstrap_pipeline, "baselines": baselines_pipeline}


def arguments(job) -> dict:
    """Pipeline parameters for a `rankadaptor.workflow.JobConfig` (the same job locally and on a cluster)."""
    from rankadaptor.config import to_dict

    values = to_dict(job)
    top = ("base_model", "data", "heldout_text", "target_task", "source_tasks", "report_tasks", "bootstrap_trials",
           "adalora_baseline", "seed")
    return {**{k: values[k] for k in top}, "eval_data_dir": values["eval_data_dir"] or "",
            "stage_options": {k: v for k, v in values.items() if k not in top and k != "eval_data_dir"}}
