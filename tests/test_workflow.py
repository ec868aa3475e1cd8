import json

from rankadaptor import storage
from rankadaptor.workflow import load_job, model_structure, prepare_data, prune_step


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
