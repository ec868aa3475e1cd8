"""Two runs on one bank at once (two users, or a schedule overlapping its previous run), against a real MLflow
server on PostgreSQL: no trial is banked twice or lost, and the champion alias ends at the better version."""

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from mlflow import MlflowClient
from servers import mlflow_server, postgres, seaweedfs, write_adapter, write_pruned_model

pytestmark = pytest.mark.slow

WRITER = """
import json, sys, time
from rankadaptor.infra import bank
from rankadaptor.serving import registry
from rankadaptor.trial import TrialKey
uri, start, order, adapter, base, score = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), *sys.argv[4:7]
while time.time() < start:
    time.sleep(0.005)
for i in order:  # the same trials as the other writer, in another order
    key = TrialKey(base_model="org/tiny", base_checksum="a" * 64, pruning={"ratio": 0.25}, task="boolq",
                   split="select", rank_vector=[i, 2, 4, 8], recovery={"lr": 1e-4}, data_checksum="d" * 64, seed=0)
    bank.record_trial(key, score=i / 100, experiment="one-bank", tracking_uri=uri)
report = {"tasks": {"boolq": {"metric": "acc", "value": float(score), "stderr": 0.01, "n": 200}},
          "mean": float(score), "split": "report", "seconds": 1.0}
print(registry.register(adapter, base, report, registry.RegistryConfig(model_name="one-model", tracking_uri=uri)))
"""


def test_two_writers_at_once_bank_every_trial_once_and_crown_the_better(tmp_path, tiny_model_dir):
    (tmp_path / "s3").mkdir()
    base = write_pruned_model(str(tmp_path / "pruned"), tiny_model_dir)
    adapters = [write_adapter(str(tmp_path / f"adapter-{n}"), base, [8, 2, 4, 8], seed=n) for n in (0, 1)]
    trials = list(range(1, 13))
    with seaweedfs(tmp_path / "s3") as s3, postgres() as backend, mlflow_server(tmp_path, backend, s3) as uri:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), **s3.env()}
        start = time.time() + 8  # both writers start their first write together
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(start), json.dumps(order), adapter, base,
                                     score], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for order, adapter, score in ((trials, adapters[0], "0.61"), (trials[::-1], adapters[1], "0.64"))]
        for writer in writers:
            _, err = writer.communicate(timeout=600)
            assert writer.returncode == 0, err[-3000:]
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("one-bank")
        runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  max_results=1000)
        banked = [json.loads(r.data.params["rank_vector"])[0] for r in runs]
        assert sorted(banked) == trials  # 0 duplicated, 0 lost
        model = client.get_registered_model("one-model")
        champion = client.get_model_version("one-model", str(model.aliases["champion"]))
        assert float(champion.tags["report_mean"]) == pytest.approx(0.64)
