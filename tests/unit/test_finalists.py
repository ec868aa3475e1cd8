"""On a go, the search measures the go/no-go screen's finalists first (best first, each once), then the job's
proposer; a no-go or search.go always queues none; go_check's decision reaches meta-pretrain in the pipeline."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from rankadaptor.flows.search import screen_finalists
from rankadaptor.search.config import PROPOSERS, SearchConfig
from rankadaptor.search.go import GoDecision, decide
from rankadaptor.search.loop import SearchState, load_search, pending_finalists, propose, save_search, update
from rankadaptor.search.surrogate import SurrogateConfig, new_surrogate
from rankadaptor.trial import Observation

COST = [100, 60, 40, 80, 50, 100]  # LoRA parameters per unit rank of 6 layers
UNIFORM = [8] * 6
FINALISTS = [[12, 4, 12, 4, 12, 4], [10, 6, 10, 6, 10, 6], [12, 6, 10, 4, 10, 6]]
COMPILED = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"


def _state(finalists, measured=()) -> SearchState:
    """The uniform anchor (and `measured` vectors) measured, the screen's finalists queued."""
    observations = [Observation("t", UNIFORM, 0.5), *(Observation("t", list(v), 0.51, predicted=0.5) for v in measured)]
    return SearchState("t", new_surrogate(SurrogateConfig(adapt_steps=5), [2, 4, 6, 8, 10, 12]), list(COST), None,
                       observations, [list(v) for v in finalists])


def _score(vector) -> float:
    return 0.5 + float(np.dot(np.asarray(vector) - 8, [3, -1, 2, -1, 1, -2])) / 1000


@pytest.mark.parametrize("proposer", PROPOSERS)
def test_finalists_are_proposed_first_in_order_never_twice_then_the_proposer(proposer):
    config = SearchConfig(proposer=proposer, num_samples=300, budget=8 * sum(COST))
    state = _state(FINALISTS, measured=[FINALISTS[1]])  # the second was measured already: skipped
    proposed, states = [], []
    for _ in range(4):
        states.append(state)
        proposal = propose(state, config)
        assert np.isfinite(proposal.predicted)  # the surrogate's prediction, for the report and convergence
        proposed.append(proposal.rank_vector)
        state, _ = update(state, proposal, _score(proposal.rank_vector), config)
    assert proposed[:2] == [FINALISTS[0], FINALISTS[2]] and pending_finalists(state) == []
    assert proposed[2] not in FINALISTS and proposed[3] not in FINALISTS
    # then the proposer: what it proposes from the same trials without any queue
    without = dataclasses.replace(states[2], finalists=[])
    assert proposed[2] == propose(without, config).rank_vector
    assert len({tuple(v) for v in proposed}) == len(proposed)


def test_the_queue_survives_the_state_artifact_and_a_rebuilt_state_skips_what_was_measured(tmp_path):
    config = SearchConfig(num_samples=300)
    state, _ = update(_state(FINALISTS), propose(_state(FINALISTS), config), 0.52, config)
    save_search(state, str(tmp_path / "search"))
    loaded = load_search(str(tmp_path / "search"))
    assert loaded.finalists == FINALISTS and pending_finalists(loaded) == FINALISTS[1:]
    assert propose(loaded, config).rank_vector == FINALISTS[1]
    # a rerun rebuilds its state from the bank: the measured finalist is among its trials, so it is not proposed
    rebuilt = _state(FINALISTS, measured=[FINALISTS[0]])
    assert propose(rebuilt, config).rank_vector == FINALISTS[1]


def test_without_a_queue_the_search_proposes_as_before():
    config = SearchConfig(num_samples=300)
    assert propose(_state([]), config) == propose(SearchState("t", _state([]).surrogate, list(COST), None,
                                                               _state([]).observations), config)


def test_only_a_go_queues_the_screens_finalists():
    config = SearchConfig(threshold=0.005)
    go = dataclasses.asdict(GoDecision(True, "auto", "go: ...", finalists=FINALISTS[:2]))
    assert screen_finalists(go) == FINALISTS[:2]
    assert screen_finalists({**go, "go": False}) == []  # a no-go: no search
    always = dataclasses.asdict(decide(dataclasses.replace(config, go="always"), [], [], 5, 10.0))
    assert always["go"] and screen_finalists(always) == []  # search.go always: no screen, no finalists
    assert screen_finalists(None) == []


@pytest.mark.parametrize("name", ["rankadaptor", "catalog"])
def test_the_go_decision_reaches_meta_pretrain_in_both_branches(name):
    spec = next(yaml.safe_load_all((COMPILED / f"{name}.yaml").read_text()))
    tasks = [t for c in spec["components"].values() for n, t in c.get("dag", {}).get("tasks", {}).items()
             if n.startswith("meta-pretrain")]
    assert len(tasks) == 2  # the search-pays branch and the uniform-only one
    for task in tasks:
        source = task["inputs"]["artifacts"]["go_decision"]
        assert source["componentInputArtifact"] == "pipelinechannel--go-check-decision"
    # and the branches' channel of that name is go-check's decision output
    feeds = [a["taskOutputArtifact"] for c in [spec["root"], *spec["components"].values()]
             for t in c.get("dag", {}).get("tasks", {}).values()
             for n, a in t.get("inputs", {}).get("artifacts", {}).items() if n == "pipelinechannel--go-check-decision"
             and "taskOutputArtifact" in a]
    assert feeds and all(f == {"producerTask": "go-check", "outputArtifactKey": "decision"} for f in feeds)
