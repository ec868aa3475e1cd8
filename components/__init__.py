"""Kubeflow components: each a few lines that call one step of `rankadaptor.steps`.

All run on the project's own images (no packages installed at pod start). The job configuration
travels as one JSON string, built and validated once by the `configure` component.
"""

import os

REGISTRY = os.environ.get("RANKADAPTOR_IMAGE_REGISTRY", "ghcr.io/rankadaptor")
TAG = os.environ.get("RANKADAPTOR_IMAGE_TAG", "0.1.0")
GPU_IMAGE = f"{REGISTRY}/rankadaptor-gpu:{TAG}"
CPU_IMAGE = f"{REGISTRY}/rankadaptor-cpu:{TAG}"
