"""The compiled pipelines: committed YAML equals a fresh compile, fits cluster limits, and carries the GPU
placement, secrets by name, and no secret value."""

import re
import dataclasses

import pytest
import yaml

from pipelines.cluster import COMPILED, compile_all
from pipelines.parameters import PLACEMENT, STAGE_OPTIONS, job_parameters
from pipelines.rankadaptor import CHOICES, DEFAULT_NAME, LOOP_CAP, PIPELINES, PROMOTED_IN
from rankadaptor.config import default_of, help_text
from rankadaptor.job import PROMOTED, JobConfig, promoted_fields, promoted_name

# Argo keeps the workflow spec in an annotation limited to 256 KiB (kubeflow/pipelines#10968).


SECRET_SENTINEL = "do-not-leak-8f3a1c"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A fresh compile, with credentials in the environment that must not end up in the YAML."""
    directory = tmp_path_factory.mktemp("compiled")
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN"):
            env.setenv(name, SECRET_SENTINEL)
        compile_all(directory)
    return directory


def _documents(path):
    return list(yaml.safe_load_all(path.read_text()))


@pytest.mark.parametrize("name", list(PIPELINES))
def test_committed_yaml_matches_a_fresh_compile(fresh, name):
    # Compared as YAML: KFP's header comments order dict defaults by Python's hash seed.
    committed = COMPILED / f"{name}.yaml"
    assert committed.exists(), "run `rankadaptor compile` and commit pipelines/compiled/"
    assert _documents(committed) == _documents(fresh / f"{name}.yaml"), \
        f"{committed.name} is stale: run `rankadaptor compile` and commit the result"


def test_gpu_steps_request_gpus_on_the_gpu_pool(fresh):
    spec, platform = _documents(fresh / "rankadaptor.yaml")
    executors = spec["deploymentSpec"]["executors"]
    gpu_executors = {name for name, e in executors.items()
                     if e["container"].get("resources", {}).get("accelerator", {}).get("resourceType") == "nvidia.com/gpu"}
    for step in ("prune", "recover", "evaluate", "baselines", "bootstrap", "evaluate-best", "prepare-data"):
        assert any(step in name for name in gpu_executors), step
    for step in ("propose", "update", "gate", "meta-pretrain", "configure", "register"):
        assert not any(step in name for name in gpu_executors), step
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in gpu_executors:
        config = k8s[name]
        assert "nodeSelector" in config and "tolerations" in config
        assert any(m["mountPath"] == "/dev/shm" and m.get("medium") == "Memory" for m in config["emptyDirMounts"])
        assert len(config["secretAsEnv"]) == 4  # each Secret: its required keys, then its optional ones
        resources = executors[name]["container"]["resources"]
        assert resources["resourceCpuRequest"].endswith("gpu_step_cpu']}}")
        assert resources["resourceMemoryRequest"] == resources["resourceMemoryLimit"]


def test_credentials_come_from_secrets_never_as_values(fresh):
    text = "".join((fresh / f"{name}.yaml").read_text() for name in PIPELINES)
    assert SECRET_SENTINEL not in text
    platform = _documents(fresh / "rankadaptor.yaml")[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    env_from_secrets = {e["envVar"] for config in platform.values() for s in config.get("secretAsEnv", [])
                        for e in s["keyToEnv"]}
    assert {"AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"} <= env_from_secrets


def test_every_ui_parameter_has_a_description(fresh):
    spec = _documents(fresh / "rankadaptor.yaml")[0]
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert len(parameters) >= 15
    for name, definition in parameters.items():
        assert definition.get("description"), name
        assert name == "base_model" or "defaultValue" in definition or definition.get("isOptional"), name


def test_the_catalog_pipeline_takes_the_catalog_and_the_placement_only(fresh):
    parameters = _documents(fresh / "catalog.yaml")[0]["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == {"catalog"} | {p[0] for p in PLACEMENT}
    assert "defaultValue" not in parameters["catalog"] and "task catalog" in parameters["catalog"]["description"]


@pytest.mark.parametrize("name", list(CHOICES))
def test_pipeline_parameters_their_defaults_and_descriptions_are_the_job_config_fields(fresh, name):
    """Each job parameter of the compiled pipeline is a JobConfig field with the field's default and help text;
    every other JobConfig field travels in stage_options."""
    parameters = _documents(fresh / f"{name}.yaml")[0]["root"]["inputDefinitions"]["parameters"]
    fields = {f.name: f for f in dataclasses.fields(JobConfig)}
    promoted = {promoted_name(p) for p in PROMOTED_IN.get(name, ())}  # stage fields: test_promoted_stage_options
    job_names = set(parameters) - {STAGE_OPTIONS[0]} - {p[0] for p in PLACEMENT} - promoted
    assert job_names == set(CHOICES[name]) and job_names <= set(fields)
    for parameter in job_names:
        field, compiled = fields[parameter], parameters[parameter]
        assert " ".join(compiled["description"].split()) == " ".join(help_text(field).split()), parameter
        if parameter != "base_model":
            default = default_of(field)
            assert compiled["defaultValue"] == (float(default) if type(default) is int else default), parameter
    assert [p[0] for p in job_parameters()] == [f for f in fields if f in CHOICES["rankadaptor"]]


def test_the_gate_stops_at_the_jobs_max_iterations_and_configure_refuses_more_than_the_loop_holds(fresh):
    spec = _documents(fresh / "rankadaptor.yaml")[0]
    text = (fresh / "rankadaptor.yaml").read_text()
    dags = [spec["root"], *spec["components"].values()]
    gates = [task for dag in dags for name, task in dag.get("dag", {}).get("tasks", {}).items() if name.startswith("gate")]
    iterations = sorted(int(t["inputs"]["parameters"]["iteration"]["runtimeValue"]["constant"]) for t in gates)
    assert iterations == list(range(1, LOOP_CAP))  # one gate after every iteration but the last
    gate_code = spec["deploymentSpec"]["executors"]["exec-gate"]["container"]["command"][-1]
    assert "gate(job_from_json(job), search_state.path, iteration)" in gate_code
    configure = spec["root"]["dag"]["tasks"]["configure"]["inputs"]["parameters"]["loop_cap"]
    assert configure["runtimeValue"]["constant"] == LOOP_CAP
    assert "check_loop_cap(job, loop_cap)" in spec["deploymentSpec"]["executors"]["exec-configure"]["container"][
        "command"][-1]
    assert f"continue-after-{LOOP_CAP - 1}" in text and f"continue-after-{LOOP_CAP}" not in text
    assert JobConfig().search.max_iterations <= LOOP_CAP  # the default job fits the compiled loop


def test_the_gate_and_configure_behave_as_the_ir_says(tmp_path):
    from rankadaptor.errors import UserError
    from rankadaptor.job import check_loop_cap, load_job

    with pytest.raises(UserError, match=f"search.max_iterations=9 is more than the {LOOP_CAP} iterations"):
        check_loop_cap(load_job(None, {"search": {"max_iterations": 9}}), LOOP_CAP)
    check_loop_cap(load_job(None, {"search": {"max_iterations": LOOP_CAP}}), LOOP_CAP)


@pytest.mark.parametrize("name, component", [("rankadaptor", "comp-meta-pretrain"), ("catalog", "comp-meta-pretrain"),
                                             ("bootstrap", "comp-bootstrap-vectors")])
def test_the_steps_that_need_only_the_structure_take_no_weights(fresh, name, component):
    """KFP's launcher downloads every input artifact: these CPU steps read the prune step's structure artifact
    (kilobytes), not the pruned model (~10 GB for a pruned 7B) nor the base model."""
    artifacts = _documents(fresh / f"{name}.yaml")[0]["components"][component]["inputDefinitions"]["artifacts"]
    assert "structure" in artifacts
    assert all(a["artifactType"]["schemaTitle"] != "system.Model" for a in artifacts.values()), artifacts


@pytest.mark.parametrize("name", ["rankadaptor", "catalog"])
def test_the_cpu_steps_take_no_weights(fresh, name):
    """The search's light steps and the registration take no model weights (update reads the trial's adapter
    folder, megabytes, for its training time); the pruned model stays with evaluate-best, which evaluates the
    best trial and uploads the chosen adapter's version."""
    components = _documents(fresh / f"{name}.yaml")[0]["components"]
    for component in ("comp-propose", "comp-update", "comp-gate", "comp-register", "comp-meta-pretrain"):
        artifacts = components[component].get("inputDefinitions", {}).get("artifacts", {})
        assert "pruned_model" not in artifacts, component
        assert [n for n, a in artifacts.items() if a["artifactType"]["schemaTitle"] == "system.Model"] in ([], ["adapter"])
    assert "pruned_model" in components["comp-evaluate-best"]["inputDefinitions"]["artifacts"]


