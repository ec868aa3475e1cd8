"""The job configuration: one typed JobConfig, validated once when it loads, with one-line errors."""

import dataclasses
import subprocess
import sys
import typing

import pytest

from rankadaptor import config as cfg
from rankadaptor.errors import UserError
from rankadaptor.flows.trials import recovery_identity, trial_key
from rankadaptor.job import BUNDLED, JobConfig, RuntimeConfig, from_parameters, job_from_json, job_to_json, load_job, parameters
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.trial import TrialContext

CONTEXT = TrialContext(model_checksum="m" * 64, pruning={"ratio": 0.2}, cost_per_rank=[100] * 4,
                       layer_features=[[1.0]] * 4, data_checksum="d" * 64)


def test_the_bundled_job_loads_and_round_trips_through_its_json():
    job = load_job()
    assert job.base_model == str(BUNDLED / "aidreams-260k") and job.runtime.micro_batch_tokens == 1024
    assert job_from_json(job_to_json(job)) == job
    assert from_parameters(**parameters(job)) == job


def test_a_search_candidate_that_recovery_refuses_is_refused_when_the_job_loads():
    with pytest.raises(UserError, match=r"search.candidates=\[2, 4, 16\] has rank\(s\) \[16\] that recovery refuses "
                                        r"\(recover.candidates=\[2, 4, 6, 8, 10, 12\]\)") as refused:
        load_job(None, {"search": {"candidates": [2, 4, 16]}})
    assert "\n" not in str(refused.value)
    load_job(None, {"search": {"candidates": [2, 4, 16]}, "recover": {"candidates": [2, 4, 8, 16]}})  # a subset: fine


@pytest.mark.parametrize("overrides, match", [
    ({"seed": "seven"}, r"^seed='seven' is not accepted: input should be a valid integer"),
    ({"recover": {"lr": "fast"}}, r"^recover.lr='fast' is not accepted: input should be a valid number"),
    ({"search": {"candidates": "8"}}, r"^search.candidates='8' is not accepted: input should be a valid list"),
    ({"recover": 3}, r"^recover=3 is not accepted"),
    ({"recover": {"learning_rate": 1e-4}}, r"^recover: unknown option\(s\) \['learning_rate'\] for RecoverConfig; "
                                           r"accepted: \['alpha_ratio'"),
    ({"recover": {"seed": 3}}, r"^recover: \['seed'\] cannot be set per stage: the job sets them"),
    ({"recover": {"device": "cpu"}}, r"^recover: \['device'\] cannot be set per stage: set them under `runtime`"),
    ({"prune": {"model": "other"}}, r"^prune: \['model'\] cannot be set per stage"),
    ({"runtime": {"micro_batch_tokens": 64}}, r"^recover: micro_batch_tokens=64 must be at least cutoff=128"),
    ({"bank": {"experiment": 5}}, r"^bank.experiment=5 is not accepted: input should be a valid string"),
])
def test_bad_job_options_are_one_line_errors_naming_the_field_value_and_what_is_accepted(overrides, match):
    with pytest.raises(UserError, match=match) as refused:
        load_job(None, overrides)
    assert "\n" not in str(refused.value) and "pydantic" not in str(refused.value)


def test_one_seed_reaches_every_stage_and_runtime_reaches_the_stages_that_have_it():
    job = load_job(None, {"seed": 11, "runtime": {"device": "cpu", "micro_batch_tokens": 512}})
    configs = [job.prune_config("c"), job.recover_config("d"), job.eval_config(["boolq"], "select", None),
               job.surrogate_config(), job.search_config([10] * 4)]
    assert [c.seed for c in configs] == [11] * 5
    assert job.prune_config("c").device == job.recover_config("d").device == "cpu"
    assert job.recover_config("d").micro_batch_tokens == 512


def test_the_baseline_rank_is_recovery_rank_and_sets_the_default_budget():
    job = load_job(None, {"recover": {"rank": 4, "cutoff": 128}})
    assert job.baseline_rank == 4 and job.search_config([100, 200]).budget == 4 * 300
    assert load_job(None, {"search": {"budget": 999}}).search_config([100, 200]).budget == 999


