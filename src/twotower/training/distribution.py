"""Spreading training over devices: data parallel, sharded embedding tables, many hosts.

``apply_distribution(DistributionConfig(...))`` must run before the network is built: Keras
places each variable when it is created, by the distribution set at that moment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, fields
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")

from twotower.config import Config, check_choice, check_range
from twotower.errors import ConfigError

log = logging.getLogger(__name__)

BATCH_AXIS = "batch"
MODEL_AXIS = "model"

# Variable paths (regexes, ``re.search``) of the sharded tables: every id/history
# embedding table and the per-item bias of ``TwoTowerNet``.
SHARDED_TABLES = (".*_embedding/embeddings", ".*_bias/embeddings")
TABLE_SHARDINGS = ("rows", "columns", "blocks")


@dataclass(frozen=True)
class DistributionConfig(Config):
    """How training is spread over devices (and hosts).

    The device mesh is ``data_parallel x model_parallel``: each batch is split along its
    first axis over ``data_parallel`` groups, and each embedding table is split over
    ``model_parallel`` devices, along its rows (``shard_tables="rows"``: each device holds
    a slice of the ids) or along its columns (``"columns"``: each device holds a slice of
    every embedding, so it computes partial dot products that one all-reduce of the
    batch's scores completes). The batch size stays global (the same numbers as on one
    device); each device computes ``batch_size / data_parallel`` examples.

    Attributes:
        data_parallel: devices (per model replica group) the batch is split over.
        model_parallel: devices each embedding table is split over.
        shard_tables: ``rows``, ``columns`` or ``blocks``. ``rows``: split the ids (memory
            per device shrinks with the catalogue). ``columns`` (split the embedding
            dimensions, which ``model_parallel`` must
            divide; 1-column bias tables stay whole). Columns suit objectives whose step
            touches few rows, like ``mse``: each device keeps half the row work and adds one
            small all-reduce per step (``docs/scaling.md`` has the measurements).
            ``blocks`` (``mse`` with row-wise updates, ``data_parallel`` 1, one process):
            both tables split by rows (id ``r`` on device ``r % model_parallel``), and each
            device trains only the examples whose user and item rows it holds, in strata
            whose blocks share no row (stratified SGD, Gemulla et al., KDD 2011): no
            collective per step; the smaller table's blocks move one device on between
            strata. The same examples, in a stratified order; each step's update equals
            one device's on the step's examples (``docs/scaling.md``).
        coordinator_address: ``host:port`` of process 0 in a multi-host run; None for one
            host.
        num_processes: processes (hosts) taking part; 1 for one host.
        process_id: this process, ``0 .. num_processes - 1``.
        join_timeout_s: seconds a multi-host run waits for every process to join before
            it gives up, naming the coordinator.

    Example:
        >>> DistributionConfig(data_parallel=2, model_parallel=2).devices
        4
    """

    data_parallel: int = 1
    model_parallel: int = 1
    shard_tables: str = "rows"
    coordinator_address: str | None = None
    num_processes: int = 1
    process_id: int = 0
    join_timeout_s: float = 300.0

    def validate(self) -> None:
        own = "distribution"
        for f in fields(self):
            self.check_field(f.name, getattr(self, f.name))
        if self.shard_tables == "blocks" and self.model_parallel > 1 and (
                self.data_parallel > 1 or self.num_processes > 1):
            raise ConfigError(
                "distribution.shard_tables 'blocks' splits the examples over the "
                "model_parallel devices itself: it takes data_parallel 1 (got "
                f"{self.data_parallel}) and one process (got {self.num_processes}); use "
                "--devices N --model-parallel N --shard-tables blocks")
        if self.coordinator_address is None and self.num_processes > 1:
            raise ConfigError(f"distribution.num_processes is {self.num_processes}: a "
                              "multi-host run needs coordinator_address ('host:port' of "
                              "process 0)")
        if self.num_processes == 1 and (self.coordinator_address is not None
                                        or self.process_id != 0):
            # a job template missing num_processes: each host would train alone, and
            # every one of them write the run
            given = ("coordinator_address is set" if self.coordinator_address is not None
                     else f"process_id is {self.process_id}")
            raise ConfigError(f"distribution.{given} but num_processes is 1: a multi-host "
                              "run needs num_processes (--num-processes) set to the number "
                              "of processes in the job; one host needs neither")
        check_range(own, "process_id", self.process_id, 0, self.num_processes - 1,
                    integer=True)

    @staticmethod
    def check_field(name: str, value: Any) -> None:
        """Raise ConfigError unless ``value`` is of the form setting ``name`` takes, on its
        own (``validate`` then checks the settings together); ``twotower train`` checks a
        ``--config`` value that a flag overrides with it."""
        own = "distribution"
        if name in ("data_parallel", "model_parallel", "num_processes"):
            check_range(own, name, value, 1, 65_536, integer=True)
        elif name == "process_id":
            check_range(own, name, value, 0, 65_535, integer=True)
        elif name == "join_timeout_s":
            check_range(own, name, value, 1, 86_400)
        elif name == "shard_tables":
            check_choice(own, name, value, TABLE_SHARDINGS)
        elif name == "coordinator_address" and value is not None:
            port = value.rpartition(":")[2] if isinstance(value, str) else ""
            if not isinstance(value, str) or ":" not in value or not value.rpartition(":")[0] \
                    or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError("distribution.coordinator_address must be "
                                  f"'host:port' with a port in 1-65535, got {value!r}")

    @property
    def devices(self) -> int:
        """Devices in the mesh, over all hosts."""
        return self.data_parallel * self.model_parallel


class _ShardedParallel:
    """Factory of a ``keras.distribution.ModelParallel`` whose embedding tables are split by
    rows or by columns, falling back to replication for a table whose size along that axis
    the model axis does not divide (JAX cannot place uneven shards)."""

    @staticmethod
    def make(mesh: Any, shard_tables: str = "rows") -> Any:
        import keras

        class ShardedParallel(keras.distribution.ModelParallel):
            def get_variable_layout(self, variable: Any) -> Any:
                layout = super().get_variable_layout(variable)
                axes = tuple(layout.axes)
                if MODEL_AXIS in axes:
                    dim = axes.index(MODEL_AXIS)
                    size = self.device_mesh.shape[self.device_mesh.axis_names.index(MODEL_AXIS)]
                    if variable.shape[dim] % size:
                        # a 1-column bias is simply whole; in blocks, the training loop
                        # pads every table and splits it over the devices itself
                        if variable.shape[dim] > 1 and shard_tables != "blocks":
                            log.warning("%s: %d %s do not split over %d devices; "
                                        "replicated instead of sharded", variable.path,
                                        variable.shape[dim],
                                        "columns" if shard_tables == "columns" else "rows",
                                        size)
                        return keras.distribution.TensorLayout([None] * len(variable.shape),
                                                               self.device_mesh)
                return layout

        layout_map = keras.distribution.LayoutMap(mesh)
        for key in SHARDED_TABLES:
            layout_map[key] = ((None, MODEL_AXIS) if shard_tables == "columns"
                               else (MODEL_AXIS, None))
        dist = ShardedParallel(layout_map=layout_map, batch_dim_name=BATCH_AXIS)
        dist.shard_tables = shard_tables  # read by the training loop ("blocks")
        return dist


_initialized = False
#: The joined job's config once this process raised an error that every process of the
#: job raises alike (``agreed_exit``); None otherwise
_agreed: DistributionConfig | None = None
#: How long the processes wait for each other on such an error, to meet and then for the
#: others to leave (seconds each)
AGREED_EXIT_WAIT_S = 10.0


def _client() -> Any:
    """JAX's coordination-service client of a joined job (None if there is none)."""
    try:
        from jax._src import distributed
    except ImportError:  # pragma: no cover - another JAX layout
        return None
    return getattr(distributed.global_state, "client", None)