@pytest.mark.parametrize("name", list(PIPELINES))
def test_every_gpu_step_receives_gpu_count_and_checks_its_gpus_first(fresh, name):
    """Every GPU task (pipelines.placement.gpu_step) gets the GPU resources as its own inputs, and every GPU
    executor's code calls require_gpus(gpu_count) before any work (components.gpu_component)."""
    from pipelines.placement import GPU, PLACEMENT

    spec = _documents(fresh / f"{name}.yaml")[0]
    executors = spec["deploymentSpec"]["executors"]
    gpu = {n for n, e in executors.items() if e["container"].get("resources", {}).get("accelerator")}
    assert gpu
    for executor in gpu:
        assert "    require_gpus(gpu_count)\n" in executors[executor]["container"]["command"][-1], executor
    resources = {p.name for p in PLACEMENT if p.steps == GPU and p.resource}
    assert "gpu_count" in resources
    dags = [spec["root"], *spec["components"].values()]
    tasks = [t for dag in dags for t in dag.get("dag", {}).get("tasks", {}).values()
             if spec["components"][t["componentRef"]["name"]].get("executorLabel") in gpu]
    for task in tasks:
        assert resources <= set(task["inputs"]["parameters"]), task["taskInfo"]["name"]


def test_a_gpu_component_that_skips_the_gpu_check_is_refused():
    from components import gpu_component

    def no_check(job: str, gpu_count: int):
        from rankadaptor.job import job_from_json

        job_from_json(job)

    with pytest.raises(TypeError, match=r"call require_gpus\(gpu_count\) before any work"):
        gpu_component(no_check)


