"""Same-budget baseline searchers: random edit walks, regularised evolution, Optuna TPE.

They search the *same* MDP (the env config's space, masks and start points), through the *same*
evaluator (checks, cache, ledger, budget in inner trainings) as the RL agents, so that
best-so-far curves against inner trainings compare like with like.

- ``random``: random valid edit sequences from the start loss(es): every step takes a uniformly
  random unmasked edit; an episode ends after ``max_steps`` edits. In the generative ``grammar``
  space: uniformly random valid token sequences, each a whole expression (the random baseline of
  Petersen et al., "Deep Symbolic Regression", ICLR 2021).
- ``evolution``: regularised (aging) evolution (Real et al., "Regularized Evolution for Image
  Classifier Architecture Search", AAAI 2019), the family of AutoLoss-Zero, EvoMAL and GLO:
  tournament selection of a parent, mutation by 1..``max_mutations`` random edits of the same
  catalog, the oldest member dies. In the ``grammar`` space it evolves expression trees: a child
  is a subtree mutation of one tournament winner or, with probability ``crossover`` %, a subtree
  crossover of two (as in genetic programming, Koza 1992), always valid under the grammar.

In the ``grammar`` space both start, like the RL agents' vectorized env, by evaluating the
preset's ``start`` losses (the same starting information for every method).
- ``optuna``: Optuna's TPE sampler (Bergstra et al., NeurIPS 2011) over the parametric space's
  grids (a categorical per weight and hyper-parameter), or over fixed-length edit sequences in
  the symbolic space; the study lives in the run folder (``optuna.db``) so a run resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from loss_rl.agents.callbacks import Progress, SearchState
from loss_rl.errors import ConfigError
from loss_rl.evaluation import EvalResult, Evaluator
from loss_rl.expr import Expr

logger = logging.getLogger(__name__)


@dataclass
class BaselineOptions:
    """Options shared by every baseline (from ``agents/<name>.yaml``).

    Attributes:
        n_envs: Candidates evaluated per batch (as for the RL agents).
    """

    n_envs: int = 8


@dataclass
class RandomOptions(BaselineOptions):
    """Options of the random-walk baseline (no others)."""


@dataclass
class EvolutionOptions(BaselineOptions):
    """Options of regularised evolution.

    Attributes:
        population: Members alive at once.
        tournament: Members sampled per parent selection.
        max_mutations: A child is its parent after 1..``max_mutations`` random edits.
        crossover: Percent of children made by subtree crossover of two parents instead of
            mutation (``grammar`` space only; 0..100).
    """

    population: int = 20
    tournament: int = 5
    max_mutations: int = 2
    crossover: int = 50


@dataclass
class OptunaOptions(BaselineOptions):
    """Options of the Optuna TPE baseline.

    Attributes:
        n_startup_trials: Random trials before TPE models the results.
    """

    n_startup_trials: int = 16


class Baseline:
    """Base class: a searcher that proposes batches of candidates until the budget is spent.

    Args:
        env_config: The MDP's configuration (space, masks, start points).
        evaluator: The run's evaluator.
        state: Budget accounting shared with the search.
        seed: Seed of the searcher's randomness.
        run_dir: The run folder (for searchers that keep their own state there).
        options: The preset's options.
    """

    name: ClassVar[str] = ""
    options_class: ClassVar[type[BaselineOptions]] = BaselineOptions

    def __init__(
        self,
        env_config: Any,
        evaluator: Evaluator,
        state: SearchState,
        *,
        seed: int = 0,
        run_dir: Path | None = None,
        options: BaselineOptions | None = None,
    ) -> None:
        from loss_rl.envs import LossDesignEnv

        self.env_config = env_config
        self.evaluator = evaluator
        self.state = state
        self.seed = seed
        self.run_dir = run_dir
        self.options = options or self.options_class()
        self.rng = np.random.default_rng(seed)
        # The env supplies the space (catalog, masks, transitions) and start points.
        self.env = LossDesignEnv(env_config, evaluator=evaluator)
        self.space = self.env.space
        self.batch = 0

    def evaluate(self, exprs: Sequence[Expr], step: int = 0) -> list[EvalResult]:
        """Evaluate one batch and feed the results to the run's best-so-far."""
        ctx = [{"episode": self.batch, "step": step, "env_index": i} for i in range(len(exprs))]
        self.batch += 1
        results = self.evaluator.evaluate(list(exprs), ctx)
        for r in results:
            self.state.observe(r.score, r.expression)
        return results

    def start_states(self) -> list[Any]:
        """The config's start points as space states (``random`` drawn now)."""
        out = []
        for entry in self.env_config.start_points:
            for s in self.space.starts(entry):
                out.append(self.space.random_state(self.rng) if isinstance(s, str) else s)
        return out

    def mutate(self, s: Any, n_edits: int = 1) -> Any:
        """``s`` after ``n_edits`` uniformly random valid edits."""
        for _ in range(n_edits):
            valid = np.flatnonzero(self.space.mask(s))
            if len(valid) == 0:
                break
            s = self.space.apply(s, int(self.rng.choice(valid)))
        return s

    @property
    def generative(self) -> bool:
        """Whether the space builds whole expressions (``grammar``) instead of editing one."""
        return self.env_config.space == "grammar"

    def evaluate_starts(self) -> tuple[list[Expr], list[EvalResult]]:
        """Evaluate the preset's start losses (what the RL agents' vectorized env does first)."""
        starts = self.env.start_candidates()
        return starts, (self.evaluate(starts) if starts else [])

    def run(self, progress: Callable[[Progress], None] | None = None) -> None:
        """Search until the budget is spent."""
        raise NotImplementedError