def agreed_exit() -> None:
    """The ending of a process that raised an error every process of the job raises alike
    (``--devices`` not counting every process's devices): the others leave first, then
    process 0, which holds JAX's coordination service. Were process 0 to end first, a
    process still starting its CPU backend, or polling the service, would end with
    "Connection reset by peer" from JAX (a C++ abort, or "a step across processes
    failed") instead of the error. Each other process writes a key when it leaves;
    process 0 waits for them (``AGREED_EXIT_WAIT_S`` at most). Does nothing unless such
    an error was raised (``_agreed``). Called by ``twotower.cli.main`` before
    ``os._exit``, after the error is printed."""
    config, client = _agreed, _client()
    if config is None or client is None:
        return
    try:
        if config.process_id:
            client.key_value_set(f"twotower/left/{config.process_id}", "1")
            return
        deadline = time.monotonic() + AGREED_EXIT_WAIT_S
        for pid in range(1, config.num_processes):
            left = max(1, int(1000 * (deadline - time.monotonic())))
            client.blocking_key_value_get(f"twotower/left/{pid}", left)
        time.sleep(0.1)  # a leaving process's own os._exit, after its key
    except Exception:  # noqa: BLE001 - a process that stopped otherwise: end anyway
        pass


#: Set while a join's thread has not returned (``_join``): it waits inside JAX, and a
#: process that gives up on it must end with ``os._exit`` (``twotower.cli.main`` does)
JOIN_PENDING = threading.Event()


