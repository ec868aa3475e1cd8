"""Security: no code runs from a model, adapter or checkpoint (no pickle, no remote code), and credentials
come only from the environment and never reach a param, tag, log line, output or stored file.

The source rules are checked statically (ruff's bandit rules `S`, run on everything by test_lint.py, plus an
AST scan here for what bandit lacks: torch.load without weights_only, trust_remote_code, cloudpickle/joblib/
marshal, credentials passed by hand) and dynamically, by loading booby-trapped files whose code would leave a
sentinel file behind if it ever ran. Compiled pipeline YAML: test_pipeline_compile.py;
non-root images: test_images.py; Kubernetes least privilege: test_k8s_manifests.py.
"""

import ast
import io
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import save_file
from servers import copy_store, empty_mlflow_db, write_adapter, write_pruned_model

from rankadaptor.config import from_dict
from rankadaptor.errors import UserError
from rankadaptor.infra import bank, storage
from rankadaptor.models.loading import load_model
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import run_recover, training_identity
from rankadaptor.recover.train import SETTINGS, settings_record
from rankadaptor.serving import registry
from rankadaptor.trial import TrialKey

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / name for name in ("src", "components", "pipelines", "benchmarks")]
PICKLE_MODULES = {"_pickle", "cloudpickle", "joblib", "marshal"}  # ruff's S403 covers pickle, cPickle, dill, shelve
CREDENTIAL_KEYWORDS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "password", "token"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _is_const(node: ast.AST, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def source_problems(source: str, where: str = "<snippet>") -> list[str]:
    """What in this Python source could run code from data or handle credentials by hand, beyond what ruff's
    S rules check (yaml.load, eval/exec, shell=True, pickle imports: see test_lint.py)."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] in PICKLE_MODULES for m in modules):
                problems.append(f"{line}: imports a pickle-like module {modules}")
            if isinstance(node, ast.ImportFrom) and node.module == "torch" and "load" in [a.name for a in node.names]:
                problems.append(f"{line}: imports torch.load by name (hides it from this check)")
        if not isinstance(node, ast.Call):
            continue
        name, keywords = _dotted(node.func), {k.arg: k.value for k in node.keywords}
        if name == "torch.load" and not _is_const(keywords.get("weights_only"), True):
            problems.append(f"{line}: torch.load without weights_only=True unpickles arbitrary objects")
        if "trust_remote_code" in keywords and not _is_const(keywords["trust_remote_code"], False):
            problems.append(f"{line}: trust_remote_code is not the constant False")
        if CREDENTIAL_KEYWORDS & set(keywords):
            problems.append(f"{line}: passes credentials by hand ({sorted(CREDENTIAL_KEYWORDS & set(keywords))}); "
                            "boto3/MLflow read them from the environment")
    return problems


def shipped_python() -> list[Path]:
    files = [p for d in SHIPPED for p in d.rglob("*.py") if "compiled" not in p.parts]
    assert len(files) > 20, "the scan found too few files: is the layout still src/, components/, pipelines/?"
    return files


def test_shipped_code_loads_no_pickle_runs_no_remote_code_and_takes_no_credentials():
    problems = [p for path in shipped_python() for p in source_problems(path.read_text(), str(path.relative_to(ROOT)))]
    assert problems == []


def test_no_shipped_file_enables_remote_code():
    """Also outside Python calls: lm-eval model_args strings, YAML configs, compiled pipelines, Dockerfiles."""
    texts = [p for d in [*SHIPPED, ROOT / "images", ROOT / "k8s"] if d.exists() for p in d.rglob("*")
             if p.is_file() and (p.suffix in (".py", ".yaml", ".yml", ".json", ".sh", ".txt")
                                 or p.name.startswith("Dockerfile"))]
    assert len(texts) > 30
    flagged = [str(p.relative_to(ROOT)) for p in texts
               if any(s in p.read_text(errors="replace").replace(" ", "").lower()
                      for s in ("trust_remote_code=true", "trust_remote_code:true", '"trust_remote_code":true'))]
    assert flagged == []


@pytest.mark.parametrize("snippet", [
    "from cloudpickle import loads",
    "import joblib.numpy_pickle",
    "import torch\ntorch.load('state.pt')",
    "import torch\ntorch.load('state.pt', weights_only=False)",
    "from torch import load",
    "AutoModel.from_pretrained('x', trust_remote_code=True)",
    "AutoModel.from_pretrained('x', trust_remote_code=flag)",
    "boto3.client('s3', aws_secret_access_key=key)",
])
def test_the_source_scan_catches_each_violation(snippet):
    assert len(source_problems(snippet)) == 1


def test_the_source_scan_accepts_the_safe_forms():
    safe = ("import torch\nfrom safetensors.torch import load_file\ntorch.load('s.pt', weights_only=True)\n"
            "AutoConfig.from_pretrained('x', trust_remote_code=False)\nimport yaml\nyaml.safe_load('a: 1')\n"
            "subprocess.run(['ls'], check=True)\nboto3.session.Session().client('s3')")
    assert source_problems(safe) == []


# ---------------------------------------------------------------------------------------------------------
# Booby-trapped files: their code would create the sentinel file if it ever ran


class Trap:
    """Unpickling this object creates (opens for writing) the sentinel file."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return open, (str(self.sentinel), "w")


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def add_remote_code(model_dir: Path, sentinel: Path, model_type: str | None = None) -> None:
    """Custom code beside the checkpoint, wired up with auto_map as hub repositories do."""
    (model_dir / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n"
                                       "from transformers import LlamaConfig, LlamaForCausalLM\n"
                                       "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
                                       "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    if model_type:
        config["model_type"] = model_type
    (model_dir / "config.json").write_text(json.dumps(config))


def test_checkpoint_code_never_runs_even_when_a_user_would_say_yes(tiny_model_dir, tmp_path, monkeypatch):
    sentinel = tmp_path / "remote-code-ran"
    # transformers asks on stdin before running a checkpoint's code unless trust_remote_code is given: answer yes.
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 10))
    known = copy_model(tiny_model_dir, tmp_path / "llama-with-code")
    add_remote_code(known, sentinel)
    model, _ = load_model(str(known))  # a LLaMA: loaded with the library's own class, the code ignored
    assert type(model).__name__ == "LlamaForCausalLM"
    unknown = copy_model(tiny_model_dir, tmp_path / "custom-architecture")
    add_remote_code(unknown, sentinel, model_type="evil")
    with pytest.raises(UserError, match="cannot read the config of model .*custom-architecture"):
        load_model(str(unknown))
    assert not sentinel.exists()


