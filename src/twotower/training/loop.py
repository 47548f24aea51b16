"""The product's training loop: jitted multi-step JAX training of ``TwoTowerNet``.

Same objective, optimizer and update rule as ``net.fit`` (the loss is the net's own
``compute_loss``, run through Keras' stateless API as Keras' JAX trainer does), but:

- ``steps_per_call`` train steps run inside one jitted call (``lax.scan``): one dispatch
  and no host sync per step;
- batches are prepared (stacked, checked, placed on the devices; for row-wise updates,
  each step's unique rows found) by a background thread while the devices compute;
- with Adagrad or SGD and an objective that touches only the batch's rows (``mse``,
  ``sampled_softmax`` on an id tower), the embedding tables get **row-wise (sparse)
  updates**: the loss is computed on the batch's unique rows only and the optimizer
  updates only those rows. This is exactly Keras' dense update (Adagrad and SGD leave a
  row with zero gradient unchanged) at a cost independent of the table size.

It runs under the Keras distribution set by ``apply_distribution`` (data parallel and
row-sharded embedding tables): batches are split over the ``batch`` mesh axis and the
variables keep their shardings.
"""

from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TextIO

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np

from twotower.artifacts import _signals_held
from twotower.config import Config, check_choice, check_range
from twotower.errors import ConfigError, DataError
from twotower.models.config import make_optimizer  # noqa: F401  (re-exported)

Batch = dict[str, np.ndarray]
SPARSE_OBJECTIVES = ("mse", "sampled_softmax")
SPARSE_MIN_RATIO = 16
_ALL = "__all_devices"  # suffix of the ids gathered whole once per call (sparse, mesh)
# suffixes of the batch's unique rows and each example's position in them, found on the
# host by the input thread (row-wise updates): XLA's CPU sort took about 9x as long as
# np.unique for the two tables of a 1,000-row batch (benchmarks/probes/unique_cost.py)
_UNQ, _INV = "__unique", "__inverse"
# a blocks call: its one packed array on the devices, and the names and dtypes of the
# columns after the ids (``TrainLoop._put_blocks``)
_PACKED, _KINDS = "__packed", "__kinds"


@dataclass(frozen=True)
class LoopConfig(Config):
    """Settings of the training loop (the model's own settings stay in ``ModelConfig``).

    Attributes:
        steps_per_call: train steps fused into one jitted call (``lax.scan``).
        sparse_updates: ``auto`` (row-wise table updates where they are exact, Adagrad/SGD
            with an objective that reads only the batch's rows, and pay off: tables of at
            least 16 x batch rows), ``on`` (row-wise wherever exact; an error where not),
            ``off`` (dense updates, as ``model.fit``).
        prefetch: groups of batches prepared ahead by a background thread (0: none).
        input_priority: that thread's scheduling priority: ``low`` (nice 19: it runs when a
            core is idle), ``normal``, or ``auto``: low when training on several CPU
            devices, whose compute threads then fill every core and stall together
            whenever the input thread takes one of them (``docs/scaling.md``); normal
            otherwise, and with tables in blocks (no step waits for another device).
        progress_every_s: a progress line on stderr this often (0: silent).
        blocks_buffer_rows: with tables split in blocks (``shard_tables="blocks"``), the
            examples held to sort them into strata (12-16 bytes each): a stratum runs
            about this many examples before the tables move (``twotower.training.blocks``).

    Example:
        >>> LoopConfig(steps_per_call=8).sparse_updates
        'auto'
    """

    steps_per_call: int = 16
    sparse_updates: str = "auto"
    prefetch: int = 2
    input_priority: str = "auto"
    progress_every_s: float = 0.0
    blocks_buffer_rows: int = 4_000_000

    def validate(self) -> None:
        own = "loop"
        check_range(own, "steps_per_call", self.steps_per_call, 1, 100_000, integer=True)
        check_choice(own, "sparse_updates", self.sparse_updates, ("auto", "on", "off"))
        check_range(own, "prefetch", self.prefetch, 0, 64, integer=True)
        check_choice(own, "input_priority", self.input_priority, ("auto", "low", "normal"))
        check_range(own, "progress_every_s", self.progress_every_s, 0.0, 1e6)
        check_range(own, "blocks_buffer_rows", self.blocks_buffer_rows, 1, 1 << 40,
                    integer=True)


def blocks_model_reason(cfg: Any) -> str | None:
    """Why ``shard_tables="blocks"`` cannot train the model of settings ``cfg``, known
    before any data is read (None: the settings do not rule it out; the network and its
    optimizer are checked when built)."""
    if cfg.query_tower != "id":
        return f"query_tower {cfg.query_tower!r} reads rows outside the batch (histories)"
    if cfg.objective != "mse":
        return (f"objective {cfg.objective!r} reads rows outside each example's own user and "
                "item (only 'mse' does not)")
    return None


def blocks_refusal(why: str) -> ConfigError:
    """The error for a ``shard_tables="blocks"`` run that cannot be one, for reason ``why``."""
    return ConfigError("distribution.shard_tables 'blocks' trains each example on the device "
                       "that holds its user and item rows, with row-wise updates; not here: "
                       f"{why}. Use 'rows' or 'columns'")


def sparse_reason(net: Any, optimizer: Any) -> str | None:
    """Why row-wise updates would not equal ``model.fit``'s update (None: they would)."""
    import keras
    cfg = net.cfg
    if cfg.query_tower != "id":
        return f"query_tower {cfg.query_tower!r} reads rows outside the batch (histories)"
    if cfg.objective not in SPARSE_OBJECTIVES:
        return f"objective {cfg.objective!r} reads rows outside the batch"
    if getattr(net, "item_features", None) is not None or \
            getattr(net, "user_features", None) is not None:
        # their tables are indexed by feature values, not by the batch's ids
        return "side-feature tables (item_features/user_features) are not rows of the ids"
    if isinstance(optimizer, keras.optimizers.SGD):
        if float(optimizer.momentum) != 0.0:
            return "SGD with momentum moves rows whose gradient is zero"
    elif not isinstance(optimizer, keras.optimizers.Adagrad):
        return f"{type(optimizer).__name__} moves rows whose gradient is zero"
    for name in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm"):
        if getattr(optimizer, name, None):
            return f"optimizer {name} is not row-wise"
    if getattr(optimizer, "use_ema", False):
        return "optimizer EMA is not row-wise"
    if not isinstance(optimizer._learning_rate, keras.Variable):
        return "a learning-rate schedule"
    return None


