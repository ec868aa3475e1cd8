"""Where the pipelines' steps run, as one table: each placement parameter's name, type, default, help, which
steps use it (the GPU pool's, the CPU steps', or all) and how it is applied to a task. The pipeline
signatures (pipelines/parameters.py), the `place` dicts, `gpu_step`/`cpu_step` and the resource values a
step receives as its own inputs are all read from it; only the components' signatures spell the resource
names again (KFP runs a component's own source, so its parameters are names in that source).

A GPU step is `gpu_step(component, place, **inputs)`: it calls the component with its inputs plus the GPU
resources (gpu_count, so that the component's first statement, `require_gpus(gpu_count)`, checks the pod's
GPUs: components.gpu_component) and applies the placement, so no call site can leave either out."""

import inspect
import sys
import types
from collections.abc import Callable
from typing import NamedTuple

from kfp import kubernetes
from kfp.dsl import pipeline_task

from pipelines.limits import SCRATCH_MOUNT, scratch_size

GPU, CPU, ALL = "gpu", "cpu", "all"  # which steps a placement parameter applies to
GPU_STEPS = ("prepare-data", "prune", "baselines", "bootstrap", "bootstrap-trial", "recover", "evaluate",
             "evaluate-best", "go-check")
CPU_STEPS = ("configure", "propose", "update", "gate", "go-gate", "meta-pretrain", "register", "bootstrap-vectors",
             "plan-catalog", "shared-job")
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def _accelerator(task, count):
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(count)


def _memory(task, memory):
    task.set_memory_request(memory).set_memory_limit(memory)


