"""The steps that load no model (configure, propose, update, the gate, and the state-reading part of register)
import neither transformers, peft nor lm_eval, directly or through a package __init__: each would add seconds
to every such step's process start. The steps run for real in a fresh interpreter, one after another, and
the heavy modules are looked for after each."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("transformers", "peft", "lm_eval")

SCRIPT = r'''
import json, sys
from pathlib import Path

tmp = Path(sys.argv[1])
heavy = lambda: sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "peft", "lm_eval"))
seen = {}

from rankadaptor.job import check_loop_cap, from_parameters, job_to_json, load_job, parameters  # configure
job = from_parameters(**parameters(load_job(None, {"search": {"num_samples": 200, "max_iterations": 3}})))
check_loop_cap(job, 6)
text = job_to_json(job)
seen["configure"] = heavy()

from rankadaptor.job import job_from_json
from rankadaptor.search import SearchState
from rankadaptor.trial import Observation
from rankadaptor.search.surrogate import new_surrogate
from rankadaptor.trial import TrialContext
from rankadaptor.search.state import save_state

job = job_from_json(text)
context = TrialContext("m" * 64, {"ratio": 0.2}, [300, 250, 250, 300], [[1.0, 0.5]] * 4, "d" * 64)
anchor = Observation(job.target_task, [job.baseline_rank] * 4, -2.5, context.layer_features)
surrogate = new_surrogate(job.surrogate_config(), job.search.candidates, 4, 2)
save_state(SearchState(job.target_task, surrogate, context.cost_per_rank, context.layer_features, [anchor]),
           context, str(tmp / "state-0"))

from rankadaptor.steps.search import propose  # propose
proposal = propose(job, str(tmp / "state-0"), str(tmp / "proposal"))
seen["propose"] = heavy()

from rankadaptor.infra import storage
from rankadaptor.steps.search import update  # update
with storage.writing_dir(str(tmp / "metrics")) as out:
    (out / "metrics.json").write_text(json.dumps({"scores": {job.target_task: -2.4}, "seconds": 1.0}))
with storage.writing_dir(str(tmp / "adapter")) as out:
    (out / "train_metrics.json").write_text(json.dumps({"seconds": 2.0}))
update(job, str(tmp / "state-0"), str(tmp / "proposal"), str(tmp / "metrics"), str(tmp / "adapter"), str(tmp / "state-1"))
seen["update"] = heavy()

from rankadaptor.steps.search import gate  # the loop gate
stop = [gate(job, str(tmp / "state-1"), i) for i in (1, 3)]
seen["gate"] = heavy()

from rankadaptor.search.state import best_trial  # register, the part that reads the state
best, trials, _ = best_trial(str(tmp / "state-1"))
seen["register (state)"] = heavy()
print(json.dumps({"seen": seen, "stop": stop, "trials": len(trials), "proposal": proposal["rank_vector"]}))
'''


@pytest.mark.slow  # fresh interpreters
def test_light_steps_import_no_transformers_peft_or_lm_eval(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["seen"] == {step: [] for step in ("configure", "propose", "update", "gate", "register (state)")}
    assert out["trials"] == 2 and len(out["proposal"]) == 4
    assert out["stop"][1] is True  # the job's max_iterations (3) reached: the gate stops the loop


@pytest.mark.slow  # fresh interpreters
def test_the_import_check_sees_a_heavy_import():
    """The same check finds transformers where a module does import it (the check can fail)."""
    code = ("import sys; import rankadaptor.models.pruned_llama; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'peft', 'lm_eval')))")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "transformers" in out or "peft" in out or "lm_eval" in out, out