KFP_TYPES = {float: "NUMBER_DOUBLE", int: "NUMBER_INTEGER", str: "STRING"}


def test_the_most_used_stage_options_are_typed_top_level_parameters(fresh):
    """prune_ratio, recover_epochs, search_max_iterations, search_threshold, registry_model_name: typed, with the
    stage field's default and help; configure receives them and merges them back into the job."""
    spec = _documents(fresh / "rankadaptor.yaml")[0]
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert [name for name, *_ in promoted_fields()] == [promoted_name(p) for p in PROMOTED]
    for name, stage, tp, field in promoted_fields():
        compiled = parameters[name]
        assert compiled["parameterType"] == KFP_TYPES[tp], name
        default = default_of(field)
        assert compiled["defaultValue"] == (float(default) if type(default) is int else default), name
        assert help_text(field).split()[0] in compiled["description"] and f"{stage}." in compiled["description"]
        wired = spec["root"]["dag"]["tasks"]["configure"]["inputs"]["parameters"][name]
        assert wired == {"componentInputParameter": name}
    assert not set(parameters) & {promoted_name(p) for p in PROMOTED} - set(parameters)
    for other in ("bootstrap", "baselines"):  # they carry these in stage_options
        assert not {promoted_name(p) for p in PROMOTED} & set(
            _documents(fresh / f"{other}.yaml")[0]["root"]["inputDefinitions"]["parameters"])


@pytest.mark.parametrize("name", list(PIPELINES))
def test_every_step_and_group_has_a_meaningful_display_name(fresh, name):
    """No `condition-branches-N`, `condition-N` or `for-loop-N` in the Kubeflow UI."""
    spec = _documents(fresh / f"{name}.yaml")[0]
    dags = [spec["root"], *spec["components"].values()]
    names = [task["taskInfo"]["name"] for dag in dags for task in dag.get("dag", {}).get("tasks", {}).values()]
    assert names and not [n for n in names if DEFAULT_NAME.fullmatch(n)], names
    numbered = ("iteration-", "gate-", "stop-after-", "continue-after-")  # the unrolled loop's own numbers
    assert not [n for n in names if re.fullmatch(r".+-\d+", n) and not n.startswith(numbered)], names
    if name == "rankadaptor":
        assert "stop-after-1-or-continue-after-1" in names


def test_every_metrics_output_is_logged_flat():
    """KFP's scalar-metrics view shows flat name -> number only: the components log metrics with log_metric
    and steps.metrics.flat_metrics, never a nested dict in Metrics metadata."""
    import inspect

    import components.evaluate
    import components.prune
    import components.register
    from rankadaptor.steps.metrics import flat_metrics

    for module in (components.evaluate, components.prune, components.register):
        source = inspect.getsource(module)
        assert "metrics.log_metric(" in source and "metrics.metadata[" not in source, module.__name__
    assert flat_metrics({"scores": {"ppl:heldout": -2.2, "boolq": 1}, "n": None, "v": [1], "ok": True}) == {
        "scores/ppl:heldout": -2.2, "scores/boolq": 1.0}
