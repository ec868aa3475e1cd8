"""Kubeflow components: each a few lines that call one step of `rankadaptor.steps`.

All run on the project's own images (no packages installed at pod start). The job configuration
travels as one JSON string, built and validated once by the `configure` component.
"""

from rankadaptor.infra import images

REGISTRY, TAG = images.registry(), images.tag()
GPU_IMAGE, CPU_IMAGE = images.image("gpu"), images.image("cpu")
