"""Step input artifacts the component tests write (a recovery corpus, a proposal) and the placement that runs
a GPU step on this machine's CPU: one definition for every test that calls components directly."""

import shutil
from pathlib import Path

from conftest import BUNDLED

from pipelines.placement import PLACEMENT
from rankadaptor.infra import storage

CPU_PLACEMENT = {**{p.name: p.default for p in PLACEMENT}, "gpu_count": 0, "gpu_step_cpu": "1",
                 "gpu_step_memory": "1Gi"}


def write_corpus(uri: Path) -> str:
    """A prepared-data artifact at uri: the bundled recovery text as the train split."""
    with storage.writing_dir(str(uri)) as out:
        shutil.copy(BUNDLED / "text" / "train.txt", out / "train.txt")
        storage.write_json_atomic(out / "data.json", {"train": "train.txt", "heldout": None})
    return str(uri)


def write_proposal(uri: Path, rank_vector: list[int]) -> str:
    """A proposal artifact at uri: what the propose step writes for recover to read."""
    with storage.writing_dir(str(uri)) as out:
        storage.write_json_atomic(out / "proposal.json", {"rank_vector": rank_vector})
    return str(uri)