_STALL_BATCHES = 200
"""Batches in a row without a new training after which a generative baseline gives up: its space
is then (nearly) exhausted at this size, and the budget can never be spent."""


class _Stall:
    """Counts batches that trained nothing new."""

    def __init__(self) -> None:
        self.count = 0

    def update(self, results: Sequence[EvalResult]) -> bool:
        """Record a batch; ``True`` when the search should stop."""
        self.count = 0 if any(r.trained for r in results) else self.count + 1
        if self.count >= _STALL_BATCHES:
            logger.warning(
                "%d batches in a row found only known losses: the space is exhausted; stopping",
                _STALL_BATCHES,
            )
            return True
        return False


class RandomSearch(Baseline):
    """Random valid edit walks from the start loss(es), ``n_envs`` walks in parallel."""

    name = "random"
    options_class = RandomOptions

    def run(self, progress: Callable[[Progress], None] | None = None) -> None:
        """See :class:`Baseline`."""
        if self.generative:
            self._run_generative(progress)
            return
        starts = self.start_states()
        n = self.options.n_envs
        walkers = [starts[i % len(starts)] for i in range(n)]
        steps = [0] * n
        while not self.state.done:
            children = [self.mutate(w) for w in walkers]
            results = self.evaluate([self.space.expr(c) for c in children], step=max(steps) + 1)
            for i, (c, r) in enumerate(zip(children, results, strict=True)):
                steps[i] += 1
                if r.ok or self.env_config.on_reject == "move":
                    walkers[i] = c
                if steps[i] >= self.env_config.max_steps:
                    walkers[i] = starts[int(self.rng.integers(len(starts)))]
                    steps[i] = 0
            if progress is not None:
                progress(self.state.progress())

    def _run_generative(self, progress: Callable[[Progress], None] | None) -> None:
        self.evaluate_starts()
        stall = _Stall()
        while not self.state.done:
            batch = [self.space.sample(self.rng) for _ in range(self.options.n_envs)]
            if stall.update(self.evaluate(batch, step=1)):
                break
            if progress is not None:
                progress(self.state.progress())


class Evolution(Baseline):
    """Regularised (aging) evolution with tournament selection."""

    name = "evolution"
    options_class = EvolutionOptions

    def run(self, progress: Callable[[Progress], None] | None = None) -> None:
        """See :class:`Baseline`."""
        opts = self.options
        assert isinstance(opts, EvolutionOptions)
        if self.generative:
            self._run_generative(opts, progress)
            return
        population: deque[tuple[Any, float]] = deque()

        def add(states: list[Any], results: list[EvalResult]) -> None:
            for s, r in zip(states, results, strict=True):
                score = float(r.score) if r.ok and r.score is not None else -math.inf
                population.append((s, score))
                while len(population) > opts.population:
                    population.popleft()  # aging: the oldest dies, however good

        starts = self.start_states()
        add(starts, self.evaluate([self.space.expr(s) for s in starts]))
        while len(population) < opts.population and not self.state.done:
            seeds = [starts[int(self.rng.integers(len(starts)))] for _ in range(opts.n_envs)]
            kids = [
                self.mutate(s, int(self.rng.integers(1, opts.max_mutations + 1))) for s in seeds
            ]
            add(kids, self.evaluate([self.space.expr(k) for k in kids]))
        while not self.state.done:
            kids = []
            for _ in range(opts.n_envs):
                pick = self.rng.choice(
                    len(population), size=min(opts.tournament, len(population)), replace=False
                )
                parent = max((population[int(i)] for i in pick), key=lambda m: m[1])[0]
                kids.append(self.mutate(parent, int(self.rng.integers(1, opts.max_mutations + 1))))
            add(kids, self.evaluate([self.space.expr(k) for k in kids]))
            if progress is not None:
                progress(self.state.progress())

    def _run_generative(
        self, opts: EvolutionOptions, progress: Callable[[Progress], None] | None
    ) -> None:
        population: deque[tuple[Expr, float]] = deque()
        space = self.space

        def add(exprs: Sequence[Expr], results: Sequence[EvalResult]) -> None:
            for e, r in zip(exprs, results, strict=True):
                score = float(r.score) if r.ok and r.score is not None else -math.inf
                # A start loss the grammar cannot build (a constant outside its set) informs the
                # best-so-far but cannot parent a child.
                if space.tokens(e) is not None:
                    population.append((e, score))
                while len(population) > opts.population:
                    population.popleft()  # aging: the oldest dies, however good

        add(*self.evaluate_starts())
        while len(population) < opts.population and not self.state.done:
            batch = [space.sample(self.rng) for _ in range(opts.n_envs)]
            add(batch, self.evaluate(batch))

        def parent() -> Expr:
            k = min(opts.tournament, len(population))
            pick = self.rng.choice(len(population), size=k, replace=False)
            return max((population[int(i)] for i in pick), key=lambda m: m[1])[0]

        stall = _Stall()
        while not self.state.done:
            kids: list[Expr] = []
            for _ in range(opts.n_envs):
                child: Expr | None = None
                if self.rng.random() * 100 < opts.crossover:
                    child = space.crossover(parent(), parent(), self.rng)
                else:
                    child = parent()
                    for _ in range(int(self.rng.integers(1, opts.max_mutations + 1))):
                        child = space.mutate(child, self.rng) or child
                # No valid offspring (rare: a tiny tree): a fresh sample keeps the batch full.
                kids.append(child if child is not None else space.sample(self.rng))
            results = self.evaluate(kids)
            add(kids, results)
            if stall.update(results):
                break
            if progress is not None:
                progress(self.state.progress())


