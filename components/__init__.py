"""Kubeflow components: each a few lines that call one step of `rankadaptor.steps`.

All run on the project's own images (no packages installed at pod start). The job configuration
travels as one JSON string, built and validated once by the `configure` component.

A GPU component is declared with `gpu_component`: it takes gpu_count and the GPU step's resource inputs
(pipelines.placement.gpu_step passes them to every GPU task) and its first statement after its imports is
`require_gpus(gpu_count)`, the one check (rankadaptor.models.loading) that fails in one line on Kubernetes
when the pod sees no GPU. The check lives in the library, not here: KFP runs only the component function's
own source in the pod, and the images hold the library alone (pyproject.toml), not this package.
"""

import ast
import inspect
import textwrap

from kfp import dsl

from rankadaptor.infra import images

REGISTRY, TAG = images.registry(), images.tag()
GPU_IMAGE, CPU_IMAGE = images.image("gpu"), images.image("cpu")
GPU_CHECK = "require_gpus(gpu_count)"


def checks_gpus_first(func) -> bool:
    """Does func's body (after its docstring and imports) start with GPU_CHECK, imported from the library?"""
    (tree,) = ast.parse(textwrap.dedent(inspect.getsource(func))).body
    body = [s for s in tree.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    imports = [s for s in body if isinstance(s, ast.ImportFrom | ast.Import)]
    work = body[len(imports):] if body[:len(imports)] == imports else body
    imported = any(isinstance(s, ast.ImportFrom) and s.module == "rankadaptor.models.loading"
                   and "require_gpus" in [a.name for a in s.names] for s in imports)
    return imported and bool(work) and ast.unparse(work[0]) == GPU_CHECK


def gpu_component(func):
    """A component on the GPU image; refused unless its body checks its GPUs first (GPU_CHECK)."""
    if not checks_gpus_first(func):
        raise TypeError(f"GPU component {func.__name__}: import require_gpus from rankadaptor.models.loading and "
                        f"call {GPU_CHECK} before any work")
    return dsl.component(func, base_image=GPU_IMAGE, install_kfp_package=False)
