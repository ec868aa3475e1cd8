"""The project's container images: one reference for the pipeline's steps and the serving predictor.

images/build.sh builds `<registry>/rankadaptor-<kind>:<tag>`; the pipeline compiles its components with it and
`rankadaptor deploy` renders it, so what is served is what was built (RANKADAPTOR_IMAGE_REGISTRY and
RANKADAPTOR_IMAGE_TAG override both defaults).
"""

import os

REGISTRY_ENV, TAG_ENV = "RANKADAPTOR_IMAGE_REGISTRY", "RANKADAPTOR_IMAGE_TAG"
DEFAULT_REGISTRY, DEFAULT_TAG = "ghcr.io/rankadaptor", "0.1.0"


def registry() -> str:
    return os.environ.get(REGISTRY_ENV, DEFAULT_REGISTRY)


def tag() -> str:
    return os.environ.get(TAG_ENV, DEFAULT_TAG)


def image(kind: str) -> str:
    """The image reference of kind "gpu" or "cpu" (pinned by its tag)."""
    return f"{registry()}/rankadaptor-{kind}:{tag()}"