class OptunaSearch(Baseline):
    """Optuna TPE over the parametric grids or over fixed-length symbolic edit sequences."""

    name = "optuna"
    options_class = OptunaOptions

    def run(self, progress: Callable[[Progress], None] | None = None) -> None:
        """See :class:`Baseline`."""
        try:
            import optuna
        except ImportError as err:
            raise ConfigError(
                "the optuna baseline needs Optuna: pip install 'loss-rl[optuna]'", "agent.algo"
            ) from err
        opts = self.options
        assert isinstance(opts, OptunaOptions)
        if self.generative:
            # TPE models a fixed set of parameters; a token sequence's meaning depends on its
            # prefix, so each position's distribution would describe nothing stable.
            raise ConfigError(
                "the optuna baseline searches the parametric and symbolic spaces; in the grammar "
                "space use random or evolution",
                "agent.algo",
            )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = None
        if self.run_dir is not None:
            storage = f"sqlite:///{(self.run_dir / 'optuna.db').resolve()}"
        sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=opts.n_startup_trials)
        study = optuna.create_study(
            study_name="loss_rl",
            storage=storage,
            sampler=sampler,
            direction="maximize",
            load_if_exists=True,
        )
        # Trials left RUNNING by a killed session are closed so the sampler ignores them.
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        while not self.state.done:
            trials = [study.ask() for _ in range(opts.n_envs)]
            states = [self._suggest(t) for t in trials]
            ok = [i for i, s in enumerate(states) if s is not None]
            results = self.evaluate([self.space.expr(states[i]) for i in ok])
            scores: dict[int, float | None] = {i: None for i in range(len(trials))}
            for i, r in zip(ok, results, strict=True):
                scores[i] = float(r.score) if r.ok and r.score is not None else None
            for i, t in enumerate(trials):
                if scores[i] is None:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(t, scores[i])
            if progress is not None:
                progress(self.state.progress())

    def _suggest(self, trial: Any) -> Any:
        from loss_rl.envs import ParametricSpace, ParamState

        sp = self.space
        if isinstance(sp, ParametricSpace):
            w = tuple(
                trial.suggest_categorical(f"w_{t.name}", list(range(len(sp.weights))))
                for t in sp.terms
            )
            th = tuple(
                trial.suggest_categorical(f"{sp.terms[k].name}.{p}", list(range(len(grid))))
                for k, p, grid, _ in sp.slots
            )
            if not sp.valid_weights(w):
                return None
            mem = tuple(i if i != sp.zero else sp.one for i in w)
            return ParamState(w, mem, th)
        s = self.start_states()[0]
        for i in range(self.env_config.max_steps):
            a = trial.suggest_categorical(f"edit_{i}", list(range(sp.n_actions)))
            if sp.mask(s)[a]:
                s = sp.apply(s, a)  # a masked edit is skipped: the sequence stays valid
        return s


BASELINES: dict[str, type[Baseline]] = {c.name: c for c in (RandomSearch, Evolution, OptunaSearch)}


def baseline_options(name: str, data: dict[str, Any]) -> BaselineOptions:
    """Validate a baseline's preset options.

    Raises:
        ConfigError: naming the field for an unknown option or bad value.
    """
    cls = BASELINES[name].options_class
    fields = {f.name for f in dataclasses.fields(cls)} - {"n_envs"}
    for k, v in data.items():
        if k not in fields:
            raise ConfigError(
                f"{name} takes no option {k!r}; allowed: {', '.join(sorted(fields))}",
                field=f"agent.{k}",
            )
        low, high = (0, 100) if k == "crossover" else (1, None)
        if (
            not isinstance(v, int)
            or isinstance(v, bool)
            or v < low
            or (high is not None and v > high)
        ):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ConfigError(f"must be an integer {bound}, got {v!r}", field=f"agent.{k}")
    return cls(**data)  # n_envs is set by the search from AgentConfig
