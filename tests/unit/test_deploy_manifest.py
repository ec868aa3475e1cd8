"""`rankadaptor deploy`'s manifest runs as written: the pipeline's own image, storage that holds the model,
one name per registered model (issue: a manifest that pulled docker.io's `rankadaptor-gpu:latest` into a
2Gi ephemeral limit, under one fixed name)."""

import re

import pytest
import yaml
from conftest import ROOT

from rankadaptor.errors import UserError
from rankadaptor.serving import kserve, manifest

GB = 10 ** 9


def container(isvc: dict) -> dict:
    return isvc["spec"]["predictor"]["containers"][0]


def test_the_rendered_image_is_the_compiled_pipelines_image():
    compiled = (ROOT / "pipelines" / "compiled" / "rankadaptor.yaml").read_text()
    pipeline_images = set(re.findall(r"image: (\S*rankadaptor-gpu\S*)", compiled))
    isvc = manifest.inference_service("models:/m/1", manifest.Serving())
    assert pipeline_images == {container(isvc)["image"]}
    assert container(isvc)["image"].rsplit(":", 1)[1] not in ("", "latest")  # pinned by its tag


def test_the_image_follows_the_build_registry_and_tag(monkeypatch):
    monkeypatch.setenv("RANKADAPTOR_IMAGE_REGISTRY", "registry.example.com/ml")
    monkeypatch.setenv("RANKADAPTOR_IMAGE_TAG", "1.2.3")
    assert container(manifest.inference_service("models:/m/1", manifest.Serving()))["image"] == \
        "registry.example.com/ml/rankadaptor-gpu:1.2.3"


def test_storage_covers_a_7b_model_plus_headroom():
    seven_b = 14 * GB  # a self-contained 7B version: its base in bf16 plus the adapter
    isvc = manifest.inference_service("models:/m/1", manifest.Serving(), model_bytes=seven_b)
    resources = container(isvc)["resources"]
    tmp = manifest.quantity_bytes(isvc["spec"]["predictor"]["volumes"][0]["emptyDir"]["sizeLimit"])
    assert tmp >= seven_b * manifest.HEADROOM
    assert manifest.quantity_bytes(resources["requests"]["ephemeral-storage"]) >= tmp
    assert manifest.quantity_bytes(resources["limits"]["ephemeral-storage"]) >= tmp + manifest.WRITABLE
    assert kserve.problems(isvc) == []


def test_an_explicit_tmp_size_is_honoured_and_refused_when_the_model_cannot_fit():
    isvc = manifest.inference_service("models:/m/1", manifest.Serving(tmp_size="200Gi"), model_bytes=14 * GB)
    assert isvc["spec"]["predictor"]["volumes"][0]["emptyDir"]["sizeLimit"] == "200Gi"
    assert container(isvc)["resources"]["requests"]["ephemeral-storage"] == "200Gi"
    with pytest.raises(UserError, match=r"tmp_size=8Gi cannot hold this version: its model is 13\.0 GiB"):
        manifest.inference_service("models:/m/1", manifest.Serving(tmp_size="8Gi"), model_bytes=14 * GB)
    with pytest.raises(UserError, match="tmp_size='lots' is not accepted"):
        manifest.Serving(tmp_size="lots").validate()


def test_each_registered_model_gets_its_own_valid_name():
    models = ["rankadaptor", "llama-7b_width0.2_boolq", "Llama-7B_width0.2_BoolQ", "7b:ppl", "x" * 80]
    names = [manifest.inference_service(f"models:/{m}/1", manifest.Serving())["metadata"]["name"] for m in models]
    assert len(set(names)) == len(models) and names[0] == "rankadaptor"
    assert all(re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", n) for n in names), names
    assert manifest.inference_service("models:/m/1", manifest.Serving(name="boolq"))["metadata"]["name"] == "boolq"


def test_the_rendered_file_brings_its_service_account_and_names_its_secrets():
    resolved = manifest.Resolved("m", "champion", 3, "models:/m-1", None, base_included=False, model_bytes=GB)
    text = manifest.render(resolved, manifest.Serving())
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "InferenceService"]
    assert docs[0]["metadata"]["name"] == docs[1]["spec"]["predictor"]["serviceAccountName"]
    assert "create secret generic rankadaptor-mlflow" in text and "rankadaptor-s3" in text.split("\n", 3)[2]
    assert docs[0] == yaml.safe_load((ROOT / "k8s" / "serving" / "serviceaccount.yaml").read_text()) | {
        "metadata": docs[0]["metadata"]}
