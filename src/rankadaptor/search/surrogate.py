"""RankAdaptor's performance model Q: a rank vector (and the pruned model's layer structure) -> a score.

The paper's Q is an MLP (hidden 32-32-32, one linear output) over the rank vector, pretrained offline
by meta-learning on other tasks and updated online on the target task. Here:

- Two input modes. "ranks" is the paper's: the whole rank vector, each rank scaled to [0, 1] by the
  candidate range, into one MLP; it only works for models with that exact layer count.
  "ranks+structure" reads each layer as a token (scaled rank, relative depth, the layer's structural
  features) through a per-layer encoder shared by all layers, mean-pools the tokens and maps the pool to
  the score with a small head (a DeepSets network). We chose pooling over resampling the vector to a
  fixed number of positions because it takes any layer count exactly (resampling blurs neighbouring
  layers' ranks together and makes distinct vectors look alike), and because the shared encoder learns
  "how a layer of this shape responds to rank" from every layer of every model, which is what lets
  observations from other models and pruning settings help. The price: layers interact only through the
  pooled nonlinearity, not position by position. So that it can still learn which layer wants rank,
  a per-layer linear term on each layer's scaled rank (`layer_head`, the "ranks"-mode head) is added for
  rank vectors of the layer count the surrogate was built for; it starts at zero and only the target
  model's (and same-depth models') observations move it.
  Fixed (unsearched) layers are part of the input: they are constant within one search, so they cost the
  network nothing there, and they keep observations from searches with different searched layers, or
  different models, comparable.
- A small ensemble gives a spread for the search's exploration bonus. Members differ by their
  initialisation seed and by Bayesian-bootstrap weights on the observations (each fit draws Exp(1)
  weights per member and observation), so their disagreement reflects the data, not only the initialisation. Hidden units are SiLU,
  which cannot die into a constant output the way an all-ReLU member can. All members are trained at once
  as batched weights ([member, in, out]).
- Scores are z-scored per (model, task) group in that group's own units (Observation.group names the
  model and pruning), so perplexity and accuracy tasks, and one task on several models, share one model.
  A target task's mean and spread come from its own observations; while there are few, the spread is
  shrunk towards the same task's spread on other models, never towards other tasks' raw units.
  Groups too thin (< 3 observations) or constant to z-score are skipped with a warning.
- Offline meta-pretraining is Reptile (Nichol et al. 2018): sample a source task, take a few Adam steps
  on it, move the weights part of the way towards the adapted ones. Online adaptation takes a few steps
  from the current weights on the target task's observations each time one arrives (all of them,
  replayed, so earlier points are not forgotten); optimiser state is not kept, so the whole state is
  weights + JSON and the Kubeflow propose/update steps can persist it as an artifact. fit_loss is a
  held-out meta-validation loss: the z-MSE on a held-out quarter of each source group after adapting to
  the rest (1.0 = no better than predicting the group mean).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy.stats import kendalltau
from tqdm.auto import tqdm

from rankadaptor import config as cfg
from rankadaptor.config import option
from rankadaptor.errors import check
from rankadaptor.infra import storage
from rankadaptor.trial import FULL, Observation

FEATURE_MODES = ("ranks", "ranks+structure")
WEIGHTS_FILE = "surrogate.safetensors"
META_FILE = "surrogate.json"
FORMAT_VERSION = 2
PRIOR_PSEUDO_COUNT = 2.0  # weight of the source tasks' spread in a target task's spread estimate


@dataclass
class SurrogateConfig:
    feature_mode: str = option("ranks+structure", f"surrogate input, one of {FEATURE_MODES}")
    hidden: list[int] = option([32, 32, 32], "hidden layer widths (the paper's 32-32-32)")
    ensemble: int = option(5, "ensemble members (different init seeds) for the uncertainty estimate")
    seed: int = option(0, "seed of initialisation, task sampling and minibatches")
    meta_iterations: int = option(300, "Reptile outer iterations (one sampled source task each)")
    inner_steps: int = option(8, "Adam steps on the sampled task per Reptile iteration")
    inner_lr: float = option(1e-2, "Adam learning rate of inner steps and online adaptation")
    outer_lr: float = option(0.5, "Reptile step size towards the adapted weights, annealed linearly to 0")
    batch_size: int = option(32, "observations per gradient step")
    adapt_steps: int = option(20, "online adaptation: Adam steps on the target observations per new point")
    layer_head: bool = option(True, "add a per-layer linear term on each layer's rank for rank vectors of the "
                                    "surrogate's own layer count (lets ranks+structure learn per-layer effects)")
    bootstrap: bool = option(True, "fit each ensemble member on its own bootstrap weights of the observations")
    holdout_fraction: float = option(0.25, "share of each source group held out for the meta-validation loss")

    def validate(self) -> None:
        check(self.feature_mode in FEATURE_MODES,
              f"feature_mode={self.feature_mode!r} is not accepted; use one of {list(FEATURE_MODES)}")
        check(len(self.hidden) >= 1 and all(1 <= h <= 4096 for h in self.hidden),
              f"hidden={self.hidden!r} must be a non-empty list of widths in [1, 4096]")
        check(1 <= self.ensemble <= 64, f"ensemble={self.ensemble} must be in [1, 64]")
        check(self.meta_iterations >= 0, f"meta_iterations={self.meta_iterations} must be >= 0")
        check(self.inner_steps >= 1, f"inner_steps={self.inner_steps} must be >= 1")
        check(0 < self.inner_lr <= 1, f"inner_lr={self.inner_lr} must be in (0, 1]")
        check(0 < self.outer_lr <= 1, f"outer_lr={self.outer_lr} must be in (0, 1]")
        check(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        check(self.adapt_steps >= 0, f"adapt_steps={self.adapt_steps} must be >= 0")
        check(0 <= self.holdout_fraction < 1, f"holdout_fraction={self.holdout_fraction} must be in [0, 1)")


@dataclass
class SurrogateState:
    """Everything a prediction needs; saved as safetensors weights + surrogate.json."""

    config: SurrogateConfig
    params: dict[str, torch.Tensor]
    rank_range: list[int]  # [lowest, highest] candidate rank: ranks are scaled to (r - lo) / (hi - lo)
    num_layers: int | None  # input length in "ranks" mode; the layer head's length in "ranks+structure"
    num_features: int  # structural features per layer in "ranks+structure" mode
    source_tasks: list[str] = dataclasses.field(default_factory=list)
    task_stats: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # task -> [mean, std, n]
    fit_loss: float | None = None  # held-out meta-validation z-MSE on the source groups (1.0 = learned nothing)


def _shapes(config: SurrogateConfig, input_dim: int) -> list[tuple[str, int, int]]:
    """(name, in, out) of every linear layer, in order. Structure mode: encoder layers, pool, head."""
    hidden = config.hidden
    if config.feature_mode == "ranks":
        encoder, head = [], hidden
    else:
        split = max(1, len(hidden) - 1)
        encoder, head = hidden[:split], hidden[split:]
    shapes, width = [], input_dim
    for i, h in enumerate(encoder):
        shapes.append((f"enc.{i}", width, h))
        width = h
    for i, h in enumerate([*head, 1]):
        shapes.append((f"head.{i}", width, h))
        width = h
    return shapes


LAYER_HEAD = "layer_head.weight"


def _has_layer_head(config: SurrogateConfig, num_layers: int | None) -> bool:
    return config.feature_mode != "ranks" and config.layer_head and num_layers is not None


def _input_dim(config: SurrogateConfig, num_layers: int | None, num_features: int) -> int:
    return num_layers if config.feature_mode == "ranks" else 2 + num_features


def new_surrogate(config: SurrogateConfig, candidates: list[int], num_layers: int | None = None,
                  num_features: int = 0) -> SurrogateState:
    """A randomly initialised surrogate (the 'no meta-pretraining' starting point).

    num_layers is required in "ranks" mode (the input length) and sizes the per-layer head in
    "ranks+structure" mode (None: no layer head); num_features is the length of each row of
    Observation.layer_features in "ranks+structure" mode (0 = rank and depth only)."""
    config.validate()
    check(len(candidates) >= 1 and min(candidates) >= 0, f"candidates={candidates!r} must be non-negative ranks")
    lo, hi = min(candidates), max(candidates)
    if config.feature_mode == "ranks":
        check(num_layers is not None and num_layers >= 1,
              'feature_mode="ranks" needs num_layers (the rank vector length) >= 1')
    elif not config.layer_head:
        num_layers = None
    check(num_features >= 0, f"num_features={num_features} must be >= 0")
    params = {}
    for name, n_in, n_out in _shapes(config, _input_dim(config, num_layers, num_features)):
        bound = 1.0 / math.sqrt(n_in)  # nn.Linear's default initialisation, one generator per member
        weights, biases = [], []
        for member in range(config.ensemble):
            g = torch.Generator().manual_seed(config.seed * 1000 + member)
            weights.append((torch.rand(n_in, n_out, generator=g) * 2 - 1) * bound)
            biases.append((torch.rand(1, n_out, generator=g) * 2 - 1) * bound)
        params[f"{name}.weight"], params[f"{name}.bias"] = torch.stack(weights), torch.stack(biases)
    if _has_layer_head(config, num_layers):
        params[LAYER_HEAD] = torch.zeros(config.ensemble, num_layers, 1)  # starts as "no per-layer effect"
    return SurrogateState(config, params, [lo, hi if hi > lo else lo + 1], num_layers, num_features)


# ---------------------------------------------------------------------------------------------- inputs

def _tokens(state: SurrogateState, ranks: np.ndarray, features: Any) -> np.ndarray:
    """Network input for rank vectors [N, L] sharing one model's features [L, F]:
    [N, L] in "ranks" mode, [N, L, 2 + F] (scaled rank, depth, features) in "ranks+structure" mode."""
    n, num_layers = ranks.shape
    lo, hi = state.rank_range
    scaled = (ranks.astype(np.float32) - lo) / (hi - lo)
    if state.config.feature_mode == "ranks":
        check(num_layers == state.num_layers,
              f'this surrogate (feature_mode="ranks") takes rank vectors of {state.num_layers} layers, got '
              f'{num_layers}: use feature_mode="ranks+structure" to transfer across layer counts')
        return scaled
    if features is None:
        check(state.num_features == 0, f"this surrogate needs {state.num_features} structural features per layer "
                                       "(layer_features), none were given")
        feats = np.zeros((num_layers, 0), np.float32)
    else:
        feats = np.asarray(features, np.float32)
        check(feats.ndim == 2 and feats.shape[0] == num_layers and feats.shape[1] == state.num_features,
              f"layer_features must be {num_layers} rows of {state.num_features} values, got shape {feats.shape}")
        check(bool(np.isfinite(feats).all()), "layer_features contain NaN or infinite values")
    depth = np.linspace(0.0, 1.0, num_layers, dtype=np.float32) if num_layers > 1 else np.zeros(1, np.float32)
    per_layer = np.concatenate([depth[:, None], feats], axis=1)  # [L, 1 + F]
    return np.concatenate([scaled[:, :, None], np.broadcast_to(per_layer, (n, *per_layer.shape))], axis=2)


def _batch(state: SurrogateState, observations: list[Observation]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs for observations that may come from models with different layer counts (padded + mask)."""
    parts = [_tokens(state, np.asarray([o.rank_vector]), o.layer_features) for o in observations]
    if state.config.feature_mode == "ranks":
        return torch.from_numpy(np.concatenate(parts)), None
    longest = max(p.shape[1] for p in parts)
    x = np.zeros((len(parts), longest, parts[0].shape[2]), np.float32)
    mask = np.zeros((len(parts), longest), np.float32)
    for i, p in enumerate(parts):
        x[i, :p.shape[1]], mask[i, :p.shape[1]] = p[0], 1.0
    return torch.from_numpy(x), torch.from_numpy(mask)