def _join(config: DistributionConfig) -> None:
    """``jax.distributed.initialize`` for ``config``, waited for on the calling thread in
    short steps: Ctrl-C and SIGTERM act at once, and after ``join_timeout_s`` a ConfigError
    says what is missing. (Called directly, JAX's wait ignores both signals and, after its
    own timeout, aborts the process with a C++ stack trace.)"""
    import sys

    import jax
    print(f"twotower: process {config.process_id} of {config.num_processes}: joining the "
          f"coordinator at {config.coordinator_address} (it waits for every process, up to "
          f"{config.join_timeout_s:g} s)", file=sys.stderr, flush=True)
    done, box = threading.Event(), {}

    def run() -> None:
        try:  # JAX's own deadline after ours: ours reports, JAX's would abort
            jax.distributed.initialize(
                coordinator_address=config.coordinator_address,
                num_processes=config.num_processes, process_id=config.process_id,
                initialization_timeout=int(config.join_timeout_s) + 60)
        except Exception as exc:  # noqa: BLE001 - jax raises its runtime error types
            box["error"] = exc
        finally:
            done.set()

    JOIN_PENDING.set()
    threading.Thread(target=run, name="twotower-join", daemon=True).start()
    deadline = time.monotonic() + config.join_timeout_s
    where = (f"the coordinator at {config.coordinator_address} as process "
             f"{config.process_id} of {config.num_processes}")
    while not done.wait(0.2):
        if time.monotonic() > deadline:
            raise ConfigError(
                f"distribution: cannot join {where} within {config.join_timeout_s:g} s "
                "(--join-timeout): start every process, each with the same --coordinator "
                "and --num-processes and its own --process-id 0, 1, ...")
    JOIN_PENDING.clear()
    if "error" in box:
        raise ConfigError(f"distribution: cannot join {where}: {box['error']}")


