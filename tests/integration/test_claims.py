"""A catalog task is searched by one run at a time (rankadaptor.infra.claims), against a real MLflow server on
PostgreSQL: claims racing at once leave exactly one, two plans at once plan the task once, an expired claim
(a run that died) no longer blocks the task, and the register step's release ends the claim."""

import json
import subprocess
import sys
import threading
import time

import pytest
import yaml
from conftest import ROOT
from mlflow import MlflowClient
from mlflow.entities import ViewType
from servers import mlflow_server, postgres, seaweedfs
from test_catalog import catalog_values

from rankadaptor.infra import claims

pytestmark = pytest.mark.slow

DIGEST = "d" * 64


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    (root / "s3").mkdir()
    with seaweedfs(root / "s3") as s3, postgres() as backend, mlflow_server(root, backend, s3) as uri:
        yield uri


def claim_runs(uri: str, view=ViewType.ACTIVE_ONLY) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(claims.EXPERIMENT)
    return client.search_runs([found.experiment_id], run_view_type=view, max_results=1000) if found else []


def test_eight_claims_at_once_one_wins_and_the_losers_leave_no_claim(server):
    results, barrier = {}, threading.Barrier(8)

    def race(n: int) -> None:
        barrier.wait()
        results[n] = claims.claim("race-model", DIGEST, f"run-{n}", 24.0, server)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [n for n, holder in results.items() if holder is None]
    assert len(won) == 1 and len(results) == 8
    assert {holder.owner for holder in results.values() if holder is not None} == {f"run-{won[0]}"}
    live = claims.live_claims("race-model", DIGEST, 24.0, server)
    assert [c.owner for c in live] == [f"run-{won[0]}"]
    mine = [r for r in claim_runs(server, ViewType.ALL) if r.data.tags[claims.MODEL] == "race-model"]
    assert sum(r.info.lifecycle_stage == "deleted" for r in mine) == 7  # each loser deleted its own claim

    assert claims.claim("race-model", DIGEST, f"run-{won[0]}", 24.0, server) is None  # a retried plan keeps it
    assert len(claims.live_claims("race-model", DIGEST, 24.0, server)) == 1
    assert claims.release("race-model", DIGEST, "someone-else", server) == 0
    assert claims.release("race-model", DIGEST, f"run-{won[0]}", server) == 1  # the register step
    assert claims.live_claims("race-model", DIGEST, 24.0, server) == []
    assert claims.claim("race-model", DIGEST, "run-later", 24.0, server) is None


def test_an_expired_claim_no_longer_blocks_the_task(server):
    assert claims.claim("lease-model", DIGEST, "run-died", 24.0, server) is None
    held = claims.claim("lease-model", DIGEST, "run-overlapping", 24.0, server)
    assert held is not None and held.owner == "run-died"
    time.sleep(1.5)
    assert claims.claim("lease-model", DIGEST, "run-next-day", 1 / 3600, server) is None  # a 1 s lease: expired
    assert [c.owner for c in claims.live_claims("lease-model", DIGEST, 1 / 3600, server)] == ["run-next-day"]


PLAN = """
import json, sys, time
from rankadaptor.steps.catalog import plan
catalog, owner, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
while time.time() < start:
    time.sleep(0.005)
print(json.dumps([json.loads(text)["target_task"] for text in plan(catalog, loop_cap=6, owner=owner)]))
"""


def plans(tmp_path, uri: str, owners: list[str], delay: float = 8) -> list[tuple[list[str], str]]:
    """plan() in one process per owner, all started at the same moment: (planned tasks, progress lines)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "MLFLOW_TRACKING_URI": uri}
    start = time.time() + delay  # past every process's imports
    procs = [subprocess.Popen([sys.executable, "-c", PLAN, str(tmp_path / "catalog.yaml"), owner, str(start)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for owner in owners]
    found = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        lines = out.strip().splitlines()
        found.append((json.loads(lines[-1]), "\n".join(lines[:-1])))
    return found


def test_two_plans_at_once_plan_each_task_once_and_an_expired_claim_frees_it(tmp_path, server):
    values = catalog_values(tmp_path)
    values["claim_hours"] = 20 / 3600  # 20 s: the plans below finish well within it
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(values))
    (a, a_out), (b, b_out) = plans(tmp_path, server, ["run-a", "run-b"])
    tasks = ["mc:everyday", "ppl:poems"]
    assert sorted(a + b) == tasks  # each task planned by exactly one of them
    for planned, out, other in ((a, a_out, "run-b"), (b, b_out, "run-a")):
        for task in tasks:
            if task not in planned:
                assert f"task {task}: skipped (searched by run {other} since " in out, out
    time.sleep(20)  # neither run registers: their claims expire, as a run that died leaves them
    [(again, out)] = plans(tmp_path, server, ["run-c"], delay=0)
    assert again == tasks and "skipped (searched" not in out