def _s3_secret(task, secret):
    kubernetes.use_secret_as_env(task, secret, {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                                "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}, optional=False)
    kubernetes.use_secret_as_env(task, secret, {"AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"}, optional=True)


def _mlflow_secret(task, secret):
    kubernetes.use_secret_as_env(task, secret, {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}, optional=False)
    kubernetes.use_secret_as_env(task, secret, {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                                                "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}, optional=True)


class Placement(NamedTuple):
    name: str
    type: type
    default: object
    help: str
    steps: str  # GPU, CPU or ALL
    resource: bool  # read by the accelerator limit or a resource request: the step also receives it as an input
    apply: Callable  # (task, value): set it on the task


# Credentials only from Kubernetes Secrets, by name, never as parameters. Every step gets both, and both are
# required: a pod whose Secret is missing does not start (CreateContainerConfigError naming it), rather than
# running with no credentials and writing the bank and the registry to a pod-local store that vanishes with it.
# Keys a setup may lack stay optional: the endpoint (AWS itself) and the MLflow user (a server without auth).
PLACEMENT = (
    Placement("gpu_count", int, 1, "GPUs per GPU step.", GPU, True, _accelerator),
    Placement("node_selector", dict, GPU_NODE_SELECTOR, "Node selector of the GPU node pool.", GPU, False,
              kubernetes.add_node_selector_json),
    Placement("tolerations", list, GPU_TOLERATIONS, "Tolerations of the GPU node pool's taints.", GPU, False,
              kubernetes.add_toleration_json),
    Placement("s3_secret", str, "rankadaptor-s3",
              "Name of the Kubernetes Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_ENDPOINT_URL.", ALL, False,
              _s3_secret),
    Placement("mlflow_secret", str, "rankadaptor-mlflow",
              "Name of the Kubernetes Secret with MLFLOW_TRACKING_URI (and basic-auth user/password).", ALL, False,
              _mlflow_secret),
    Placement("gpu_step_cpu", str, "8", f"CPU request of each GPU step ({', '.join(GPU_STEPS)}).", GPU, True,
              lambda task, cpu: task.set_cpu_request(cpu)),
    Placement("gpu_step_memory", str, "96Gi", "Memory request and limit of each GPU step (a 7B model in bf16 is "
              "~13.5 GB; pruning also holds gradients of the pruned layers).", GPU, True, _memory),
    Placement("cpu_step_cpu", str, "1", f"CPU request of each CPU step ({', '.join(CPU_STEPS)}).", CPU, True,
              lambda task, cpu: task.set_cpu_request(cpu)),
    Placement("cpu_step_memory", str, "8Gi", "Memory request and limit of each CPU step.", CPU, True, _memory),
)
NAMES = tuple(p.name for p in PLACEMENT)


def _of(pool: str) -> tuple[Placement, ...]:
    return tuple(p for p in PLACEMENT if p.steps in (pool, ALL))


def resources(place: dict, pool: str = GPU) -> dict:
    """A step's resource values (a GPU step's by default), passed as its own inputs too: a task inside a
    condition or loop DAG gets only the channels its inputs name (KFP's compiler does not carry those read by
    the accelerator limit or the resource requests alone, and the backend cannot resolve them:
    tests/unit/test_pipeline_ir.py)."""
    return {p.name: place[p.name] for p in _of(pool) if p.resource}


# KFP 2.17's PipelineTask._ensure_container_spec_exists, run by every resource and env setter, calls
# inspect.stack() only to name its caller in an error message; that reads the source of every frame on the
# stack, ~0.08 s a call once torch is imported (20 s to build the pipelines, paid by every `pipelines run`).
# Its module gets an inspect whose stack() gives each frame's function name alone (what it reads): no file reads.
def _frame_names(context: int = 1) -> list[tuple[None, None, None, str]]:
    frame, names = sys._getframe(1), []
    while frame is not None:
        names.append((None, None, None, frame.f_code.co_name))
        frame = frame.f_back
    return names


pipeline_task.inspect = types.SimpleNamespace(stack=_frame_names)


def _placed(component, place: dict, pool: str, steps: tuple[str, ...], inputs: dict):
    if component.name not in steps:
        raise ValueError(f"{component.name} is not one of the {pool.upper()} steps {steps} (pipelines/placement.py)")
    declared = component.component_spec.inputs or {}
    given = resources(place, pool) if pool == GPU else {k: v for k, v in resources(place, pool).items() if k in declared}
    task = component(**inputs, **given)
    for p in _of(pool):
        p.apply(task, place[p.name])
    return task


def gpu_step(component, place: dict, timeout_seconds: int = 24 * 3600, **inputs):
    """A task of a GPU component (components.gpu_component) on the GPU node pool: its inputs plus the GPU
    resources (its first statement checks gpu_count's GPUs), the placement and the credentials, shared
    memory for the data loader, the scratch volume when compiled with one, retries for preempted pods."""
    task = _placed(component, place, GPU, GPU_STEPS, inputs)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")  # noqa: S108 (a mount)
    if size := scratch_size():
        scratch(task, size)
    kubernetes.set_timeout(task, timeout_seconds)
    return task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2)


def scratch(task, size: str) -> None:
    """A generic ephemeral volume of `size` at SCRATCH_MOUNT holding the library's cache (a base model on S3
    is downloaded there) and the temporary files (a model staged before upload): space reserved for the pod,
    not taken from the node's ephemeral storage that the namespace LimitRange caps (docs/deploy.md 9.4)."""
    kubernetes.add_ephemeral_volume(task, volume_name="scratch", mount_path=SCRATCH_MOUNT,
                                    access_modes=["ReadWriteOnce"], size=size)
    task.set_env_variable("RANKADAPTOR_CACHE", f"{SCRATCH_MOUNT}/cache")
    task.set_env_variable("TMPDIR", SCRATCH_MOUNT)


def cpu_step(component, place: dict, **inputs):
    """A task of a small component anywhere (no GPU), with its requests and credentials; a component that
    declares the CPU resource inputs (one in a condition DAG that no sibling carries them to) receives them."""
    return _placed(component, place, CPU, CPU_STEPS, inputs)


def split(params: dict) -> tuple[dict, dict]:
    """(job parameters, placement) of a pipeline's arguments."""
    return {k: v for k, v in params.items() if k not in NAMES}, {k: params[k] for k in NAMES}


def with_placement(func):
    """Give a `def p(a, b, *place)` sub-pipeline the placement parameters after its own (no defaults: the
    caller passes its own `place`); the body gets them positionally, `dict(zip(NAMES, place))`."""
    signature = inspect.signature(func)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    func.__signature__ = signature.replace(parameters=[
        *own, *(inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=p.type)
                for p in PLACEMENT)])
    return func
