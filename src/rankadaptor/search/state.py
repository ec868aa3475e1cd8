"""The search-state artifact: the search (surrogate + trials) and the trial context beside it, read and
written by every search step.
"""

from __future__ import annotations

import dataclasses

from rankadaptor.errors import check
from rankadaptor.infra import storage
from rankadaptor.search.loop import SearchState, load_search, save_search
from rankadaptor.trial import Observation, TrialContext

CONTEXT_FILE = "context.json"


SEARCH_DIR = "search"


def save_state(state: SearchState, context: TrialContext, uri: str) -> None:
    """The search-state artifact: the search (search.save_search) and the trial context beside it."""
    with storage.writing_dir(uri) as out:
        save_search(state, str(out / SEARCH_DIR))
        storage.write_json_atomic(out / CONTEXT_FILE, dataclasses.asdict(context))


def load_state(uri: str) -> tuple[SearchState, TrialContext]:
    directory = storage.local_dir(uri)
    check((directory / CONTEXT_FILE).is_file(), f"{uri!r} is not a search-state artifact: no {CONTEXT_FILE}")
    return load_search(str(directory / SEARCH_DIR)), TrialContext(**storage.read_json(directory / CONTEXT_FILE))


def best_trial(state_uri: str) -> tuple[Observation, list[Observation], TrialContext]:
    """The best measured trial of a search state, all its trials and its context (reads the state only)."""
    state, context = load_state(state_uri)
    trials = state.measured()
    check(bool(trials), "the search state holds no measured trial of the target task")
    return max(trials, key=lambda o: o.score), trials, context