def test_runtime_holds_every_runtime_option_of_the_stages_and_nothing_else():
    runtime = {f.name for f in dataclasses.fields(RuntimeConfig)}
    assert runtime == {f.name for f in dataclasses.fields(RecoverConfig) if cfg.is_runtime(f)} | {"device"}
    assert all(cfg.help_text(f) for f in dataclasses.fields(RuntimeConfig))


def test_how_a_recovery_runs_is_not_part_of_its_trial_identity():
    """Memory, speed and checkpoint settings leave the result as it is: a rerun with other ones reuses the
    bank's trials; a setting that changes what is trained makes a new trial."""
    def key(**sections) -> str:
        return trial_key(load_job(None, sections), CONTEXT, "ppl:heldout", "select", [8] * 4).id

    same = key()
    assert key(runtime={"micro_batch_tokens": 4096, "compile": True, "save_steps": 7, "device": "cpu"}) == same
    assert key(recover={"lr": 0.001}) != same and key(recover={"group_by_length": False}) != same
    assert key(seed=1) != same
    identity = recovery_identity(load_job().recover_config("train.txt", [8] * 4))
    assert not set(identity) & {"device", "compile", "micro_batch_tokens", "save_steps", "data", "rank_vector"}


def test_every_job_field_has_help_text():
    def fields(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield cls, f
            if dataclasses.is_dataclass(hints[f.name]):
                yield from fields(hints[f.name])

    found = list(fields(JobConfig))
    assert len(found) > 100
    assert [f"{cls.__name__}.{f.name}" for cls, f in found if not cfg.help_text(f)] == []


def test_the_library_cli_refuses_a_bad_option_in_one_line():
    result = subprocess.run([sys.executable, "-m", "rankadaptor.cli", "recover", "--model", "m", "--output", "o",
                             "--lr", "fast"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("rankadaptor recover: error: lr='fast' is not accepted: input should be a valid "
                                     "number, unable to parse string as a number")


def test_promoted_stage_options_travel_as_their_own_parameters_and_merge_back():
    from rankadaptor.errors import UserError
    from rankadaptor.job import PROMOTED, from_parameters, load_job, parameters, promoted_name

    job = load_job(None, {"prune": {"ratio": 0.3}, "search": {"max_iterations": 4, "threshold": 0.01},
                          "recover": {"epochs": 1, "rank": 4}, "registry": {"model_name": "m"}})
    values = parameters(job, PROMOTED)
    assert (values["prune_ratio"], values["search_max_iterations"], values["search_threshold"],
            values["recover_epochs"], values["registry_model_name"]) == (0.3, 4, 0.01, 1, "m")
    assert values["stage_options"]["recover"] == {"rank": 4}  # the promoted ones only once
    assert not {"prune", "search", "registry"} & set(values["stage_options"])
    options = values.pop("stage_options")
    assert from_parameters(options, **values) == job
    unpromoted = parameters(job)  # a pipeline without them keeps them in stage_options
    assert unpromoted["stage_options"]["prune"] == {"ratio": 0.3} and "prune_ratio" not in unpromoted
    assert from_parameters(unpromoted.pop("stage_options"), **unpromoted, prune_ratio=None) == job
    with pytest.raises(UserError, match="stage_options sets prune.ratio and so does the parameter prune_ratio"):
        from_parameters({"prune": {"ratio": 0.3}}, **{promoted_name(PROMOTED[0]): 0.2})


def test_a_job_with_task_files_becomes_pipeline_arguments(tmp_path):
    """A dict option whose default is empty (task_files, what a catalog task carries) is all 'changed'."""
    from rankadaptor.job import PROMOTED, parameters

    rows = tmp_path / "poems.txt"
    rows.write_text("a poem\n")
    job = load_job(None, {"source_tasks": ["ppl:poems"], "task_files": {"ppl:poems": str(rows)}})
    assert parameters(job, PROMOTED)["stage_options"]["task_files"] == {"ppl:poems": str(rows)}
