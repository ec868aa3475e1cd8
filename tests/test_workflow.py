import json

from rankadaptor import storage
from rankadaptor.workflow import load_job, model_structure, prepare_data, prune_step, trial_key


def test_a_repruned_model_keeps_its_trial_identity(tmp_path):
    """Reruns find their trials in the bank only if pruning the same model again gives the same identity,
    although the prune report (timings) differs."""
    job = load_job(None, {"corpus_docs": 20})
    prepare_data(job, str(tmp_path / "data"))
    for name in ("a", "b"):
        prune_step(job, str(tmp_path / "data"), str(tmp_path / name))
    first, second = (model_structure(str(tmp_path / name), job.base_model) for name in ("a", "b"))
    reports = [json.loads((tmp_path / name / "prune_report.json").read_text()) for name in ("a", "b")]
    assert reports[0]["seconds"] != reports[1]["seconds"]
    assert storage.checksum(tmp_path / "a") != storage.checksum(tmp_path / "b")
    assert first["checksum"] == second["checksum"]
    assert first["cost_per_rank"] == second["cost_per_rank"] and len(first["layer_features"]) == 4


def test_how_a_recovery_runs_is_not_part_of_its_trial_identity():
    """Memory, speed and checkpoint settings leave the result as it is: a rerun with other ones reuses the
    bank's trials; a setting that changes what is trained makes a new trial."""
    structure, data = {"checksum": "m", "pruning": {"ratio": 0.2}}, {"checksum": "d"}

    def key(recover: dict) -> str:
        return trial_key(load_job(None, {"recover": recover}), structure, data, "ppl:heldout", "select", [8] * 4).id

    same = key({})
    assert key({"micro_batch_tokens": 4096, "compile": True, "save_steps": 7, "device": "cpu"}) == same
    assert key({"lr": 0.001}) != same and key({"group_by_length": False}) != same