class TrainLoop:
    """Trains a built ``TwoTowerNet`` with a jitted multi-step JAX loop.

    Args:
        net: a built ``TwoTowerNet`` (built after ``apply_distribution`` when distributed).
        optimizer: a Keras optimizer (``make_optimizer(config)``); built here if needed.
        config: loop settings.

    Attributes (after ``fit``):
        history: ``{"loss": [per-epoch loss]}`` (mean over examples, as ``model.fit``).
        step_losses: ``[steps]`` float32 loss of every step, in order.
        examples_per_second: training throughput of the last epoch (compilation excluded
            from the first epoch's rate only by warm-up, so prefer a second epoch).
        sparse: whether row-wise updates were used (for the full-size batches).

    Example:
        >>> loop = TrainLoop(net, make_optimizer(cfg), LoopConfig())   # doctest: +SKIP
        >>> loop.fit({"user": u, "item": i, "rating": r}, batch_size=1000,  # doctest: +SKIP
        ...          epochs=5)
    """

    def __init__(self, net: Any, optimizer: Any, config: LoopConfig | None = None,
                 progress_out: TextIO | None = None, progress_prefix: str = "") -> None:
        self.net, self.optimizer = net, optimizer
        self.config = config or LoopConfig()
        # where progress lines go (stderr by default) and what starts them
        self.progress_out, self.progress_prefix = progress_out, progress_prefix
        self.history: dict[str, list[float]] = {}
        self.step_losses = np.zeros(0, dtype=np.float32)
        self.examples_per_second: list[float] = []
        self.sparse: bool | None = None
        self._fns: dict[Any, Any] = {}
        self._blocks = 0  # devices of a shard_tables="blocks" distribution (_setup)
        self._packed: Any = None  # in-memory examples packed for it (by fit)

    # ------------------------------------------------------------------ public
    def fit(self, data: Batch | Callable[[int], Iterable[Batch]], *, epochs: int = 1,
            batch_size: int | None = None, shuffle: bool = True, seed: int = 0,
            checkpoint: Any = None) -> dict[str, list[float]]:
        """Train for ``epochs`` epochs.

        Args:
            data: in-memory inputs (dict of ``[n]`` arrays: ``user``, ``item``, ``rating``,
                ``logq`` as ``TwoTowerNet`` takes them), or a function ``epoch -> batches``
                (e.g. ``lambda e: stream.batches(bs, e, inputs=stream.model_inputs(obj))``).
                With several processes (``jax.distributed``), every process passes the
                same in-memory inputs and feeds its part of each global batch
                (``process_part``; a last batch the data-parallel devices cannot split is
                dropped); a function yields this process's part of each batch itself.
            epochs: passes over the data.
            batch_size: global rows per step (in-memory data only).
            shuffle, seed: in-memory data is permuted per epoch with ``seed + epoch``.
                From 1M rows on, its rows are packed once per ``fit`` (16 bytes per row
                while it runs) so a shuffled batch reads one record per row.
            checkpoint: a ``twotower.training.checkpoint.Checkpoint`` already ``start``-ed
                for this training: its state, if it holds one, is resumed (the batches of
                the epoch it stopped in that were done are read and skipped), and the
                state is written to it every ``every_s`` seconds and on Ctrl-C/SIGTERM.

        Returns:
            ``history``.
        """
        import time

        from twotower.training.stream import Progress
        arrays = None
        self._packed = None  # packed for blocks anew each fit
        if isinstance(data, dict):
            if not batch_size:
                raise ConfigError("fit: batch_size is required with in-memory data")
            arrays = data
            n = len(next(iter(arrays.values())))
            if n == 0:
                raise DataError("fit: the training data is empty")
            for role in ("user", "item"):
                if role in arrays:
                    _check_ids(np.asarray(arrays[role]), role, self._n_rows(role),
                               "row {at}")

            packs: list[Any] = []  # packed once per fit, below (by each schedule its own way)

            def data(epoch: int) -> Iterator[Batch]:
                batches = _array_batches(arrays, batch_size, shuffle, seed + epoch,
                                         packs[0] if packs else None)
                return (process_parts(batches, self._mesh)
                        if self._processes > 1 else batches)
        self._setup()
        if arrays is not None:  # before the first epoch's clock starts
            if self._blocks:
                self._pack_blocks(arrays)
            elif shuffle:
                packs.append(_pack_rows(arrays))
        start, skip, losses_all, history = 0, 0, [], []
        epoch_losses: list[tuple[Any, np.ndarray]] = []
        saved = checkpoint.load_state() if checkpoint is not None else None
        if saved is not None:
            self._restore(saved["arrays"])
            pos, got = saved["position"], saved["losses"]
            start, skip, history = int(pos["epoch"]), int(pos["batches"]), list(pos["history"])
            losses_all = [got["steps"]] if len(got["steps"]) else []
            if skip:  # the losses of the epoch's batches done
                epoch_losses = [(got["epoch"], got["sizes"])]
            if self.config.progress_every_s:
                where = (f"all {epochs} epochs done" if start >= epochs
                         else f"epoch {start + 1}/{epochs}, {skip:,} batches of it done")
                print(f"{self.progress_prefix}resuming from {checkpoint.directory}: {where}",
                      file=self.progress_out or sys.stderr, flush=True)
        state = self._state()
        self.history = {"loss": history}
        self.examples_per_second = []
        # the last state that every counter agrees with (one assignment: a signal between
        # the statements of a step leaves the previous one)
        at = (state, start, skip, len(epoch_losses), len(losses_all))
        try:
            for epoch in range(start, epochs):
                progress = Progress(every_s=self.config.progress_every_s,
                                    prefix=f"{self.progress_prefix}epoch {epoch + 1}/"
                                           f"{epochs}: ", out=self.progress_out)
                t0 = time.perf_counter()
                done = skip if epoch == start else 0
                if epoch != start:
                    epoch_losses = []
                batches = data(epoch)
                if self._blocks:
                    groups = self._block_groups(batches, batch_size, done, epoch,
                                                arrays, shuffle, seed + epoch)
                else:
                    if done:
                        batches = itertools.islice(batches, done, None)
                    groups = self._groups(batches)
                for stacked, sizes in _prefetch(groups, self.config.prefetch,
                                                self._input_nice()):
                    # with a checkpoint, a stop waits for the call and its bookkeeping: one
                    # inside them would find the state given to the call gone (donated)
                    with (_signals_held(callables_only=True) if checkpoint is not None
                          else nullcontext()):
                        state, losses = self._run(state, stacked)
                        if self._mesh is not None and not self._blocks:
                            # one multi-device call in flight at a time: on CPU, queued
                            # calls can hold the thread pool while another waits in a
                            # collective (XLA rendezvous deadlock seen with 2 simulated
                            # devices)
                            losses.block_until_ready()
                        done += len(sizes)
                        sizes = sizes * self._processes  # each process fed its part
                        epoch_losses.append((losses, sizes))
                        at = (state, epoch, done, len(epoch_losses), len(losses_all))
                    progress.update(int(sizes.sum()), lambda: float(losses[-1]))  # waits for it
                    if checkpoint is not None and checkpoint.due():
                        self._checkpoint(checkpoint, at, epoch_losses, losses_all)
                if not epoch_losses:  # a loss of 0 over no example would be invented
                    raise DataError(
                        f"epoch {epoch + 1}: no batch to train on (the data is shorter than "
                        "one batch the devices can split: with several processes or "
                        "drop_remainder the last, partial batch is dropped); give more "
                        "rows or a smaller batch_size")
                steps = [np.asarray(l, dtype=np.float32) for l, _ in epoch_losses]
                sizes = np.concatenate([s for _, s in epoch_losses])
                flat = np.concatenate(steps) if steps else np.zeros(0, np.float32)
                dt = time.perf_counter() - t0
                self.examples_per_second.append(float(sizes.sum() / max(dt, 1e-9)))
                losses_all.append(flat)
                self.history["loss"].append(float((flat * sizes).sum() / max(sizes.sum(), 1)))
                at = (state, epoch + 1, 0, 0, len(losses_all))
                progress.close(self.history["loss"][-1])
                if checkpoint is not None and (checkpoint.due() or epoch + 1 == epochs):
                    self._checkpoint(checkpoint, at, [], losses_all)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: keep what was trained
            if checkpoint is not None:
                # the CLI sends the stop again every second until it is seen: held back
                # (then raised) while a large state is written
                with _signals_held():
                    self._checkpoint(checkpoint, at, epoch_losses, losses_all,
                                     stopping=True)
            raise
        finally:
            self._packed = None
            # a stop inside a call leaves `state` donated to it (deleted): the last whole one
            for whole in (state, at[0]):
                if not _deleted(whole):
                    self._write_back(whole)
                    break
            if getattr(self.optimizer, "use_ema", False):  # as model.fit: end on the average
                self.optimizer.finalize_variable_values(self.net.trainable_variables)
        self.step_losses = np.concatenate(losses_all) if losses_all else self.step_losses
        return self.history

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, checkpoint: Any, at: tuple[Any, int, int, int, int],
                    epoch_losses: list[tuple[Any, np.ndarray]], losses_all: list[Any],
                    stopping: bool = False) -> None:
        """Write ``at`` (state, epoch, batches of it done, how many of ``epoch_losses``
        belong to it, how many of ``losses_all`` (whole epochs) are done) to
        ``checkpoint``. Stopping, a state whose buffers a call in flight
        took (donated) is gone: the checkpoint already written stays."""
        state, epoch, done, n, n_all = at
        losses_all = losses_all[:n_all]
        if _deleted(state):
            if stopping and self.config.progress_every_s:
                print(f"{self.progress_prefix}stopped inside a step: the checkpoint in "
                      f"{checkpoint.directory} is the last one written",
                      file=self.progress_out or sys.stderr, flush=True)
            return
        if stopping and self.config.progress_every_s:
            print(f"{self.progress_prefix}stopping: writing the checkpoint to "
                  f"{checkpoint.directory}", file=self.progress_out or sys.stderr, flush=True)
        arrays = self._host_arrays(state)
        part = epoch_losses[:n]
        losses = {
            "steps": (np.concatenate([np.asarray(x, np.float32) for x in losses_all])
                      if losses_all else np.zeros(0, np.float32)),
            "epoch": (np.concatenate([np.asarray(l, np.float32).reshape(-1) for l, _ in part])
                      if part else np.zeros(0, np.float32)),
            "sizes": (np.concatenate([s for _, s in part]) if part
                      else np.zeros(0, np.float64)),
        }
        checkpoint.save_state(arrays, {"epoch": epoch, "batches": done,
                                       "history": list(self.history["loss"][:epoch])},
                              losses)

    def _restore(self, arrays: list[np.ndarray]) -> None:
        """Assign a checkpoint's arrays to the network's and optimizer's variables (in
        ``_state``'s order; each keeps its layout)."""
        variables = self._variables()
        why = (f"its {len(arrays)} saved variables do not fit this network's "
               f"{len(variables)}" if len(arrays) != len(variables) else next(
                   (f"its variable {k} ({getattr(v, 'path', v.name)}) has shape "
                    f"{tuple(a.shape)}, this network's {tuple(v.shape)}"
                    for k, (a, v) in enumerate(zip(arrays, variables))
                    if tuple(a.shape) != tuple(v.shape)), None))
        if why:
            raise DataError(f"checkpoint: {why}; remove the checkpoint to start afresh")
        for v, a in zip(variables, arrays):
            v.assign(a)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        import keras
        net, opt = self.net, self.optimizer
        if not net.built:
            net.build()
        if not opt.built:
            opt.build(net.trainable_variables)
        reason = sparse_reason(net, opt)
        mode = self.config.sparse_updates
        if mode == "on" and reason:
            raise ConfigError(f"loop.sparse_updates 'on' is not exact here: {reason}")
        self._sparse_ok = mode != "off" and reason is None
        self.sparse = None
        self._rows_seen = 0
        self._dist = keras.distribution.distribution()
        self._mesh = self._dist.device_mesh.backend_mesh if self._dist is not None else None
        import jax
        self._processes = jax.process_count()
        self._blocks = self._blocks_devices(reason)
        if self._blocks:
            self.sparse = True

    def _blocks_devices(self, reason: str | None) -> int:
        """Devices of a ``shard_tables="blocks"`` distribution (0 without one); sets up
        which state leaves are tables and which table moves. ConfigError where the blocks
        schedule would not train the model that one device trains."""
        import keras

        from twotower.training.distribution import MODEL_AXIS
        if self._dist is None or getattr(self._dist, "shard_tables", None) != "blocks":
            return 0
        mesh = self._mesh
        p = int(mesh.shape[MODEL_AXIS]) if MODEL_AXIS in mesh.axis_names else 1
        if p == 1:
            return 0
        why = (reason
               or blocks_model_reason(self.net.cfg)
               or ("loop.sparse_updates is 'off'" if self.config.sparse_updates == "off"
                   else None)
               or (f"data_parallel is {data_parallel_of(mesh)}"
                   if data_parallel_of(mesh) > 1 else None)
               or (f"{self._processes} processes" if self._processes > 1 else None))
        if why:
            raise blocks_refusal(why)
        net, opt = self.net, self.optimizer
        roles = {id(v): _role_of(v.path) for v in net.trainable_variables}
        if isinstance(opt, keras.optimizers.Adagrad):
            for v in net.trainable_variables:
                roles[id(opt._accumulators[opt._get_variable_index(v)])] = roles[id(v)]
        variables = self._variables()
        self._leaf_roles = [roles.get(id(v)) for v in variables]
        self._leaf_rows = [int(v.shape[0]) if roles.get(id(v)) else 0 for v in variables]
        # the smaller table's parts move between strata (each device sends its part on)
        self._moving = "user" if net.n_users <= net.n_items else "item"
        self._rot = 0
        return p

    def _input_nice(self) -> int:
        """The input thread's nice value (``LoopConfig.input_priority``)."""
        mode = self.config.input_priority
        if mode == "auto":
            import jax
            me = jax.process_index()  # the devices sharing this host's cores
            local = ([d for d in self._mesh.devices.flat if d.process_index == me]
                     if self._mesh is not None else [])
            cpu_mesh = len(local) > 1 and all(d.platform == "cpu" for d in local)
            # tables in blocks: no device waits for another in a step, so none stalls
            # while the input thread takes a core (measured: normal is faster there)
            mode = "low" if cpu_mesh and not self._blocks else "normal"
        return 19 if mode == "low" else 0

    def _state(self) -> tuple[list[Any], list[Any], list[Any]]:
        net, opt = self.net, self.optimizer
        if self._blocks:
            return self._block_state()
        copy = _copy
        return ([copy(v.value) for v in net.trainable_variables],
                [copy(v.value) for v in net.non_trainable_variables],
                [copy(v.value) for v in opt.variables])

    def _variables(self) -> list[Any]:
        """The network's and the optimizer's variables in ``_state``'s order (its leaves)."""
        return [*self.net.trainable_variables, *self.net.non_trainable_variables,
                *self.optimizer.variables]

    def _write_back(self, state: Any) -> None:
        import jax
        values = (self._host_arrays(state) if self._blocks
                  else jax.tree_util.tree_leaves(state))
        for v, val in zip(self._variables(), values):
            v.assign(val)

    def _host_arrays(self, state: Any) -> list[np.ndarray]:
        """The state's leaves as numpy arrays in the variables' own layout (a blocks
        state's tables put back in id order)."""
        import jax
        leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(state)]
        if not self._blocks:
            return leaves
        return [_from_blocks(a, self._blocks, self._rot if r == self._moving else 0, n)
                if r else a for a, r, n in zip(leaves, self._leaf_roles, self._leaf_rows)]

    def _block_state(self) -> tuple[list[Any], list[Any], list[Any]]:
        """The variables laid out for the blocks schedule: each table padded to a multiple
        of the devices, id ``r`` at row ``r // p`` of device ``r % p``'s part (the moving
        table's parts as in stratum 0); everything else replicated."""
        import jax
        from jax.sharding import NamedSharding, PartitionSpec

        from twotower.training.distribution import MODEL_AXIS
        split = NamedSharding(self._mesh, PartitionSpec(MODEL_AXIS))
        whole = NamedSharding(self._mesh, PartitionSpec())
        self._rot = 0
        leaves = [jax.device_put(_to_blocks(np.asarray(v.value), self._blocks, 0), split)
                  if r else jax.device_put(np.asarray(v.value), whole)
                  for v, r in zip(self._variables(), self._leaf_roles)]
        nt, nn = len(self.net.trainable_variables), len(self.net.non_trainable_variables)
        return (leaves[:nt], leaves[nt:nt + nn], leaves[nt + nn:])

    # ------------------------------------------------------------------ batching
    def _groups(self, batches: Iterable[Batch]) -> Iterator[tuple[Any, np.ndarray]]:
        """Stacks of ``steps_per_call`` same-size batches ``[K, B]`` on the devices; the
        rest one batch at a time."""
        k = self.config.steps_per_call
        group: list[Batch] = []
        for b in batches:
            size = len(b["user"])
            if group and len(group[0]["user"]) != size:
                yield from self._singles(group)
                group = []
            group.append(b)
            if len(group) == k:
                yield self._put(group), np.full(k, size, dtype=np.float64)
                group = []
        yield from self._singles(group)

    def _singles(self, group: list[Batch]) -> Iterator[tuple[Any, np.ndarray]]:
        for b in group:
            yield self._put([b]), np.array([len(b["user"])], dtype=np.float64)

    def _put(self, group: list[Batch]) -> dict[str, Any]:
        import jax
        stacked = {key: np.stack([b[key] for b in group]) for key in group[0]}
        size = _rows_of(stacked)
        for role in ("user", "item"):  # out-of-range ids would train nothing, silently
            if role in stacked:
                _check_ids(stacked[role], role, self._n_rows(role),
                           "position {at} of the batches stacked for one call")
        # unique rows need the whole batch: with several processes each holds only its
        # part, and the step finds them itself
        unique = self._is_sparse(size) and jax.process_count() == 1
        if unique:
            for role in ("user", "item"):
                # the step reads the unique rows and positions only: the ids stay here
                stacked[role + _UNQ], stacked[role + _INV] = _host_unique(
                    stacked.pop(role), self._n_rows(role))
        if self._mesh is None:
            return jax.device_put(stacked)
        from jax.sharding import NamedSharding, PartitionSpec

        from twotower.training.distribution import BATCH_AXIS
        dp = data_parallel_of(self._mesh)
        # a last batch the data-parallel devices cannot split evenly stays whole (replicated;
        # one process only: with several, fit drops such batches); ``size`` is this
        # process's part of the global batch
        spec = (PartitionSpec(None, BATCH_AXIS) if size * self._processes % dp == 0
                else PartitionSpec())
        sharding = NamedSharding(self._mesh, spec)
        whole = NamedSharding(self._mesh, PartitionSpec())
        # the unique rows go whole to every device (each updates them all); so do the
        # positions of the candidate side with in-batch negatives
        shared = _shared_roles(self.net.cfg.objective)
        places = {key: whole if key.endswith(_UNQ) or (key.endswith(_INV)
                                                       and key[:-len(_INV)] in shared)
                  else sharding for key in stacked}
        if jax.process_count() == 1:  # one batched transfer (probes/input_cost.py)
            return jax.device_put(stacked, places)
        return {key: jax.make_array_from_process_local_data(places[key], v)
                for key, v in stacked.items()}

    # ------------------------------------------------------------------ the jitted steps
    def _run(self, state: Any, stacked: dict[str, Any]) -> tuple[Any, Any]:
        if self._blocks:
            return self._run_blocks(state, stacked)
        # compiled once per batch shape/placement and update mode, reused by later fits
        key = (self._sparse_ok, tuple((k, v.shape, str(v.sharding))
                                  for k, v in sorted(stacked.items())))
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fns[key] = self._compile(state, _rows_of(stacked))
        return fn(state, stacked)

    # ------------------------------------------------------------------ blocks
    def _pack_blocks(self, arrays: Batch) -> None:
        """In-memory ``arrays`` packed for the blocks schedule (``self._packed``; None
        when they have columns ``pack`` does not take: they are then stratified as a
        stream)."""
        from twotower.training.blocks import pack
        self._packed = pack(arrays, devices=self._blocks, moving=self._moving,
                            n_rows={"user": self.net.n_users, "item": self.net.n_items})

    def _block_groups(self, batches: Iterable[Batch], batch_size: int | None,
                      done: int, epoch: int = 0, arrays: Batch | None = None,
                      shuffle: bool = True, seed: int = 0
                      ) -> Iterator[tuple[Any, np.ndarray]]:
        """The calls of the blocks schedule placed on the devices, after the first
        ``done`` steps (a resumed epoch): from in-memory ``arrays`` packed by
        ``_pack_blocks`` (``twotower.training.blocks.array_calls``; ``batches`` unread),
        else from ``batches`` (``stratify``)."""
        from twotower.training.blocks import ROWS, array_calls, coalesced, stratify
        p = self._blocks
        if arrays is not None and self._packed is not None:
            size = batch_size
            calls = array_calls(self._packed, devices=p, batch_size=size,
                                steps=self.config.steps_per_call, shuffle=shuffle,
                                seed=seed, epoch=epoch)
        else:
            it = iter(batches)
            first = next(it, None)
            if first is None:
                return
            size = batch_size or len(first["user"])
            buffer = self.config.blocks_buffer_rows
            # the stream's batches joined in chunks of 1/16 of the buffer or 65,536 rows,
            # the fewer, or a batch more (a buffer under 16 rows keeps its batches as
            # they are)
            chunks = coalesced(self._checked(itertools.chain([first], it)),
                               min(1 << 16, buffer // 16))
            calls = stratify(chunks, devices=p,
                             batch_size=size, steps=self.config.steps_per_call,
                             moving=self._moving,
                             n_rows={"user": self.net.n_users, "item": self.net.n_items},
                             buffer_rows=buffer)
        if size % p:
            raise ConfigError(f"batch_size {size} must be divisible by "
                              f"distribution.model_parallel ({p}) with shard_tables "
                              "'blocks': each device trains batch_size / model_parallel "
                              "examples per step")
        seen = 0
        for call in calls:
            k = len(call[ROWS])
            if seen < done:  # the same schedule as the stopped run: skip what it did
                seen += k
                continue
            yield self._put_blocks(call), call[ROWS].astype(np.float64)

    def _checked(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """``batches``, each id checked against its table (out-of-range ids would train
        the blocks' padding rows)."""
        for b in batches:
            for role in ("user", "item"):
                _check_ids(np.asarray(b[role]), role, self._n_rows(role),
                           "position {at} of a batch")
            yield b

    def _put_blocks(self, call: Batch) -> dict[str, Any]:
        """A stratified call on the devices as one ``[p, K, C, B / p]`` int32 array split
        over the devices along its first axis (one transfer per call): each step's unique
        rows and positions of both tables (found here), then the other columns' bits."""
        import jax
        from jax.sharding import NamedSharding, PartitionSpec

        from twotower.training.blocks import ROWS, STRATUM
        from twotower.training.distribution import MODEL_AXIS
        call = dict(call)
        stratum, rows = call.pop(STRATUM), call.pop(ROWS)
        p, k, per = call["user"].shape
        parts = []
        for role in ("user", "item"):
            # ids past the last block row are padding: read as zeros, written nowhere
            u, inv = _host_unique(call.pop(role).reshape(p * k, per),
                                  -(-self._n_rows(role) // p) + 1)
            parts += [u.reshape(p, k, per), inv.reshape(p, k, per)]
        values = sorted(call)
        parts += [call[name].view(np.int32) for name in values]
        packed = np.stack(parts, axis=2)
        placed = jax.device_put(packed, NamedSharding(self._mesh, PartitionSpec(MODEL_AXIS)))
        kinds = tuple((name, call[name].dtype.str) for name in values)
        return {_PACKED: placed, STRATUM: stratum, ROWS: rows, _KINDS: kinds}

    def _run_blocks(self, state: Any, stacked: dict[str, Any]) -> tuple[Any, Any]:
        import jax
        import keras

        from twotower.training.blocks import ROWS, STRATUM
        stratum, rows = stacked[STRATUM], stacked[ROWS]
        packed, kinds = stacked[_PACKED], stacked[_KINDS]
        dist = keras.distribution.distribution()
        keras.distribution.set_distribution(None)  # each device's step is its own
        try:
            shift = (stratum - self._rot) % self._blocks
            if shift:
                # the only collective: after the calls queued before it, and alone (CPU
                # collectives queued beside other calls can deadlock)
                jax.block_until_ready(state)
                move = self._fns.get("blocks-move")
                if move is None:
                    move = self._fns["blocks-move"] = self._compile_move(state)
                state = jax.block_until_ready(move(state, np.int32(shift)))
                self._rot = stratum
            key = ("blocks", packed.shape, kinds)
            fn = self._fns.get(key)
            if fn is None:
                fn = self._fns[key] = self._compile_blocks(state, packed.shape[3], kinds)
            state, losses = fn(state, packed)
        finally:
            keras.distribution.set_distribution(dist)
        return state, _StepLosses(losses, packed.shape[3] / np.maximum(rows, 1))

    def _compile_blocks(self, state: Any, per: int,
                        kinds: tuple[tuple[str, str], ...]) -> Any:
        """One jitted call of the blocks schedule: under ``shard_map`` each device runs
        its steps on its own rows (the call's ``[p, K, C, per]`` array, ``_put_blocks``;
        ``kinds``: the names and dtypes of its columns after the ids); no collective (the
        step losses stay per device)."""
        import jax
        from jax.sharding import PartitionSpec

        from twotower.training.distribution import MODEL_AXIS
        p, mesh = self._blocks, self._mesh
        step = self._sparse_step(per, local=True, scale=1.0 / p)
        specs = self._block_specs(state)
        ids = ["user" + _UNQ, "user" + _INV, "item" + _UNQ, "item" + _INV]

        def unpack(x: Any) -> dict[str, Any]:  # one step's [C, per]
            out = {name: x[c] for c, name in enumerate(ids)}
            for c, (name, kind) in enumerate(kinds, start=len(ids)):
                out[name] = (jax.lax.bitcast_convert_type(x[c], np.dtype(kind))
                             if np.dtype(kind) != np.int32 else x[c])
            return out

        def local(state: Any, packed: Any) -> Any:
            state, losses = jax.lax.scan(lambda s, x: step(s, unpack(x)), state, packed[0])
            return state, losses[None, :]

        body = jax.shard_map(local, mesh=mesh,
                             in_specs=(specs, PartitionSpec(MODEL_AXIS)),
                             out_specs=(specs, PartitionSpec(MODEL_AXIS)),
                             check_vma=False)
        shardings = jax.tree_util.tree_map(lambda a: a.sharding, state)
        return jax.jit(body, donate_argnums=0, out_shardings=(shardings, None))

    def _compile_move(self, state: Any) -> Any:
        """The moving table's parts (and their accumulators) ``shift`` devices on: device
        ``j``'s part goes to device ``j - 1`` per step of the ring (``ppermute``)."""
        import jax
        from jax.sharding import PartitionSpec

        from twotower.training.distribution import MODEL_AXIS
        p = self._blocks
        moving = [r == self._moving for r in self._leaf_roles]
        tree = jax.tree_util.tree_structure(state)
        specs = self._block_specs(state)
        ring = [(j, (j - 1) % p) for j in range(p)]

        def local(state: Any, shift: Any) -> Any:
            def once(_: Any, leaves: list[Any]) -> list[Any]:
                return [jax.lax.ppermute(a, MODEL_AXIS, ring) if m else a
                        for a, m in zip(leaves, moving)]
            leaves = jax.lax.fori_loop(0, shift, once, jax.tree_util.tree_leaves(state))
            return jax.tree_util.tree_unflatten(tree, leaves)

        body = jax.shard_map(local, mesh=self._mesh, in_specs=(specs, PartitionSpec()),
                             out_specs=specs, check_vma=False)
        shardings = jax.tree_util.tree_map(lambda a: a.sharding, state)
        return jax.jit(body, donate_argnums=0, out_shardings=shardings)

    def _block_specs(self, state: Any) -> Any:
        import jax
        from jax.sharding import PartitionSpec

        from twotower.training.distribution import MODEL_AXIS
        return jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(state),
            [PartitionSpec(MODEL_AXIS) if r else PartitionSpec() for r in self._leaf_roles])

    def _n_rows(self, role: str) -> int:
        return self.net.n_users if role == "user" else self.net.n_items

    def _is_sparse(self, rows: int) -> bool:
        """Whether batches of ``rows`` rows train with row-wise updates. They pay a sort
        (unique ids) per step; dense updates pay a pass over the tables. "auto" takes the
        row-wise path once the tables have >= SPARSE_MIN_RATIO x batch rows (measured:
        dense wins at 6k rows, row-wise at 100k, batch 1000)."""
        table_rows = self.net.n_users + self.net.n_items
        return self._sparse_ok and (self.config.sparse_updates == "on"
                                    or table_rows >= SPARSE_MIN_RATIO * rows)

    def _compile(self, state: Any, rows: int) -> Any:
        import jax
        sparse = self._is_sparse(rows)
        if rows >= self._rows_seen:
            self.sparse, self._rows_seen = sparse, rows
        step = self._sparse_step(rows) if sparse else self._dense_step()
        mesh = self._mesh

        def multi(state: Any, stacked: dict[str, Any]) -> Any:
            if sparse and mesh is not None:
                # Every device needs the whole batch's ids (the unique rows it updates):
                # gather the ids of all the call's steps at once, one collective per call
                # instead of several per step.
                from jax.sharding import NamedSharding, PartitionSpec
                whole = NamedSharding(mesh, PartitionSpec())
                keys = _whole_keys(self.net.cfg.objective)
                if "user" + _UNQ in stacked:  # the unique rows came from the host
                    keys = tuple(k for k in keys if k not in ("user", "item"))
                stacked = {**stacked, **{f"{k}{_ALL}": jax.lax.with_sharding_constraint(
                    stacked[k], whole) for k in keys if k in stacked}}
            return jax.lax.scan(step, state, stacked)

        if self._mesh is None:
            return jax.jit(multi, donate_argnums=0)
        from jax.sharding import NamedSharding, PartitionSpec
        shardings = jax.tree_util.tree_map(lambda a: a.sharding, state)
        return jax.jit(multi, donate_argnums=0,
                       out_shardings=(shardings, NamedSharding(self._mesh, PartitionSpec())))

    def _loss_fn(self, net: Any) -> Callable[..., Any]:
        """``(trainable, non_trainable, x) -> (loss, non_trainable)``: the net's forward
        pass and ``compute_loss`` in a stateless scope, as Keras' JAX trainer runs them."""
        import keras

        def loss_fn(tv: list[Any], ntv: list[Any], x: dict[str, Any]) -> Any:
            y_pred, ntv = net.stateless_call(tv, ntv, x, training=True)
            mapping = list(zip(net.trainable_variables, tv))
            mapping += list(zip(net.non_trainable_variables, ntv))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                loss = net.compute_loss(x=x, y=None, y_pred=y_pred, training=True)
            new = []
            for v, val in zip(net.non_trainable_variables, ntv):
                cur = scope.get_current_value(v)
                new.append(val if cur is None else cur)
            return loss, new
        return loss_fn

    def _dense_step(self) -> Callable[..., Any]:
        import jax
        loss_fn, opt = self._loss_fn(self.net), self.optimizer

        def step(state: Any, x: dict[str, Any]) -> Any:
            tv, ntv, ov = state
            (loss, ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, x)
            tv, ov = opt.stateless_apply(ov, grads, tv)
            return (tv, ntv, ov), loss
        return step

    def _sparse_step(self, rows: int, local: bool = False,
                     scale: float = 1.0) -> Callable[..., Any]:
        """Loss on the batch's unique rows (a same-config ``TwoTowerNet`` whose tables have
        ``batch`` rows), then Adagrad/SGD applied to those rows only. ``local``: one
        device's step inside ``shard_map`` (its own tables, no mesh); ``scale``: the factor
        of the gradient (a device's share of a global batch)."""
        import jax
        import jax.numpy as jnp
        import keras

        net, opt = self.net, self.optimizer
        shadow = _shadow_net(net, rows)
        loss_fn = self._loss_fn(shadow)
        roles = [_role_of(v.path) for v in net.trainable_variables]
        n_rows = {"user": net.n_users, "item": net.n_items}
        for v, s in zip(net.trainable_variables, shadow.trainable_variables):
            if v.shape[1:] != s.shape[1:]:
                raise ConfigError(f"sparse updates: {v.path} does not match the shadow net")
        # non-trainable state carried over (seed generators); the rest is the shadow's own
        carried = [tuple(v.shape) == tuple(s.shape) for v, s in
                   zip(net.non_trainable_variables, shadow.non_trainable_variables)]
        shadow_ntv = [s.value for s in shadow.non_trainable_variables]
        ov_index = {id(v): i for i, v in enumerate(opt.variables)}
        it_pos = ov_index[id(opt.iterations)]
        lr_pos = ov_index[id(opt._learning_rate)]
        adagrad = isinstance(opt, keras.optimizers.Adagrad)
        acc_pos = ([ov_index[id(opt._accumulators[opt._get_variable_index(v)])]
                    for v in net.trainable_variables] if adagrad else [])
        eps = float(opt.epsilon) if adagrad else 0.0
        mesh = None if local else self._mesh

        # Each table's columns as the table splits them (``shard_tables="columns"``), so
        # the row gradients of a column-split table stay split; otherwise whole.
        col_specs = [_column_axes(v.value) for v in net.trainable_variables]

        def rep(a: Any, cols: tuple[Any, ...] = ()) -> Any:
            # The row ids and row gradients are small: keep them whole on every device so
            # the table updates stay local (left to itself, GSPMD scatters per data shard
            # and all-reduces the whole table). A column-split table keeps its gradient's
            # columns split: each device updates its own columns of the rows.
            if mesh is None:
                return a
            from jax.sharding import NamedSharding, PartitionSpec
            return jax.lax.with_sharding_constraint(
                a, NamedSharding(mesh, PartitionSpec(None, *cols) if any(cols)
                                 else PartitionSpec()))

        split = None
        if mesh is not None:
            from jax.sharding import NamedSharding, PartitionSpec

            from twotower.training.distribution import BATCH_AXIS
            if rows % mesh.shape[BATCH_AXIS] == 0:  # as ``_put`` places the batch
                split = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
            rep_spec = NamedSharding(mesh, PartitionSpec())

        # in-batch negatives: every device scores its queries against all the batch's
        # candidates, so the candidate side (item rows, log-Q) stays whole on every device
        shared = _shared_roles(net.cfg.objective)

        def step(state: Any, x: dict[str, Any]) -> Any:
            tv, ntv, ov = state
            x = dict(x)
            whole = {k[:-len(_ALL)]: x.pop(k) for k in list(x) if k.endswith(_ALL)}
            host = {k: x.pop(k) for k in list(x) if k.endswith((_UNQ, _INV))}
            if "logq" in whole and "logq" in shared:
                x["logq"] = whole["logq"]
            uniq, local = {}, {}
            for role in ("user", "item"):
                if role + _UNQ in host:
                    u, inv = host[role + _UNQ], host[role + _INV]
                else:
                    ids = whole.get(role, x[role])
                    # padding slots get an out-of-range row: read as zeros, writes dropped
                    u, inv = jnp.unique(ids, size=rows, fill_value=n_rows[role],
                                        return_inverse=True)
                    inv = inv.astype(ids.dtype)
                inv = inv.reshape(-1)
                if split is not None:
                    # each device keeps its part of the batch (a slice: no traffic)
                    inv = jax.lax.with_sharding_constraint(inv, rep_spec if role in shared
                                                           else split)
                uniq[role], local[role] = rep(u), inv
            small = [jnp.take(t, uniq[r], axis=0, mode="fill", fill_value=0)
                     for t, r in zip(tv, roles)]
            sntv = [n if c else s for n, s, c in zip(ntv, shadow_ntv, carried)]
            xs = {**x, "user": local["user"], "item": local["item"]}
            (loss, sntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(small, sntv, xs)
            if scale != 1.0:
                grads = [g * scale for g in grads]
            ntv = [s if c else n for n, s, c in zip(ntv, sntv, carried)]
            ov = list(ov)
            lr = ov[lr_pos].astype(tv[0].dtype)
            new_tv = []
            for k, (t, g, r) in enumerate(zip(tv, grads, roles)):
                idx, g = uniq[r], rep(g, col_specs[k])
                if adagrad:
                    acc = ov[acc_pos[k]]
                    a = jnp.take(acc, idx, axis=0, mode="fill", fill_value=0) + jnp.square(g)
                    delta = -(lr * g) / jnp.sqrt(a + eps)
                    # set, not add: XLA keeps a gather-then-scatter-add of the same buffer
                    # from updating in place (a full table copy per step); the rows are unique
                    ov[acc_pos[k]] = acc.at[idx].set(a, mode="drop")
                else:
                    delta = -lr * g
                new_tv.append(t.at[idx].add(delta, mode="drop"))
            ov[it_pos] = ov[it_pos] + 1
            return (new_tv, ntv, ov), loss
        return step


class _StepLosses:
    """The step losses of a blocks call: each device's mean over its ``B / p`` rows
    (``[p, K]``, on the devices), combined on the host when read into each step's mean
    over its real rows (``scale``: ``(B / p) / real rows``). Combining them in the call
    would put a collective in every call."""

    def __init__(self, per_device: Any, scale: np.ndarray) -> None:
        self._per_device, self._scale = per_device, scale

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = (np.asarray(self._per_device, dtype=np.float64).sum(axis=0)
               * self._scale).astype(np.float32)
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, i: Any) -> Any:
        return np.asarray(self)[i]

    def __len__(self) -> int:
        return len(self._scale)

    def block_until_ready(self) -> "_StepLosses":
        self._per_device.block_until_ready()
        return self


def _to_blocks(a: np.ndarray, p: int, rot: int) -> np.ndarray:
    """A table in the blocks layout: padded to a multiple of ``p`` rows, id ``r`` at row
    ``r // p`` of part ``(r % p - rot) % p`` (part ``j`` is device ``j``'s)."""
    n, rest = a.shape[0], a.shape[1:]
    full = np.zeros((-(-n // p) * p, *rest), dtype=a.dtype)
    full[:n] = a
    parts = full.reshape(-1, p, *rest).swapaxes(0, 1)
    if rot:
        parts = np.roll(parts, -rot, axis=0)
    return np.ascontiguousarray(parts).reshape(-1, *rest)


def _from_blocks(a: np.ndarray, p: int, rot: int, n: int) -> np.ndarray:
    """The inverse of ``_to_blocks``: the table's ``n`` rows in id order."""
    rest = a.shape[1:]
    parts = a.reshape(p, -1, *rest)
    if rot:
        parts = np.roll(parts, rot, axis=0)
    return np.ascontiguousarray(parts.swapaxes(0, 1)).reshape(-1, *rest)[:n]


def _deleted(state: Any) -> bool:
    """Whether a loop state's buffers were donated to a call (and so deleted)."""
    import jax
    return any(getattr(a, "is_deleted", lambda: False)()
               for a in jax.tree_util.tree_leaves(state))


def _column_axes(value: Any) -> tuple[Any, ...]:
    """The mesh axes a placed table's columns are split over (``()`` unless it is placed
    by a ``NamedSharding``)."""
    spec = getattr(getattr(value, "sharding", None), "spec", None)
    return tuple(spec)[1:] if spec is not None else ()


def _rows_of(stacked: dict[str, Any]) -> int:
    """Rows per step of a stacked call (``[K, B]`` arrays; the ids themselves stay on the
    host when their unique rows were found there)."""
    return stacked["user" + _INV if "user" + _INV in stacked else "user"].shape[1]


def _shared_roles(objective: str) -> tuple[str, ...]:
    """Inputs every data-parallel device needs whole: with in-batch negatives each device
    scores its queries against all of the batch's candidates (item rows, log-Q)."""
    return ("item", "logq") if objective == "sampled_softmax" else ()


def _check_ids(ids: np.ndarray, role: str, n_rows: int, where: str) -> None:
    """Raise a DataError naming the first id outside ``[0, n_rows)`` and where it is
    (``where`` formatted with ``at``, its flat position)."""
    if ids.size and (ids.min() < 0 or ids.max() >= n_rows):
        flat = ids.reshape(-1)
        at = int(np.flatnonzero((flat < 0) | (flat >= n_rows))[0])
        raise DataError(f"fit: {role} id {flat[at]} at {where.format(at=at)} is outside "
                        f"[0, {n_rows}), the net's {role} table; map external ids through "
                        "the vocabulary (Vocabulary.lookup) first")


def _host_unique(ids: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per step (row of ``ids [K, B]``): its unique ids, sorted and padded to ``B`` with
    out-of-range rows ``n_rows, n_rows + 1, ...`` (read as zeros, writes dropped), and each
    example's position among them. As ``jnp.unique(size=B, fill_value=n_rows,
    return_inverse=True)``, but padded with distinct rows.

    All steps share one sort call: each id becomes a key with its position in its step
    packed below it, so a plain ``np.sort`` (no argsort) of each step's row of ``B`` keys
    orders every step at once; in 32 bits where the ids and positions fit (ids below
    2**21 at ``B`` = 1,000), else 64. One 64-bit sort of all ``K x B`` keys (the step above
    the id) took 58% of the CPU of ``np.unique`` per step, whose fixed costs dominate at
    ``B`` = 1,000 (``benchmarks/probes/unique_cost.py``); sorting rows of 32-bit keys takes
    less than half of that again.
    """
    k, b = ids.shape
    pbits = max(1, (b - 1).bit_length())  # a position in its step
    if k * b == 0 or n_rows >= 1 << (62 - pbits):  # the packed key would overflow
        return _host_unique_steps(ids, n_rows)
    # 16 rows of 1,000 keys: 12 ns per key in int64, 5-6 in int32, against 28 for one
    # int64 sort of all 16,000 (numpy 2.4, ad hoc)
    kind = np.int32 if n_rows < 1 << (31 - pbits) else np.int64
    key = ids.astype(kind)
    key <<= pbits
    key |= np.arange(b, dtype=kind)
    key.sort(axis=1)
    pos = key & ((1 << pbits) - 1)  # where each sorted key came from, in its step
    srt = key >> pbits
    new = np.empty((k, b), dtype=bool)
    new[:, 0] = True
    np.not_equal(srt[:, 1:], srt[:, :-1], out=new[:, 1:])
    rank = np.cumsum(new, axis=1)
    rank -= 1
    inv = np.empty((k, b), dtype=ids.dtype)
    row = (np.arange(k) * b)[:, None]  # a step's first flat position
    inv.reshape(-1)[(pos + row).reshape(-1)] = rank.reshape(-1)
    uniq = n_rows + np.arange(b)[None, :] - (rank[:, -1:] + 1)  # the padding rows
    # every sorted id to its rank in its step (repeats write the same id to the same place)
    rank += row
    uniq.reshape(-1)[rank.reshape(-1)] = srt.reshape(-1)
    return uniq.astype(ids.dtype), inv


def _host_unique_steps(ids: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``_host_unique`` one step at a time (for tables too large to pack keys)."""
    k, b = ids.shape
    uniq = np.empty((k, b), dtype=ids.dtype)
    inv = np.empty((k, b), dtype=ids.dtype)
    for s in range(k):
        u, i = np.unique(ids[s], return_inverse=True)
        uniq[s, :len(u)] = u
        uniq[s, len(u):] = np.arange(n_rows, n_rows + b - len(u), dtype=ids.dtype)
        inv[s] = i
    return uniq, inv


def _whole_keys(objective: str) -> tuple[str, ...]:
    """Inputs the row-wise step needs whole on every device: the ids (to find the batch's
    unique rows) and, with in-batch negatives, the candidates' log-Q."""
    return ("user", "item", "logq") if objective == "sampled_softmax" else ("user", "item")


def _role_of(path: str) -> str:
    name = path.split("/")[-2] if "/" in path else path
    if name.startswith("user"):
        return "user"
    if name.startswith("item"):
        return "item"
    raise ConfigError(f"sparse updates: no id role for variable {path}")


def _shadow_net(net: Any, rows: int) -> Any:
    """A ``TwoTowerNet`` of the same config with ``rows``-row tables, built without any
    distribution (its variables are only shapes; values come from the real net)."""
    import keras

    from twotower.models.net import TwoTowerNet
    dist = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        shadow = TwoTowerNet(rows, rows, net.cfg, name="shadow_net")
        shadow.build()
    finally:
        keras.distribution.set_distribution(dist)
    return shadow


def _copy(a: Any) -> Any:
    # donated buffers must not be the variables' own: copy, keeping the sharding
    import jax.numpy as jnp
    return jnp.array(a, copy=True)


PACK_MIN_ROWS = 1_000_000  # below this the arrays stay in cache: gathers are cheap anyway
_PACK_BLOCK = 16  # batches gathered at once from packed rows


def _pack_rows(x: Batch) -> np.ndarray | None:
    """The rows of ``x`` packed as one 16-byte record each (``complex128`` bits), when every
    array is 1-D with 4-byte items and there are at most 4: a shuffled batch then costs one
    random memory access per row, not one per array (9.9 vs 30.1 ns per row for three
    arrays of 20M rows, ``benchmarks/probes/input_cost.py``). None when ``x`` does not qualify or is small."""
    arrays = list(x.values())
    n = len(arrays[0])
    if (n < PACK_MIN_ROWS or len(arrays) > 4
            or any(np.asarray(v).ndim != 1 or np.asarray(v).dtype.itemsize != 4
                   for v in arrays)):
        return None
    rec = np.zeros((n, 4), dtype=np.uint32)
    for j, v in enumerate(arrays):
        rec[:, j] = np.asarray(v).view(np.uint32)
    return rec.view(np.complex128).reshape(n)


def process_part(rows: np.ndarray, mesh: Any) -> np.ndarray:
    """This process's part of a global batch's ``rows``: the rows that the batch split over
    ``mesh`` places on this process's devices. All of them in a one-process run, or when
    the batch is not split across processes, as with tables split over the processes and
    ``data_parallel = 1``. The global batch, assembled from the processes' parts, is
    ``rows`` again."""
    import jax
    if jax.process_count() == 1 or len(rows) == 0:
        return rows
    return rows[_process_rows(len(rows), mesh)]


def current_mesh() -> Any:
    """The JAX mesh of the current Keras distribution (None without one). Keras keeps the
    distribution per thread: look it up in the thread that set it, and hand the mesh to
    an input thread."""
    import keras
    dist = keras.distribution.distribution()
    return dist.device_mesh.backend_mesh if dist is not None else None


def data_parallel_of(mesh: Any) -> int:
    """Devices each batch is split over on ``mesh`` (1 without a mesh or batch axis)."""
    from twotower.training.distribution import BATCH_AXIS
    if mesh is None or BATCH_AXIS not in mesh.axis_names:
        return 1
    return int(mesh.shape[BATCH_AXIS])


def _process_rows(n: int, mesh: Any) -> np.ndarray:
    """Positions of this process's rows in a global batch of ``n`` rows split over the
    mesh's batch axis (``jax.make_array_from_process_local_data`` reads them in order)."""
    from jax.sharding import NamedSharding, PartitionSpec

    from twotower.training.distribution import BATCH_AXIS
    axis = BATCH_AXIS if BATCH_AXIS in mesh.axis_names else None
    spans = {(s[0].start or 0, n if s[0].stop is None else s[0].stop) for s in
             NamedSharding(mesh, PartitionSpec(axis)).addressable_devices_indices_map(
                 (n,)).values()}
    return np.concatenate([np.arange(a, b) for a, b in sorted(spans)])


def process_parts(batches: Iterable[Batch], mesh: Any) -> Iterator[Batch]:
    """Each global batch's part for this process (``process_part`` over ``mesh``);
    batches that the mesh's data-parallel devices cannot split evenly are dropped (every
    process drops the same)."""
    dp = data_parallel_of(mesh)
    for b in batches:
        n = len(next(iter(b.values())))
        if n % dp or n == 0:
            continue
        rows = process_part(np.arange(n), mesh)
        yield {k: v[rows] for k, v in b.items()}


def _array_batches(x: Batch, batch_size: int, shuffle: bool, seed: int,
                   packed: np.ndarray | None = None) -> Iterator[Batch]:
    """Batches of ``x`` in order, or in a permutation drawn from ``seed`` (the same
    permutation with or without ``packed``, the rows of ``x`` from ``_pack_rows``)."""
    n = len(next(iter(x.values())))
    order = np.random.default_rng(seed).permutation(n) if shuffle else None
    if order is not None and packed is not None:
        step = batch_size * _PACK_BLOCK
        for s in range(0, n, step):
            block = np.take(packed, order[s:s + step]).view(np.uint32).reshape(-1, 4)
            cols = {k: np.ascontiguousarray(block[:, j]).view(np.asarray(v).dtype)
                    for j, (k, v) in enumerate(x.items())}
            for b in range(0, len(block), batch_size):
                yield {k: v[b:b + batch_size] for k, v in cols.items()}
        return
    for s in range(0, n, batch_size):
        if order is None:
            yield {k: v[s:s + batch_size] for k, v in x.items()}
        else:
            idx = order[s:s + batch_size]
            yield {k: v[idx] for k, v in x.items()}


_DONE = object()


def _prefetch(items: Iterator[Any], depth: int, nice: int = 0) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` ahead (inline when 0), at ``nice``
    (Linux: per thread; elsewhere, or where refused, the thread keeps the process's)."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            except (AttributeError, OSError):
                pass
        try:
            for it in items:
                while not stop.is_set():
                    try:
                        q.put(it, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)

    t = threading.Thread(target=produce, daemon=True, name="twotower-prefetch")
    t.start()
    try:
        while True:
            it = q.get()
            if it is _DONE:
                return
            if isinstance(it, BaseException):
                raise it
            yield it
    finally:
        stop.set()