def test_pickled_weights_are_never_unpickled(tiny_model_dir, tmp_path):
    sentinel = tmp_path / "pickle-ran"
    model_dir = copy_model(tiny_model_dir, tmp_path / "pickled-model")
    (model_dir / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": Trap(sentinel)}, model_dir / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"cannot load the weights of model .* \(safetensors expected\)"):
        load_model(str(model_dir))

    base = write_pruned_model(str(tmp_path / "pruned"), tiny_model_dir)
    adapter = tmp_path / "pickled-adapter"
    with storage.writing_dir(str(adapter)) as out:  # a valid manifest: only the loader stands in the way
        for path in Path(write_adapter(str(tmp_path / "adapter"), base, [8, 8, 8, 8])).iterdir():
            if path.name not in (storage.MANIFEST, "adapter_model.safetensors"):
                shutil.copy(path, out / path.name)
        torch.save({"trap": Trap(sentinel)}, out / "adapter_model.bin")
    with pytest.raises(UserError, match="cannot load the adapter .*Weights only load failed"):
        load_adapted(base, str(adapter))
    assert not sentinel.exists()


def test_a_pickled_training_checkpoint_is_never_unpickled(tiny_model_dir, text_file, tmp_path):
    sentinel = tmp_path / "checkpoint-pickle-ran"
    checkpoint = tmp_path / "adapter.ckpt"
    config = from_dict(RecoverConfig, {"data": str(text_file), "cutoff": 32, "batch_size": 4, "micro_batch_tokens": 128,
                                       "epochs": 1, "max_steps": 2, "device": "cpu"})
    identity = training_identity(config, str(tiny_model_dir), [config.rank] * 4)  # the run's own settings record
    with storage.writing_dir(str(checkpoint / "a")) as out:  # what the resume path reads, tampered with
        save_file({}, out / "trainable.safetensors")
        torch.save({"optimizer": Trap(sentinel)}, out / "state.pt")
        (out / "log.json").write_text(json.dumps({"step": 1}))
        (out / SETTINGS).write_text(json.dumps(settings_record(identity)))
    with pytest.raises(UserError, match="holds more than tensors and plain values, refused"):
        run_recover(config, str(tiny_model_dir), str(tmp_path / "adapter"))
    assert not sentinel.exists()
    assert not (tmp_path / "adapter").exists()


# ---------------------------------------------------------------------------------------------------------
# Credentials: read from the environment, never written anywhere

SECRETS = {"AWS_SECRET_ACCESS_KEY": "sentinel-aws-secret-4f1c9e", "AWS_SESSION_TOKEN": "sentinel-aws-session-77d2a0",
           "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow-password-b3e8",
           "MLFLOW_TRACKING_TOKEN": "sentinel-mlflow-token-91ac"}


@pytest.mark.slow
def test_credentials_reach_no_param_tag_log_output_or_stored_file(tiny_model_dir, tmp_path, monkeypatch, capsys,
                                                                  caplog):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bank-user")
    caplog.set_level(logging.DEBUG)
    store = tmp_path / "store"
    uri = copy_store(empty_mlflow_db(tmp_path / "template"), store)
    base = write_pruned_model(str(tmp_path / "pruned"), tiny_model_dir)
    adapter = write_adapter(str(tmp_path / "adapter"), base, [8, 2, 4, 8])
    pasted = (f"s3 secret {SECRETS['AWS_SECRET_ACCESS_KEY']} and "
              f"postgresql://u:{SECRETS['MLFLOW_TRACKING_PASSWORD']}@db/x")
    key = TrialKey(base_model="org/tiny", base_checksum="a" * 64, pruning={"ratio": 0.2}, task="boolq",
                        split="select", rank_vector=[8, 2, 4, 8], recovery={"lr": 1e-4, "note": pasted},
                        data_checksum="d" * 64, seed=0)
    bank.record_trial(key, score=0.6, artifact=adapter, tracking_uri=uri)
    report = {"tasks": {"boolq": {"metric": "acc", "value": 0.6}}, "mean": 0.6, "split": "report"}
    registry.register(adapter, base, report, registry.RegistryConfig(model_name="tiny", tracking_uri=uri),
                      lineage={"note": pasted, "token": SECRETS["MLFLOW_TRACKING_TOKEN"]})

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    logged = [v for run in runs for v in (*run.data.params.values(), *run.data.tags.values())]
    logged += [v for version in client.search_model_versions("name = 'tiny'") for v in version.tags.values()]
    captured = capsys.readouterr()
    stored = [(p, p.read_bytes()) for p in store.rglob("*") if p.is_file()]
    assert len(runs) == 2 and "***" in " ".join(logged)  # the pasted values were there, masked
    assert any(p.name == "MLmodel" for p, _ in stored)
    for secret in SECRETS.values():
        assert not any(secret in v for v in logged)
        assert secret not in caplog.text and secret not in captured.out and secret not in captured.err
        assert not [p for p, data in stored if secret.encode() in data]
    assert not [p for p, _ in stored if p.suffix in (".pkl", ".pickle")]  # a model from code, not a pickled one
