"""Evolutionary search of per-field embedding dims (OptEmbed-D, Lyu et al. 2022, Algorithm 2).

A candidate is one dim per field (``dims[f]`` in ``[min_dim, max_dims[f]]``). Each round
scores the population with ``evaluate`` (the trainer passes validation AUC of the supernet
served at those dims), keeps the ``top_k`` best candidates seen so far, and breeds the next
population from them: ``mutations`` children that copy a random parent and redraw each field
with probability ``mutation_prob``, and ``crossovers`` children that take each field from one
of two random parents. Scores are cached per candidate, so ``evaluate`` never runs twice on the
same dims.

Example (a separable objective with its optimum at ``[3, 5]``)::

    >>> result = evolutionary_search(lambda d: -abs(d[0] - 3) - abs(d[1] - 5), max_dims=[8, 8])
    >>> result.dims, result.score
    ([3, 5], 0.0)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EvolutionConfig:
    """The search's knobs; defaults are the paper's (population 20 = 10 mutations + 10 crossovers)."""

    rounds: int = 30
    mutations: int = 10
    crossovers: int = 10
    top_k: int = 15
    mutation_prob: float = 0.1
    min_dim: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.top_k < 1 or self.mutations + self.crossovers < 1:
            raise ValueError(
                f"evolution: rounds, top_k and mutations + crossovers must be >= 1, got rounds={self.rounds} "
                f"top_k={self.top_k} mutations={self.mutations} crossovers={self.crossovers}"
            )
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise ValueError(f"evolution: mutation_prob must lie in [0, 1], got {self.mutation_prob}")
        if self.min_dim < 1:
            raise ValueError(f"evolution: min_dim must be >= 1, got {self.min_dim}")

    @property
    def population(self) -> int:
        return self.mutations + self.crossovers


@dataclass
class SearchResult:
    """The best dims found, their score, the best score after each round and the number of
    distinct candidates evaluated."""

    dims: list[int]
    score: float
    history: list[float] = field(default_factory=list)
    evaluations: int = 0


def random_dims(max_dims: Sequence[int], min_dim: int, rng: random.Random) -> list[int]:
    """One candidate drawn uniformly per field."""
    return [rng.randint(min_dim, top) for top in max_dims]


def mutate(parent: Sequence[int], max_dims: Sequence[int], prob: float, min_dim: int, rng: random.Random) -> list[int]:
    """A new list: ``parent`` with each field redrawn uniformly with probability ``prob``."""
    return [rng.randint(min_dim, top) if rng.random() < prob else dim for dim, top in zip(parent, max_dims)]


def crossover(first: Sequence[int], second: Sequence[int], rng: random.Random) -> list[int]:
    """A new list taking each field from ``first`` or ``second`` with equal probability."""
    return [a if rng.random() < 0.5 else b for a, b in zip(first, second)]


def evolutionary_search(
    evaluate: Callable[[list[int]], float],
    max_dims: Sequence[int],
    config: EvolutionConfig | None = None,
) -> SearchResult:
    """Search per-field dims maximizing ``evaluate(dims)``.

    ``evaluate`` receives a fresh list (mutating it does not affect the search).
    """
    config = config or EvolutionConfig()
    max_dims = [int(d) for d in max_dims]
    bad = [(i, d) for i, d in enumerate(max_dims) if d < config.min_dim]
    if not max_dims or bad:
        raise ValueError(f"evolution: max_dims must be a non-empty list of dims >= min_dim={config.min_dim}, bad (field, dim): {bad}")
    rng = random.Random(config.seed)
    scores: dict[tuple[int, ...], float] = {}

    def score(dims: list[int]) -> float:
        key = tuple(dims)
        if key not in scores:
            scores[key] = float(evaluate(list(dims)))
        return scores[key]

    population = [random_dims(max_dims, config.min_dim, rng) for _ in range(config.population)]
    top: list[list[int]] = []
    history: list[float] = []
    for _ in range(config.rounds):
        pool = {tuple(d): d for d in top + population}  # distinct candidates
        top = sorted(pool.values(), key=score, reverse=True)[: config.top_k]
        history.append(score(top[0]))
        population = [
            mutate(rng.choice(top), max_dims, config.mutation_prob, config.min_dim, rng) for _ in range(config.mutations)
        ] + [crossover(rng.choice(top), rng.choice(top), rng) for _ in range(config.crossovers)]
    return SearchResult(dims=list(top[0]), score=score(top[0]), history=history, evaluations=len(scores))