# --------------------------------------------------------------------------------------------- network

def _linear(params: dict[str, torch.Tensor], h: torch.Tensor, name: str) -> torch.Tensor:
    return torch.matmul(h, params[f"{name}.weight"]) + params[f"{name}.bias"]


def _encoder(state: SurrogateState, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Per-layer tokens [N, L, d] -> per-layer embeddings of every member [members, N, L, H]."""
    n, num_layers, d = x.shape
    h = x.reshape(1, n * num_layers, d)
    for name, _, _ in _shapes(state.config, d):
        if name.startswith("enc."):
            h = torch.nn.functional.silu(_linear(params, h, name))
    return h.reshape(h.shape[0], n, num_layers, -1)


def _head(state: SurrogateState, params: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """[members or 1, N, in] -> predictions in z units [members, N]."""
    head = [name for name, _, _ in _shapes(state.config, 1) if name.startswith("head.")]
    for name in head[:-1]:
        h = torch.nn.functional.silu(_linear(params, h, name))
    return _linear(params, h, head[-1]).squeeze(-1)


def _forward(state: SurrogateState, params: dict[str, torch.Tensor], x: torch.Tensor,
             mask: torch.Tensor | None) -> torch.Tensor:
    """Predictions in z units of every ensemble member: [members, N]."""
    if state.config.feature_mode == "ranks":
        return _head(state, params, x.unsqueeze(0))  # broadcast over members
    h = _encoder(state, params, x)
    if mask is None:
        out = _head(state, params, h.mean(dim=2))
    else:
        out = _head(state, params, (h * mask[None, :, :, None]).sum(dim=2) / mask.sum(dim=1)[None, :, None])
    return out + _layer_term(state, params, x[:, :, 0], mask)


def _layer_term(state: SurrogateState, params: dict[str, torch.Tensor], scaled: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
    """The per-layer linear head [members, N] on scaled ranks [N, L']: applies to rows of exactly the
    surrogate's layer count, 0 for rows of other models."""
    if LAYER_HEAD not in params or scaled.shape[1] < state.num_layers:
        return torch.zeros(1, scaled.shape[0])
    length = mask.sum(dim=1) if mask is not None else torch.full((scaled.shape[0],), float(scaled.shape[1]))
    valid = (length == state.num_layers).to(scaled.dtype)
    ranks = (2.0 * scaled[:, :state.num_layers] - 1.0) * valid[:, None]  # centred: [-1, 1], well conditioned
    return torch.matmul(ranks.unsqueeze(0), params[LAYER_HEAD]).squeeze(-1)


def _forward_many(state: SurrogateState, ranks: np.ndarray, features: Any) -> torch.Tensor:
    """_forward for many rank vectors of one model, fast. A layer's embedding depends only on its rank
    (depth and features are fixed), so the encoder runs once per (layer, distinct rank) and each vector's
    pool is a sum of table rows: 10k x 40-layer proposals cost milliseconds instead of seconds."""
    if state.config.feature_mode == "ranks":
        return _forward(state, state.params, torch.from_numpy(_tokens(state, ranks, features)), None)
    n, num_layers = ranks.shape
    values, codes = np.unique(ranks, return_inverse=True)
    grid = np.repeat(values[:, None], num_layers, axis=1)  # [U, L]: every layer at each distinct rank
    table = _encoder(state, state.params, torch.from_numpy(_tokens(state, grid, features)))  # [K, U, L, H]
    table = table.transpose(1, 2).reshape(table.shape[0], num_layers * len(values), -1)  # row l * U + u
    rows = torch.from_numpy(codes.reshape(n, num_layers) + np.arange(num_layers) * len(values))
    pool = torch.zeros(n, num_layers * len(values)).scatter_(1, rows, 1.0 / num_layers)
    lo, hi = state.rank_range
    scaled = torch.from_numpy(((ranks - lo) / (hi - lo)).astype(np.float32))
    return _head(state, state.params, torch.matmul(pool, table)) + _layer_term(state, state.params, scaled, None)


def _fit(state: SurrogateState, params: dict[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor | None,
         y: torch.Tensor, steps: int, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], float]:
    """Adam steps on (x, y) from the given weights; returns new weights and the last minibatch MSE.

    Each member's loss is its own (bootstrap-weighted) mean squared error; summing them keeps members'
    gradients separate. Bootstrap weights are Exp(1) per member and observation, drawn once per fit."""
    config = state.config
    trained = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    if config.bootstrap and config.ensemble > 1:
        # Bayesian bootstrap (Rubin 1981): Exp(1) weights keep every observation in every member, which
        # matters when observations barely outnumber layers (a 0/1 resample would drop a third of them)
        weights = -torch.log(torch.rand(config.ensemble, len(y), generator=generator).clamp(min=1e-12))
    else:
        weights = torch.ones(config.ensemble, len(y))
    optimizer = torch.optim.Adam(trained.values(), lr=config.inner_lr, betas=(0.0, 0.999))  # Reptile's choice
    loss_value = float("nan")
    for _ in range(steps):
        if len(y) > config.batch_size:
            idx = torch.randperm(len(y), generator=generator)[:config.batch_size]
            xb, yb, mb, wb = x[idx], y[idx], (mask[idx] if mask is not None else None), weights[:, idx]
        else:
            xb, yb, mb, wb = x, y, mask, weights
        loss = ((wb * (_forward(state, trained, xb, mb) - yb) ** 2).sum(dim=1) / wb.sum(dim=1).clamp(min=1.0)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = loss.item() / config.ensemble
    return {k: v.detach() for k, v in trained.items()}, loss_value


# ------------------------------------------------------------------------------------- normalisation

GROUP_SEPARATOR = "::"


def group_key(observation: Observation) -> str:
    """The z-scoring group of an observation: its task, on its model and pruning (when known), at its fidelity
    (a short recovery's scores sit at another level than a full one's: each level is a task of its own)."""
    task = observation.task if observation.fidelity == FULL else f"{observation.task}@{observation.fidelity}"
    return f"{observation.group}{GROUP_SEPARATOR}{task}" if observation.group else task


def _task_of(key: str) -> str:
    return key.split(GROUP_SEPARATOR)[-1]


def _same_task_std(state: SurrogateState, task: str) -> float | None:
    """The task's spread measured on other models (other groups of the same task), in its own units."""
    stds = [s[1] for key, s in state.task_stats.items() if key != task and _task_of(key) == task and s[1] > 0]
    return float(np.mean(stds)) if stds else None


def _task_stats(state: SurrogateState, task: str, scores: np.ndarray) -> tuple[float, float]:
    """A target task's mean and spread from its own n scores. While n is small the spread is shrunk
    towards the same task's spread on other models (PRIOR_PSEUDO_COUNT pseudo-observations); other tasks'
    spreads are in other units (perplexity vs accuracy) and are never used."""
    mean = float(scores.mean())
    prior_std = _same_task_std(state, task)
    dof = len(scores) - 1
    sample_var = float(scores.var(ddof=1)) if dof > 0 else 0.0
    if prior_std is not None:
        std = math.sqrt((dof * sample_var + PRIOR_PSEUDO_COUNT * prior_std ** 2) / (dof + PRIOR_PSEUDO_COUNT))
    else:
        std = math.sqrt(sample_var)
    if not std > 1e-12:  # one score, or all equal, and no prior: any scale gives z = 0
        std = prior_std or 1.0
    return mean, std


def stats_for(state: SurrogateState, task: str | None) -> tuple[float, float]:
    """(mean, std) turning the network's z units into the task's score units ((0, 1) for a task never seen:
    its predictions are then z-scores, which order vectors correctly but carry no unit)."""
    if task is not None and task in state.task_stats:
        mean, std, _ = state.task_stats[task]
        return mean, std
    return 0.0, 1.0


# ---------------------------------------------------------------------------------------- training

def _group(observations: list[Observation]) -> dict[str, list[Observation]]:
    groups: dict[str, list[Observation]] = {}
    for o in observations:
        groups.setdefault(group_key(o), []).append(o)
    return groups


def meta_pretrain(state: SurrogateState, observations: list[Observation], progress: bool = True) -> SurrogateState:
    """Offline Reptile over the observations grouped by (model, pruning, task); returns the meta-learned
    surrogate (unchanged, with a warning, when no group is usable).

    Each group's scores are z-scored with its own mean and spread (kept in task_stats); groups with fewer
    than 3 observations or constant scores are skipped with a warning. A holdout_fraction of each group
    (groups of >= 4) is held out: fit_loss is the z-MSE on those rows after inner_steps of adaptation to
    the rest from the meta-learned weights (1.0 = no better than the group mean), the honest measure of
    whether meta-pretraining learned anything that transfers."""
    config = state.config
    data, val, stats, skipped = {}, {}, {}, []
    g = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    for key, obs in sorted(_group(observations).items()):
        scores = np.asarray([o.score for o in obs], np.float64)
        if len(obs) < 3 or not float(scores.std(ddof=1)) > 0:
            skipped.append(f"{key} ({len(obs)} observations{', constant' if len(obs) >= 3 else ''})")
            continue
        std = float(scores.std(ddof=1))
        stats[key] = [float(scores.mean()), std, float(len(obs))]
        z = (scores - scores.mean()) / std
        order = rng.permutation(len(obs))
        n_val = int(round(config.holdout_fraction * len(obs))) if len(obs) >= 4 else 0
        fit, held = order[n_val:], order[:n_val]
        x, mask = _batch(state, [obs[i] for i in fit])
        data[key] = (x, mask, torch.tensor(z[fit], dtype=torch.float32))
        if n_val:
            xv, mv = _batch(state, [obs[i] for i in held])
            val[key] = (xv, mv, torch.tensor(z[held], dtype=torch.float32))
    if skipped:
        warnings.warn(f"meta-pretraining skipped {len(skipped)} group(s) too thin or constant to learn from: "
                      f"{', '.join(skipped)}", stacklevel=2)
    if not data:
        warnings.warn("meta-pretraining found no usable source group: the surrogate starts untrained", stacklevel=2)
        return state
    keys = sorted(data)
    theta = {k: v.clone() for k, v in state.params.items()}
    for it in tqdm(range(config.meta_iterations), desc="meta-pretrain (Reptile)", disable=not progress):
        key = keys[int(torch.randint(len(keys), (1,), generator=g))]
        phi, _ = _fit(state, theta, *data[key], steps=config.inner_steps, generator=g)
        step = config.outer_lr * (1.0 - it / config.meta_iterations)
        theta = {k: theta[k] + step * (phi[k] - theta[k]) for k in theta}
    losses = []
    for key in sorted(val):
        adapted, _ = _fit(state, theta, *data[key], steps=config.inner_steps, generator=g)
        xv, mv, yv = val[key]
        with torch.no_grad():
            losses.append(float(((_forward(state, adapted, xv, mv).mean(dim=0) - yv) ** 2).mean()))
    return dataclasses.replace(state, params=theta, source_tasks=keys, task_stats={**state.task_stats, **stats},
                               fit_loss=float(np.mean(losses)) if losses else None)


def adapt(state: SurrogateState, observations: list[Observation], task: str,
          steps: int | None = None) -> SurrogateState:
    """Online incremental learning: re-estimate the task's normalisation from its observations and take
    `steps` (default config.adapt_steps) Adam steps from the current weights on all of them."""
    obs = [o for o in observations if o.task == task]
    check(len(obs) >= 1, f"no observations of task {task!r} to adapt to")
    scores = np.asarray([o.score for o in obs], np.float64)
    mean, std = _task_stats(state, task, scores)
    x, mask = _batch(state, obs)
    y = torch.tensor((scores - mean) / std, dtype=torch.float32)
    g = torch.Generator().manual_seed(state.config.seed * 7919 + len(obs))
    steps = state.config.adapt_steps if steps is None else steps
    params, _ = _fit(state, state.params, x, mask, y, steps=steps, generator=g)
    return dataclasses.replace(state, params=params,
                               task_stats={**state.task_stats, task: [mean, std, float(len(obs))]})


# --------------------------------------------------------------------------------------- prediction

def predict(state: SurrogateState, rank_vectors: Any, layer_features: Any = None,
            task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted score (ensemble mean) and ensemble spread, in the task's score units, for rank vectors
    [N, L] of one model (layer_features: its [L, F] structural features)."""
    ranks = np.asarray(rank_vectors)
    check(ranks.ndim == 2 and ranks.shape[0] > 0, f"rank_vectors must be a non-empty [N, layers] array, got {ranks.shape}")
    with torch.no_grad():
        z = _forward_many(state, ranks, layer_features).double()
    mean, std = stats_for(state, task)
    return mean + std * z.mean(dim=0).numpy(), std * z.std(dim=0, unbiased=False).numpy()


def predict_observations(state: SurrogateState, observations: list[Observation], task: str | None = None) -> np.ndarray:
    """Predicted scores of observed trials (each with its own layer features), in `task`'s units
    (default: each observation's own task)."""
    x, mask = _batch(state, observations)
    with torch.no_grad():
        z = _forward(state, state.params, x, mask).mean(dim=0).double().numpy()
    stats = np.asarray([stats_for(state, task or o.task) for o in observations])
    return stats[:, 0] + stats[:, 1] * z


def ranking_quality(state: SurrogateState, held_out: list[Observation], task: str | None = None) -> dict[str, float]:
    """How well the surrogate orders held-out trials: Kendall tau of predicted vs measured scores (what the
    search relies on), its p-value, and the mean absolute error in score units."""
    check(len(held_out) >= 2, f"ranking quality needs >= 2 held-out observations, got {len(held_out)}")
    predicted = predict_observations(state, held_out, task)
    measured = np.asarray([o.score for o in held_out])
    tau, p_value = kendalltau(predicted, measured)
    return {"kendall_tau": float(tau), "p_value": float(p_value), "mae": float(np.abs(predicted - measured).mean()),
            "n": float(len(held_out))}


# ------------------------------------------------------------------------------------------ storage

def write_surrogate_files(state: SurrogateState, directory: Path) -> None:
    """Weights (safetensors) and surrogate.json into a directory being written (see save_surrogate)."""
    save_file({k: v.contiguous() for k, v in state.params.items()}, str(directory / WEIGHTS_FILE))
    storage.write_json_atomic(directory / META_FILE, {
        "format": FORMAT_VERSION,
        "config": cfg.to_dict(state.config),
        "arch": {"layers": [list(s) for s in _shapes(state.config, _input_dim(state.config, state.num_layers,
                                                                               state.num_features))],
                 "pooling": "mean over layers" if state.config.feature_mode != "ranks" else None,
                 "layer_head": _has_layer_head(state.config, state.num_layers)},
        "input_scaling": {"rank_range": state.rank_range, "rank": "(r - lo) / (hi - lo)",
                          "depth": "layer index / (layers - 1)", "num_layers": state.num_layers,
                          "num_features": state.num_features},
        "normalisation": state.task_stats,
        "source_tasks": state.source_tasks,
        "fit_loss": state.fit_loss,  # held-out meta-validation z-MSE
    })


def read_surrogate_files(directory: Path, where: str) -> SurrogateState:
    meta_path = directory / META_FILE
    check(meta_path.is_file() and (directory / WEIGHTS_FILE).is_file(),
          f"{where!r} is not a surrogate artifact: expected {META_FILE} and {WEIGHTS_FILE}")
    meta = storage.read_json(meta_path)
    check(meta.get("format") == FORMAT_VERSION,
          f"surrogate {where!r} has format {meta.get('format')!r}; this version reads format {FORMAT_VERSION}")
    config = cfg.from_dict(SurrogateConfig, meta["config"])
    scaling = meta["input_scaling"]
    state = SurrogateState(config, load_file(str(directory / WEIGHTS_FILE)), list(scaling["rank_range"]),
                           scaling["num_layers"], int(scaling["num_features"]), list(meta["source_tasks"]),
                           {k: list(v) for k, v in meta["normalisation"].items()}, meta["fit_loss"])
    if _has_layer_head(config, state.num_layers):
        tensor = state.params.get(LAYER_HEAD)
        check(tensor is not None and tuple(tensor.shape) == (config.ensemble, state.num_layers, 1),
              f"surrogate {where!r}: weight {LAYER_HEAD} is missing or not of shape "
              f"{(config.ensemble, state.num_layers, 1)}")
    for name, n_in, n_out in _shapes(config, _input_dim(config, state.num_layers, state.num_features)):
        for suffix, shape in (("weight", (config.ensemble, n_in, n_out)), ("bias", (config.ensemble, 1, n_out))):
            tensor = state.params.get(f"{name}.{suffix}")
            check(tensor is not None and tuple(tensor.shape) == shape,
                  f"surrogate {where!r}: weight {name}.{suffix} is missing or not of shape {shape}")
    return state


def save_surrogate(state: SurrogateState, uri: str) -> None:
    """Write the surrogate artifact (local path or s3://): safetensors weights + surrogate.json, no pickle."""
    with storage.writing_dir(uri) as directory:
        write_surrogate_files(state, directory)


def load_surrogate(uri: str) -> SurrogateState:
    return read_surrogate_files(storage.local_dir(uri), uri)
