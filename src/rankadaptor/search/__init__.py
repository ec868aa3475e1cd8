"""The rank search: its config, the surrogate (an MLP from a rank vector to a predicted score), the
proposers (search.proposer), the propose/update loop and its saved state."""

from rankadaptor.search.config import SearchConfig
from rankadaptor.search.loop import SearchState, propose, run_loop, update
from rankadaptor.search.surrogate import SurrogateConfig

__all__ = ["SearchConfig", "SearchState", "SurrogateConfig", "propose", "run_loop", "update"]
