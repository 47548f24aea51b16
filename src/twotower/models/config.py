"""Model configuration: one frozen, JSON-round-trippable config per trained model."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twotower.config import Config, check_choice, check_range
from twotower.errors import ConfigError

OBJECTIVES = ("mse", "softmax", "sampled_softmax", "bpr", "multinomial")
POOLINGS = ("sqrt", "mean", "sum")
QUERY_TOWERS = ("id", "history", "id+history")
OPTIMIZERS = ("adagrad", "adam", "sgd")
#: how (user, item) pairs are weighted (``ModelConfig.interaction_weights``)
INTERACTION_WEIGHTS = ("none", "rating", "event")
#: what a catalogue holds (``ModelConfig.catalogue``, ``read_interactions``' ``catalogue``)
CATALOGUES = ("items", "interactions")


def event_weight_table(name: str, ew: Any) -> dict[str, float]:
    """``ew`` checked as a table of event names to weights (numbers >= 0, one positive
    when any is given): a new ``dict`` of floats. ``name`` names the setting in errors
    (``model.event_weights``, ``stream.event_weights``).

    Raises:
        ConfigError: not a table, an empty name, a weight that is no number >= 0, or
            every weight 0.
    """
    form = ('a table of event names to weights >= 0, e.g. {view = 1, addtocart = 3, '
            'transaction = 10} ("*" for every other name)')
    if not isinstance(ew, Mapping):
        raise ConfigError(f"{name} must be {form}, got {ew!r}")
    out: dict[str, float] = {}
    for event, w in ew.items():
        if not isinstance(event, str) or not event.strip():
            raise ConfigError(f"{name}: an event name must be non-empty text, got "
                              f"{event!r} ({form})")
        if isinstance(w, bool) or not isinstance(w, int | float) \
                or not math.isfinite(w) or w < 0:
            raise ConfigError(f"{name}: the weight of {event!r} must be a number >= 0 (0: "
                              f"the event teaches nothing), got {w!r}")
        out[event] = float(w)
    if out and not any(w > 0 for w in out.values()):
        raise ConfigError(f"{name} gives every event weight 0, nothing to learn from; give "
                          f"some event a positive weight, got {out}")
    return out


def _as_written(value: Any) -> Any:
    """A held sequence (a tuple) as the list a file or caller wrote, for a message."""
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class ModelConfig(Config):
    """How a two-tower model is built and trained.

    Attributes:
        query_tower: ``id`` (a user id embedding, the tutorial), ``history`` (pooled
            embeddings of the user's items: works for users unseen in training), or
            ``id+history`` (their sum).
        objective: what training minimises:

            - ``mse``: squared error on ratings rescaled to [0, 1] (the tutorial; ``id`` only).
            - ``softmax``: per (user, item) pair, cross-entropy over the whole catalogue.
              Exact, no sampling bias; its cost grows with the catalogue (a ``[B, n_items]``
              matmul per step), see ``docs/quality.md`` for the measured crossover with
              ``sampled_softmax``.
            - ``sampled_softmax``: per pair, cross-entropy over the other positives of the
              batch, log-Q corrected (``keras_rs.layers.SamplingProbabilityCorrection``),
              accidental hits (the same item elsewhere in the batch) masked
              (``mask_accidental_hits``), optionally only the ``hard_negatives`` hardest.
            - ``bpr``: pairwise, one uniformly sampled negative per positive: the log
              sigmoid of the score difference divided by ``temperature``.
            - ``multinomial`` (history towers): one example per *user*; the query pools the
              user's history with ``history_dropout`` applied, and the loss is the
              multinomial log-likelihood of all the user's items over the full catalogue
              (a linear Mult-DAE whose encoder is the history tower and whose decoder is
              the item table). ``batch_size`` then counts users, and ``fit`` reports no
              validation loss.
        embedding_dim: size of both towers' output.
        epochs: passes over the training data.
        batch_size: examples per training step (users, for ``multinomial``).
        optimizer: ``adagrad`` (the tutorial's), ``adam`` or ``sgd``.
        learning_rate: the optimizer's step size (its start, with ``learning_rate_decay``).
        learning_rate_decay: ``none`` (constant) or ``cosine`` (to 0 over the whole run,
            ``keras.optimizers.schedules.CosineDecay``).
        ema_momentum: 0 (off) or the momentum of an exponential moving average of the
            weights kept by the optimizer (Keras ``use_ema``); the trained model is the
            average (Polyak averaging: smooths the step-to-step noise of small batches).
        l2: L2 regularisation. Per-pair objectives: penalty on the batch's query and
            candidate embeddings (per example). ``multinomial``: a Gaussian prior on the
            whole tables, ``l2 * ||W||^2`` per pass over the users (added as
            ``l2 * ||W||^2 / n_users`` per user), so its strength does not depend on batch
            size; on small data this is what stops overfitting.
        temperature: divides the logits of the softmax-type objectives and ``bpr``'s
            score difference (since 2026-12-06: before, ``bpr`` ignored it, and on the
            ``clicks`` preset's Adagrad 0.5 its tables hardly moved,
            ``benchmarks/probes/objective_audit.py``). The ``clicks``
            preset's 0.1 (with Adagrad 0.5) is what lets ``sampled_softmax`` learn a click
            log in 10 epochs; at 1 with the tutorial's Adagrad 0.1 its lists stay close to
            random (``benchmarks/probes/click_softmax.py``).
        history_length: most recent items kept per user for the history tower (and, in
            ``multinomial`` training, the items whose likelihood a user's loss sums).
        history_dropout: share of history items dropped per training step (denoising:
            the query must predict items it does not see; ``multinomial`` needs it).
        pooling: how history embeddings are combined: ``sqrt`` (sum / sqrt(count), the
            L2-normalised multi-hot of Mult-DAE), ``mean`` or ``sum``.
        history_activation: ``linear`` (the pooled history is the query's history part) or
            ``tanh`` of it (Mult-DAE's encoder nonlinearity; no extra weights).
        recency_half_life: 0 (off) or a half-life, in items, of the history weights: the
            item ``r`` places before the user's latest weighs ``0.5 ** (r / half_life)`` in
            the pooled history (``recency_floor`` sets a minimum weight). The same weights
            are applied in training, evaluation, serving and history-only queries
            (histories are ordered by timestamp when the data has one, else by row order).
        recency_floor: lowest weight of an old item when ``recency_half_life`` > 0, in
            [0, 1]: weight = floor + (1 - floor) * 0.5 ** (r / half_life).
        item_features: item metadata columns (``Interactions.item_info``; MovieLens:
            ``genres``, ``year``) whose learned embeddings are added to the item's id
            embedding (and bias): items with no training interactions get a candidate
            embedding from their features (see ``twotower.models.features``). Empty = off.
        user_features: user metadata columns (``user_info``; MovieLens: ``age``,
            ``gender``, ``occupation``) whose embeddings are added to the query of users
            seen in training (not to history-only queries). Empty = off.
        multi_valued_features: those of ``item_features``/``user_features`` whose text
            values list several values separated by ``multi_value_sep``: a ``tags`` cell
            ``x|y`` gives the features ``tags=x`` and ``tags=y`` (not one ``tags=x|y``).
            A list column (Parquet) needs no entry; ``genres`` text is split on ``|``
            unless listed here.
        multi_value_sep: the separator of ``multi_valued_features``' values (default
            ``|``).
        catalogue: which items ``twotower train --items FILE`` puts in the catalogue:
            ``items`` (the default), every item of the log and every item the items file
            lists, also those with no interaction yet (a product added yesterday), which
            the model places by their ``item_features`` alone; ``interactions``, the log's
            items only (the items file's other rows are left out, as before 2026-12-06).
            A listed item without a feature value that some item with training
            interactions has is in no list (``TwoTower.untrained_items``); `train` says how
            many items are cold and how many are left out so. Read where the data is read
            (``read_interactions(..., catalogue=)``): ``fit`` trains on the catalogue its
            ``Interactions`` hold. Not read without ``item_features`` (nothing would place
            such items) nor by a streamed run (no side features).
        item_bias: a learned per-item bias (popularity) added to the logits (``multinomial``
            only: the other losses have no bias term); served by appending it to the item
            vectors and a constant 1 to the queries, so search stays one inner product.
        multinomial_targets: ``all`` of the user's items (Mult-DAE) or only those
            ``dropped`` from the query.
        user_weighting: ``multinomial`` per-user loss as a ``sum`` over the user's items,
            or divided by ``sqrt`` of / the ``mean`` over their count.
        interaction_weights: ``none`` (the default): every (user, item) pair counts once,
            however many rows or whatever rating it has; ``rating``: each pair is weighted
            by the sum of its rows' ratings (``Interactions.ratings``; in the CLI the
            ``--rating-col`` column, e.g. a weight column: a purchase 10, a view 1),
            scaled so that the mean positive pair weight is 1 (only ratios matter). The
            weights scale the pair's term in the ``multinomial`` loss and its entry in
            the EASE part's user-item matrix (fitted on the Gram ``Xᵀ X`` of the weighted
            matrix); a pair of weight 0 teaches neither, yet is still in the user's
            history (the query reads every item the user had, unweighted) and still seen
            (excluded from lists and evaluation, which stay binary). Ratings must be
            >= 0. The per-pair objectives (``softmax``, ``sampled_softmax``, ``bpr``;
            since 2026-12-07) weigh each *row*'s term of the batch loss by the row's
            rating, scaled so that the mean positive row weight is 1: a pair's rows
            together weigh the sum of their ratings, as above (a row of weight 0 teaches
            nothing as a positive, yet is still an in-batch negative of
            ``sampled_softmax``; ``l2`` stays unweighted). In memory and streamed alike
            (``TwoTower.fit_stream``: ``StreamConfig.rating_col``). Not ``mse``, whose
            target the rating is.
            ``event``: as ``rating``, each pair's weight the sum of its rows' weights,
            where a row's weight is that of its event name in ``event_weights`` (in the
            CLI the ``--event-col`` column: ``view``, ``addtocart``, ``transaction``);
            the names are mapped to numbers once, where the file is read
            (``read_interactions(event_col=, event_weights=)`` puts them in
            ``Interactions.ratings``; streamed, ``StreamConfig(event_col=,
            event_weights=)`` in each batch's ratings), and the rest is the ``rating``
            path.
        event_weights: the weight of each event name, for ``interaction_weights =
            "event"`` (empty otherwise), e.g. ``{view = 1, addtocart = 3, transaction =
            10}`` in ``--config``'s ``[model]``, ``--event-weights
            view=1,addtocart=3,transaction=10`` in the CLI. Numbers >= 0, one positive at
            least; a name the mapping lacks is an error naming the file's line, unless
            the key ``"*"`` gives every other name a weight (``"*" = 0``: other events
            teach nothing, but are still in the history and still seen). Saved with the
            run, so a reloaded model says how it was weighted.
        ease_weight: 0 (off) or the share, in [0, 0.99], of a closed-form part in the score
            (``twotower.models.linear``): EASE (Steck, 2019) at rank ``ease_rank``, its
            query the user's recency-weighted history, appended to both towers so one inner
            product serves ``(1 - w) * trained + w * EASE`` (each part scaled to unit
            standard deviation). Needs a history tower; above ``ease_max_items`` items
            (EASE inverts an ``[n_items, n_items]`` matrix) the part is skipped, with a
            warning, or a low-rank closed form from a sparse SVD takes its place
            (``ease_large``). A
            weight chosen from ``ease_weight_grid`` replaces it (the default preset's
            check: ``ease_weight_choice``); ``ease_weight_grid = []`` keeps it fixed.
        ease_lambdas, ease_half_lives, ease_floors: EASE's L2 strengths and the recency
            weights of its query (half-lives in items, from 1, which weighs mostly the
            latest item, to 10; floors; floor 1.0 = unweighted),
            chosen on a validation split carved from the training data by best recall@10 +
            ndcg@10 (``ease_search``; reported in ``TwoTower.ease_tuning``).
        ease_search: how those are searched: ``coordinate`` (the default) scores lambda
            with the unweighted query, then the recency weights at that lambda (19
            validation scorings by default); ``joint`` scores every lambda with every
            recency weighting (91; no more EASE fits: one per lambda). Joint finds settings that
            score higher on the validation split, not always on the test split: on
            MovieLens 100k's temporal split it picks lambda 1,000 where coordinate picks
            200, and the model's recall@10 falls 2.2% over six seeds (recall@100 rises
            1.6%); on a session log's temporal split recall@10 rises 2.6% and recall@100
            falls 7% (``benchmarks/probes/ease_search.sh``, docs/quality.md).
        ease_split: how that validation split is carved: ``random`` or ``temporal`` (each
            user's latest 20%); ``auto`` is ``random``, except that ``twotower train
            --split temporal`` (and ``global-temporal``) uses ``temporal``. Match the way the model will be judged
            (``benchmarks/probes/ease_split.py``, MovieLens 100k): tuned on a temporal split,
            the EASE part's query weighs the latest few items, +27% Recall@10 on a temporal
            test split but -25% on a random one; tuned on a random split, it uses the whole
            history, at EASE's level on a temporal test split. For a model deployed to
            predict what users do next, ``temporal`` is usually right.
        ease_weight_grid: empty (``ease_weight`` is used as given), or candidate weights
            in (0, 1): the weight is then chosen among them (when ``ease_weight_choice``
            says) on the same validation split that chooses lambda, by best recall@10 +
            ndcg@10 of the blend. This fits the trained part a second time, on that split's
            training part (the fit on all of the training data cannot be scored on part of
            it), so training takes longer (1.7x on MovieLens 100k,
            ``benchmarks/probes/weight_grid.py``). The choice goes in
            ``TwoTower.ease_tuning``. ``ease_weight`` 0 still turns the part off.
        ease_weight_choice: when the weight is chosen from ``ease_weight_grid``:
            ``always`` (the default); ``rank_check``: only when the
            EASE part cut to rank ``embedding_dim`` keeps less than 90% of its full-rank
            validation recall@10 + ndcg@10 (``linear.WEIGHT_CHECK_KEEP``), i.e. when the
            data's item-item structure is far from what a trained part of that size can
            hold (sequence logs: 73-79%; MovieLens 100k: 97-104%, so it keeps
            ``ease_weight`` and its training time); ``auto`` (the default preset): as
            ``rank_check``, and always when ``ease_split`` is ``temporal`` (a model judged
            on what each user does next, where the recency-weighted EASE part can follow
            the latest items better than the trained part: the news-shaped log's temporal
            split chose 0.99, +14% recall@10 over the fixed 0.4; MovieLens' 0.3-0.5, within
            0.5% of it; docs/quality.md). Recorded in
            ``TwoTower.ease_tuning`` ("weight_check").
        query_recency_choice: ``fixed`` (the default): the trained part's query pools the
            history with ``recency_half_life`` and ``recency_floor``, as it was trained;
            ``temporal`` (the default preset): where the blend weight is chosen on a
            temporal split (``ease_weight_choice = "auto"`` with ``ease_split`` temporal),
            the query's recency weights are chosen there too, from the EASE part's grid
            (``ease_half_lives`` x ``ease_floors``), then the weight again at them. Only
            the served query changes (the tables are trained as configured); the choice
            is saved with the model and recorded in ``TwoTower.ease_tuning``
            ("query_recency", "query_recency_tried").
        ease_rank: rank of the EASE part; 0 (the default) chooses it on the EASE tuning
            split: the smallest of ``embedding_dim`` times 1, 2, 4 and 8 (at most 1,024)
            whose cut keeps 99% of the full-rank part's validation recall@10 + ndcg@10
            (``TwoTower.ease_tuning``: "rank", "ranks_tried"). Each rank is a dimension of
            the served vectors: MovieLens 100k keeps ``embedding_dim``; logs of item
            sequences, far from low rank, need more.
        ease_max_items: largest catalogue the EASE part is fitted for (at 20,000 items it
            holds a few 1.6 GB matrices and adds minutes to training); above it,
            ``ease_large``.
        ease_large: the closed-form part above ``ease_max_items``: ``skip`` (the default)
            leaves it out, with a warning (the trained part alone); ``svd`` fits the
            low-rank ridge ``V diag(s² / (s² + lambda)) Vᵀ`` of a randomized SVD of the
            sparse user-item matrix instead of EASE (memory ``O(n_items x rank)``; tuned,
            ranked and blended as the EASE part is; ``TwoTower.ease_tuning["form"]``). Not
            the default: on held-out test parts of two generated logs it lifts
            Recall@10 in all six runs (+4% to +20%) but NDCG@10 in four (not on a temporal
            split), and its fit time at a million items is not measured (docs/quality.md).
        hard_negatives: >0 keeps only that many hardest in-batch negatives
            (``keras_rs.layers.HardNegativeMining``; sampled_softmax only).
        validation_freq: validate every this many epochs when validation data is given.
        seed: seeds weights, shuffling and dropout; same seed, same model.

    Example:
        >>> ModelConfig.preset("tutorial").objective
        'mse'
    """

    query_tower: str = "id"
    objective: str = "mse"
    embedding_dim: int = 32
    epochs: int = 50
    batch_size: int = 1000
    optimizer: str = "adagrad"
    learning_rate: float = 0.1
    learning_rate_decay: str = "none"
    ema_momentum: float = 0.0
    l2: float = 0.0
    temperature: float = 1.0
    history_length: int = 200
    history_dropout: float = 0.0
    pooling: str = "sqrt"
    history_activation: str = "linear"
    recency_half_life: float = 0.0
    recency_floor: float = 0.0
    item_bias: bool = False
    item_features: tuple[str, ...] = ()
    user_features: tuple[str, ...] = ()
    multi_valued_features: tuple[str, ...] = ()
    multi_value_sep: str = "|"
    catalogue: str = "items"
    multinomial_targets: str = "all"
    user_weighting: str = "sum"
    interaction_weights: str = "none"
    event_weights: dict[str, float] = field(default_factory=dict)
    hard_negatives: int = 0
    ease_weight: float = 0.0
    ease_lambdas: tuple[float, ...] = (20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
    ease_half_lives: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    ease_floors: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0)
    ease_split: str = "auto"
    ease_search: str = "coordinate"
    ease_weight_grid: tuple[float, ...] = ()
    ease_weight_choice: str = "always"
    query_recency_choice: str = "fixed"
    ease_rank: int = 0
    ease_max_items: int = 20_000
    ease_large: str = "skip"
    validation_freq: int = 5
    seed: int = 42

    def validate(self) -> None:
        own = "model"
        check_choice(own, "query_tower", self.query_tower, QUERY_TOWERS)
        check_choice(own, "objective", self.objective, OBJECTIVES)
        check_choice(own, "optimizer", self.optimizer, OPTIMIZERS)
        check_choice(own, "learning_rate_decay", self.learning_rate_decay, ("none", "cosine"))
        check_choice(own, "pooling", self.pooling, POOLINGS)
        check_choice(own, "history_activation", self.history_activation, ("linear", "tanh"))
        check_choice(own, "user_weighting", self.user_weighting, ("sum", "sqrt", "mean"))
        check_choice(own, "interaction_weights", self.interaction_weights,
                     INTERACTION_WEIGHTS)
        self._check_event_weights()
        check_choice(own, "multinomial_targets", self.multinomial_targets, ("all", "dropped"))
        check_choice(own, "catalogue", self.catalogue, CATALOGUES)
        if not isinstance(self.item_bias, bool):
            raise ConfigError(f"model.item_bias must be true or false, got {self.item_bias!r}")
        for name in ("item_features", "user_features", "multi_valued_features"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(c, str) and c
                                                       for c in value):
                raise ConfigError(f"model.{name} must be a list of column names, "
                                  f"got {_as_written(value)!r}")
        if not isinstance(self.multi_value_sep, str) or not self.multi_value_sep:
            raise ConfigError(f"model.multi_value_sep must be a non-empty string (the text "
                              f"between two values of a cell, e.g. \"|\" or \";\"), got "
                              f"{self.multi_value_sep!r}")
        check_range(own, "embedding_dim", self.embedding_dim, 1, 4096, integer=True)
        check_range(own, "epochs", self.epochs, 1, 100_000, integer=True)
        check_range(own, "batch_size", self.batch_size, 1, 10_000_000, integer=True)
        check_range(own, "learning_rate", self.learning_rate, 1e-8, 100.0)
        check_range(own, "ema_momentum", self.ema_momentum, 0.0, 0.9999)
        check_range(own, "l2", self.l2, 0.0, 1e6)
        check_range(own, "temperature", self.temperature, 1e-4, 100.0)
        check_range(own, "history_length", self.history_length, 1, 100_000, integer=True)
        check_range(own, "history_dropout", self.history_dropout, 0.0, 0.95)
        check_range(own, "recency_half_life", self.recency_half_life, 0.0, 1e6)
        check_range(own, "recency_floor", self.recency_floor, 0.0, 1.0)
        check_range(own, "hard_negatives", self.hard_negatives, 0, 100_000, integer=True)
        check_range(own, "ease_weight", self.ease_weight, 0.0, 0.99)
        check_choice(own, "ease_split", self.ease_split, ("auto", "random", "temporal"))
        check_choice(own, "ease_search", self.ease_search, ("joint", "coordinate"))
        check_range(own, "ease_rank", self.ease_rank, 0, 4096, integer=True)
        check_range(own, "ease_max_items", self.ease_max_items, 1, 1_000_000, integer=True)
        check_choice(own, "ease_large", self.ease_large, ("svd", "skip"))
        for name, lo, hi in (("ease_lambdas", 1e-6, 1e9), ("ease_half_lives", 0.0, 1e6),
                             ("ease_floors", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi
                    for v in value):
                raise ConfigError(f"model.{name} must be a non-empty list of numbers in "
                                  f"[{lo:g}, {hi:g}], got {_as_written(value)!r}")
        grid = self.ease_weight_grid
        if not isinstance(grid, tuple) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and 0.0 < v < 1.0
                for v in grid):
            raise ConfigError(f"model.ease_weight_grid must be a list of numbers in (0, 1) "
                              f"(or empty), got {_as_written(grid)!r}")
        check_choice(own, "ease_weight_choice", self.ease_weight_choice,
                     ("always", "rank_check", "auto"))
        check_choice(own, "query_recency_choice", self.query_recency_choice,
                     ("fixed", "temporal"))
        if self.ease_weight > 0 and self.query_tower == "id":
            raise ConfigError("model.ease_weight > 0 needs a history tower (query_tower "
                              "'history' or 'id+history'): the EASE part's query is the "
                              "user's history")
        check_range(own, "validation_freq", self.validation_freq, 1, 100_000, integer=True)
        check_range(own, "seed", self.seed, 0, 2**31 - 1, integer=True)
        if self.query_tower != "id" and self.objective == "mse":
            raise ConfigError("model.objective 'mse' is only supported with query_tower 'id'")
        if self.objective == "multinomial" and self.query_tower == "id":
            raise ConfigError("model.objective 'multinomial' needs a history tower: "
                              "query_tower 'history' or 'id+history', got 'id'")

    def _check_event_weights(self) -> None:
        """``event_weights``: names -> numbers >= 0 (one positive), exactly when
        ``interaction_weights`` is ``event``; stored as a new ``dict`` of floats."""
        out = event_weight_table("model.event_weights", self.event_weights)
        object.__setattr__(self, "event_weights", out)  # a copy: the config stays frozen
        if self.interaction_weights == "event" and not out:
            raise ConfigError("model.interaction_weights 'event' weighs each pair by its "
                              "event names' weights, and model.event_weights is empty; give "
                              "them (e.g. {view = 1, transaction = 10}; --event-weights "
                              "view=1,transaction=10 in the CLI)")
        if out and self.interaction_weights != "event":
            why = ("weighs pairs by the rating column's numbers: one source of weights at a "
                   "time; drop one of the two" if self.interaction_weights == "rating"
                   else "counts every pair once; set it to 'event' to use the mapping, or "
                   "leave event_weights empty")
            raise ConfigError(f"model.event_weights is only read with interaction_weights "
                              f"'event' (the event column's names mapped to weights), and "
                              f"model.interaction_weights {self.interaction_weights!r} {why}")

    def check_used(self) -> None:
        """Refuse settings the chosen objective never reads (training would silently
        ignore them). Checked when training starts, not in ``validate``: a run saved
        before this check, with such a setting, still loads.

        Raises:
            ConfigError: ``item_bias`` without ``multinomial``, ``interaction_weights``
                with ``mse``, ``hard_negatives`` without ``sampled_softmax``, or a
                column named twice in ``item_features``/``user_features`` (its feature
                would count twice).
        """
        for name in ("item_features", "user_features"):
            value = getattr(self, name)
            twice = sorted({c for c in value if value.count(c) > 1})
            if twice:
                raise ConfigError(f"model.{name} names {twice} more than once (each column "
                                  f"is one feature); list each column once, got "
                                  f"{list(value)}")
        named = set(self.item_features) | set(self.user_features)
        stray = [c for c in self.multi_valued_features if c not in named]
        if stray:
            raise ConfigError(f"model.multi_valued_features names {stray}, which neither "
                              f"item_features {list(self.item_features)} nor user_features "
                              f"{list(self.user_features)} lists; add the column there too "
                              "(a column only splits when it is a feature)")
        if self.item_bias and self.objective != "multinomial":
            raise ConfigError(f"model.item_bias is only trained by objective 'multinomial' "
                              f"(the other losses have no bias term), got objective "
                              f"{self.objective!r}; set item_bias to false")
        if self.interaction_weights != "none" and self.objective == "mse":
            raise ConfigError(f"model.interaction_weights {self.interaction_weights!r} is not "
                              f"read by objective 'mse', which fits each row's rating as its "
                              f"target; weigh rows with multinomial, sampled_softmax, softmax "
                              f"or bpr (e.g. --preset clicks), or set interaction_weights to "
                              f"'none'" + (" and event_weights to {}" if self.event_weights
                                           else ""))
        if self.hard_negatives and self.objective != "sampled_softmax":
            raise ConfigError(f"model.hard_negatives is only used by objective "
                              f"'sampled_softmax' (it mines the in-batch negatives), got "
                              f"objective {self.objective!r}; set hard_negatives to 0")

    def unread(self) -> dict[str, str]:
        """The settings this configuration's model never reads, each with the reason
        (``temperature`` with ``mse``, history settings with the id tower, EASE settings
        with ``ease_weight`` 0, ...). Training ignores their values, so ``twotower train``
        warns when one of them was given (a preset's own values are not)."""
        out: dict[str, str] = {}
        if self.objective == "mse":
            out["temperature"] = f"objective {self.objective!r}"
        if self.objective != "multinomial":
            out.update(dict.fromkeys(("multinomial_targets", "user_weighting"),
                                     f"objective {self.objective!r}"))
        if self.query_tower == "id":
            out.update(dict.fromkeys((
                "history_length", "history_dropout", "pooling", "history_activation",
                "recency_half_life", "recency_floor"), "query_tower 'id'"))
        elif self.recency_half_life == 0:
            out["recency_floor"] = "recency_half_life 0"
        if self.ease_weight == 0:
            out.update(dict.fromkeys((
                "ease_lambdas", "ease_half_lives", "ease_floors", "ease_split",
                "ease_search", "ease_weight_grid", "ease_weight_choice", "ease_rank",
                "ease_max_items", "ease_large", "query_recency_choice"),
                "ease_weight 0"))
        elif not self.ease_weight_grid:
            out["ease_weight_choice"] = "ease_weight_grid empty"
            out["query_recency_choice"] = "ease_weight_grid empty"
        if not self.multi_valued_features:
            out["multi_value_sep"] = "multi_valued_features empty"
        if not self.item_features:
            out["catalogue"] = "item_features empty"
        return out

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named configuration: ``tutorial``, ``clicks`` or ``default``, with
        ``overrides``. An override the chosen model never reads (``unread``: e.g.
        ``temperature`` with ``mse``) gets a warning naming it, unless it holds the class
        default (as a run's saved settings, fed back whole, hold for most of them)."""
        if name not in PRESETS:
            raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        cfg = cls.from_dict({**PRESETS[name], **overrides})
        unread = cfg.unread()
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        given = [f"{n} ({unread[n]})" for n in overrides
                 if n in unread and getattr(cfg, n) != defaults[n]]
        if given:  # kept in the saved config and changing nothing: say so
            warnings.warn("settings the chosen model never reads, so training ignores them: "
                          + ", ".join(given), stacklevel=2)
        return cfg


PRESETS: dict[str, dict[str, Any]] = {
    # The Keras-RS "Recommending movies: retrieval" tutorial, as published.
    "tutorial": dict(query_tower="id", objective="mse", embedding_dim=32, epochs=50,
                     batch_size=1000, optimizer="adagrad", learning_rate=0.1,
                     validation_freq=5),
    # Click logs without ratings, in memory or streamed (`twotower train --stream`): the
    # tutorial's id tower and Adagrad (row-wise updates, docs/scaling.md) with in-batch
    # sampled softmax. The tutorial's learning rate 0.1 at temperature 1 barely moves the
    # tables from their initial +-0.05 (a batch-mean loss: each row's gradient is tiny
    # against Adagrad's initial accumulator of 0.1): after 5 epochs the lists were close
    # to random, Recall@10 0.008 against MostPop's 0.121. Learning rate and temperature
    # chosen on validation splits of two generated click logs and MovieLens 100k
    # (benchmarks/probes/click_softmax.py, docs/quality.md).
    "clicks": dict(query_tower="id", objective="sampled_softmax", embedding_dim=32,
                   epochs=10, batch_size=1000, optimizer="adagrad", learning_rate=0.5,
                   temperature=0.1, validation_freq=5),
    # The product default: chosen by benchmarks/tune.py on validation splits carved from
    # train (random + temporal; see docs/quality.md): a linear Mult-DAE-style two-tower with
    # recency-weighted history pooling and genre/year item features (`twotower train` cuts
    # them to the columns the data has, in one line; the library warns).
    "default": dict(query_tower="id+history", objective="multinomial", embedding_dim=128,
                    epochs=15, batch_size=64, optimizer="adam", learning_rate=0.005, l2=5.0,
                    temperature=1.0, history_length=1000, history_dropout=0.5,
                    recency_half_life=10.0, recency_floor=0.2, item_bias=True,
                    item_features=("genres", "year"), ease_weight=0.4,
                    ease_weight_grid=(0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 0.95, 0.99),
                    ease_weight_choice="auto", query_recency_choice="temporal"),
}


#: the settings that decide whether an objective trains at all from a preset chosen for
#: another (``check_preset_objective``): with none of them given, it is refused
TUTORIAL_STEP_SETTINGS = ("learning_rate", "temperature", "optimizer")


def check_preset_objective(name: str, overrides: dict[str, Any]) -> None:
    """Refuse a preset with an objective its step settings do not train, when neither its
    learning rate, temperature nor optimizer is changed (``twotower train --preset P`` with
    ``objective = X`` in ``--config``; ``benchmarks/probes/objective_audit.py``):

    - ``tutorial`` with any objective but ``mse``: its Adagrad 0.1 at temperature 1 was
      chosen for ``mse``'s squared errors on ratings; with the ranking objectives'
      batch-mean losses each row's step is tiny against Adagrad's initial accumulator, the
      tables hardly move and the lists are close to random;
    - ``clicks`` with ``multinomial``: its Adagrad 0.5 at temperature 0.1, chosen for the
      per-pair losses, diverges on the per-user sum (MovieLens: loss 483 -> 5,011) or
      scores half of MostPop's recall@10 (the popularity-heavy generated log).

    ``ModelConfig.preset`` itself builds any combination (a library user may want exactly
    that).

    Raises:
        ConfigError: naming the objective and the presets or settings to use instead.
    """
    objective = overrides.get("objective", PRESETS.get(name, {}).get("objective"))
    if any(k in overrides for k in TUTORIAL_STEP_SETTINGS) or not (
            (name == "tutorial" and objective != "mse")
            or (name == "clicks" and objective == "multinomial")):
        return
    tower = overrides.get("query_tower", "id")
    instead = ("--preset clicks (the same id tower with Adagrad 0.5 and temperature 0.1, "
               "10 epochs)" if tower == "id" and objective != "multinomial" else
               "--preset default (a history tower with Adam)")
    if name == "tutorial":
        why = ("keeps the tutorial's Adagrad 0.1 at temperature 1, chosen for 'mse' on "
               f"ratings: with {objective!r} its tables barely move and its lists are close "
               "to random")
    else:
        why = ("keeps its Adagrad 0.5 at temperature 0.1, chosen for the per-pair "
               "objectives: on the per-user 'multinomial' loss it diverges or learns less "
               "than popularity")
    raise ConfigError(f"model.objective {objective!r} on the {name} preset {why}, below the "
                      f"most-popular list (README, Quality); use {instead}, or set "
                      "learning_rate and temperature yourself")


def make_optimizer(config: ModelConfig, steps_per_epoch: int | None = None) -> Any:
    """The Keras optimizer a ``ModelConfig`` trains with (``TwoTower.fit`` and ``TrainLoop``).

    ``steps_per_epoch`` is needed for ``learning_rate_decay = "cosine"`` (the schedule spans
    ``epochs * steps_per_epoch`` steps).
    """
    import keras

    lr: Any = config.learning_rate
    if config.learning_rate_decay == "cosine":
        if not steps_per_epoch:
            raise ConfigError("model.learning_rate_decay 'cosine' needs the number of steps "
                              "per epoch")
        lr = keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                    config.epochs * steps_per_epoch)
    ema: dict[str, Any] = {}
    if config.ema_momentum > 0:
        ema = dict(use_ema=True, ema_momentum=config.ema_momentum)
    cls = {"adagrad": keras.optimizers.Adagrad, "adam": keras.optimizers.Adam,
           "sgd": keras.optimizers.SGD}[config.optimizer]
    return cls(learning_rate=lr, **ema)