def check_devices(config: DistributionConfig) -> None:
    """Refuse more devices than JAX sees (in a multi-process job: once it has joined).

    Raises:
        ConfigError: naming the count and the ``XLA_FLAGS`` to simulate CPU devices.
    """
    import jax
    devices = jax.devices()
    if config.devices > len(devices):
        # the flag sets each process's count: a job of P processes needs devices / P each
        per = -(-config.devices // config.num_processes)
        each = " in each process" if config.num_processes > 1 else ""
        raise ConfigError(
            f"distribution: data_parallel x model_parallel = {config.devices} devices, but "
            f"JAX sees {len(devices)} ({devices[0].platform}); on CPU simulate more with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={per} set{each} before "
            "JAX is imported")


def apply_distribution(config: DistributionConfig) -> Any:
    """Set the global Keras distribution for ``config``; call before building the network.

    One device (``data_parallel == model_parallel == 1``, one process) clears any
    distribution and returns None. Otherwise: with ``coordinator_address`` the process joins
    the multi-host job first (``jax.distributed.initialize``, once per process); then
    ``model_parallel == 1`` gives ``keras.distribution.DataParallel`` over the first
    ``data_parallel`` devices, and ``model_parallel > 1`` gives a
    ``keras.distribution.ModelParallel`` on a ``(data_parallel, model_parallel)`` mesh
    (axes ``batch``, ``model``) whose layout map splits every embedding table along its rows
    (``.*_embedding/embeddings`` and ``.*_bias/embeddings`` -> ``("model", None)``) or,
    with ``shard_tables="columns"``, along its columns (``(None, "model")``).

    Args:
        config: the mesh and, for many hosts, the coordinator.

    Returns:
        The ``keras.distribution.Distribution`` now in effect, or None for one device.

    Raises:
        ConfigError: more devices asked for than JAX sees (names the count and the
            ``XLA_FLAGS`` to simulate CPU devices).

    Example:
        >>> dist = apply_distribution(DistributionConfig(data_parallel=1))  # one device
        >>> dist is None
        True
    """
    import keras

    global _initialized
    if config.coordinator_address is not None and not _initialized:
        _join(config)
        _initialized = True
    import jax
    devices = jax.devices()
    if config.devices == 1 and config.num_processes == 1:
        keras.distribution.set_distribution(None)
        return None
    check_devices(config)
    if config.num_processes > 1 and config.devices != len(devices):
        # the mesh would hold only the first process's devices: the others would feed no
        # device (a traceback there) while the first trained alone and saved. Every
        # process sees the same count and raises this: once each has its backend (the
        # barrier), they end in order (``agreed_exit``)
        global _agreed
        client = _client()
        try:  # (a process given another --devices never comes: then it ends unordered)
            if client is not None:
                client.wait_at_barrier("twotower/devices", int(1000 * AGREED_EXIT_WAIT_S))
                _agreed = config
        except Exception:  # noqa: BLE001 - jax raises its runtime error types
            pass
        raise ConfigError(
            f"distribution: data_parallel x model_parallel = {config.devices} devices, but "
            f"the {config.num_processes} processes have {len(devices)} in all (--devices "
            f"counts every process's devices): give --devices {len(devices)}")
    names = keras.distribution.list_devices()[:config.devices]
    if config.model_parallel == 1:
        mesh = keras.distribution.DeviceMesh((config.data_parallel,), [BATCH_AXIS], names)
        dist = keras.distribution.DataParallel(device_mesh=mesh)
    else:
        mesh = keras.distribution.DeviceMesh((config.data_parallel, config.model_parallel),
                                             [BATCH_AXIS, MODEL_AXIS], names)
        dist = _ShardedParallel.make(mesh, config.shard_tables)
    if config.num_processes > 1:
        # each process feeds its own part of every batch (``process_part``), so Keras must
        # not shard the input again (it would ask for a tf.data.Dataset)
        dist.auto_shard_dataset = False
    keras.distribution.set_distribution(dist)
    return dist


def check_batch_size(batch_size: int, config: DistributionConfig) -> int:
    """The per-device batch of a global ``batch_size``; ConfigError unless it divides."""
    if (config.shard_tables == "blocks" and config.model_parallel > 1
            and batch_size % config.model_parallel):
        raise ConfigError(f"batch_size {batch_size} must be divisible by "
                          f"distribution.model_parallel ({config.model_parallel}) with "
                          "shard_tables 'blocks': each device trains batch_size / "
                          "model_parallel examples per step")
    if batch_size % config.data_parallel:
        raise ConfigError(f"batch_size {batch_size} must be divisible by "
                          f"distribution.data_parallel ({config.data_parallel}): the global "
                          "batch is split evenly over the data-parallel devices")
    return batch_size // config.data_parallel


def check_embedding_dim(embedding_dim: int, config: DistributionConfig) -> None:
    """ConfigError unless column-split tables split evenly (else they would stay whole)."""
    if (config.shard_tables == "columns" and config.model_parallel > 1
            and embedding_dim % config.model_parallel):
        raise ConfigError(f"embedding_dim {embedding_dim} must be divisible by "
                          f"distribution.model_parallel ({config.model_parallel}) to split "
                          "the tables by columns (shard_tables = 'columns')")
