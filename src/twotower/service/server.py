"""``serve``: run the app under uvicorn (what ``twotower serve RUN`` calls)."""

from __future__ import annotations

import copy
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from twotower.errors import ConfigError

if TYPE_CHECKING:
    from twotower.service.deny import DenyList

log = logging.getLogger("twotower.service")

_ENV_RUN = "TWOTOWER_SERVE_RUN"
_ENV_SETTINGS = "TWOTOWER_SERVE_SETTINGS"  # create_app's limits, as JSON, for the workers
#: a JSON file of the server-wide deny list (``DenyList.to_json``: its ids, file, time of
#: reading), written by the parent for the workers at start-up and on each SIGHUP (a list of
#: many ids would pass the limit of one environment variable); every worker started after
#: it, a restarted one too, serves that reading
_ENV_DENY = "TWOTOWER_SERVE_DENY"
#: how long uvicorn waits for a replacement worker (SIGHUP with several workers) to start
#: before it keeps the old one: uvicorn's 5 s default was too short for a worker loading a
#: run while the others serve (2.5 s idle, 5.3 s with 2 clients, on 2 cores)
WORKER_START_TIMEOUT_S = 120
#: the Host names a loopback service answers to by default (DNS rebinding guard)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ADMIN_TOKEN_ENV = "TWOTOWER_ADMIN_TOKEN"


def _log_config(level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG
    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["formatters"]["bare"] = {"format": "%(message)s"}
    # uvicorn's lines and ours as JSON, as the access lines are (one format on stderr)
    cfg["formatters"]["default"] = {"()": "twotower.service.observability.JsonLines"}
    cfg["handlers"]["access_json"] = {"class": "logging.StreamHandler", "formatter": "bare",
                                      "stream": "ext://sys.stderr"}
    cfg["loggers"]["twotower.access"] = {"handlers": ["access_json"], "level": "INFO",
                                         "propagate": False}
    cfg["loggers"]["twotower.service"] = {"handlers": ["default"], "level": level.upper(),
                                          "propagate": False}
    return cfg


_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")


def limit_blas_threads(n: int) -> list[str]:
    """Cap the threads of the OpenBLAS libraries already loaded in this process (best effort).

    A served search is a small matmul per request; BLAS threads only add contention with
    the requests running next to it (measured: a 16-user batch took 2.6 ms with the default
    threads on 2 busy cores, 0.3 ms with one). Child processes get ``OPENBLAS_NUM_THREADS``.

    Returns:
        the libraries that were capped (empty where none is found, e.g. not on Linux).
    """
    import ctypes
    import re

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    done = []
    for lib in sorted(set(re.findall(r"(/\S*openblas\S*\.so[\w.]*)", maps))):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            fn = getattr(handle, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done.append(lib)
                break
    return done


def _listen_socket(host: str, port: int) -> socket.socket:
    """The shared listening socket of the workers.

    Created with ``IPPROTO_TCP`` on purpose: uvicorn's own ``bind_socket`` leaves the protocol
    0, so asyncio does not set TCP_NODELAY on the accepted connections, and a response
    written in two parts (headers, body) then waits ~40 ms for the client's delayed ACK
    (measured: 44 ms p50 for one client with ``--workers 2``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _app_from_env() -> FastAPI:
    """App factory for worker processes (``workers > 1``); settings come from the env.
    A run that does not load (e.g. broken before a SIGHUP) is one error line and the
    worker's exit, as uvicorn reports its own start-up errors, not a traceback."""
    from twotower.errors import TwoTowerError
    from twotower.service.app import create_app
    import json
    from twotower.service.deny import DenyList
    try:
        deny = None
        if os.environ.get(_ENV_DENY):
            deny = DenyList.from_json(Path(os.environ[_ENV_DENY]).read_text(encoding="utf-8"))
        return create_app(os.environ[_ENV_RUN],
                          admin_token=os.environ.get(ADMIN_TOKEN_ENV) or None, deny=deny,
                          **json.loads(os.environ.get(_ENV_SETTINGS) or "{}"))
    except TwoTowerError as exc:
        log.error("worker %d cannot serve %s: %s", os.getpid(), os.environ[_ENV_RUN], exc)
        raise SystemExit(1) from None


def default_allowed_hosts(host: str) -> list[str]:
    """The Host names a service bound to ``host`` answers to by default: the loopback
    names when it listens on the loopback interface (a web page on another name, e.g. by
    DNS rebinding, cannot reach it through the user's browser); any otherwise (behind a
    proxy or on a LAN, names are the operator's: ``--allowed-hosts``)."""
    import ipaddress
    h = host.strip("[]").lower()
    try:
        loopback = ipaddress.ip_address(h).is_loopback
    except ValueError:
        loopback = h == "localhost"
    return sorted({*LOOPBACK_HOSTS, h}) if loopback else ["*"]


def _write_deny(deny: Any) -> str:
    """A temporary file of the reading ``deny`` (``DenyList``) for the workers; its path,
    also set in ``_ENV_DENY`` (what a worker started from now on reads)."""
    import tempfile
    fd, path = tempfile.mkstemp(prefix="twotower-deny-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(deny.to_json())
    os.environ[_ENV_DENY] = path
    return path


def _supervise(config: Any, sock: socket.socket, deny: Any = None) -> None:
    """Run uvicorn's supervisor of several workers; once a SIGINT or SIGTERM has stopped
    them, end as that signal would, as a single worker's server does (uvicorn's supervisor
    returned normally: a service manager saw exit status 0 after its SIGTERM, and Ctrl-C
    was not an interruption).

    ``deny``: the deny list's reading (``DenyList``) the workers start with (written to a
    temporary file, removed at the end). A SIGHUP reads its file again first, once for
    every replacement worker: a file that cannot be read or has a bad line is logged and
    the restart skipped (the workers keep serving, with the list they have)."""
    from uvicorn.supervisors import Multiprocess
    from uvicorn.supervisors.multiprocess import SIGNALS

    from twotower.errors import TwoTowerError
    stops: list[int] = []
    written = [_write_deny(deny)] if deny is not None else []

    class Supervisor(Multiprocess):  # type: ignore[misc, valid-type]
        def handle_hup(self) -> None:
            nonlocal deny
            if deny is not None and deny.rereadable:
                try:
                    fresh = deny.again()
                except TwoTowerError as exc:
                    log.error("SIGHUP: reload refused: cannot read the deny list again: %s; "
                              "the workers keep serving, with the list read at %s; correct "
                              "the file, then send SIGHUP again", exc, deny.read_at)
                    return
                written.append(_write_deny(fresh))
                deny = fresh
            super().handle_hup()
            while len(written) > 1:  # the workers started from the old one have read it
                os.unlink(written.pop(0))

        def handle_int(self) -> None:
            stops.append(signal.SIGINT)
            super().handle_int()

        def handle_term(self) -> None:
            stops.append(signal.SIGTERM)
            super().handle_term()

    before = {sig: signal.getsignal(sig) for sig in SIGNALS}  # the supervisor replaces them
    try:
        Supervisor(config, sockets=[sock]).run()
    finally:
        for sig, handler in before.items():
            if handler is not None:  # (None: a handler not set from Python)
                signal.signal(sig, handler)
        for path in written:
            os.unlink(path)
    for sig in stops[:1]:  # the first stop: SIG_DFL ends the process, SIGINT raises
        signal.raise_signal(sig)  # KeyboardInterrupt ("interrupted", exit status 130)


def serve(run: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, admin_token: str | None = None, *, max_k: int = 1000,
          max_batch: int = 1000, max_results: int = 100_000,
          allowed_hosts: list[str] | None = None, log_level: str = "info",
          access_log: bool = True, blas_threads: int | None = 1, max_filter: int = 10_000,
          deny: Iterable[Any] | DenyList | None = None,
          deny_file: str | os.PathLike[str] | None = None,
          max_body_bytes: int | None = None) -> None:
    """Serve a run directory over HTTP until interrupted (Ctrl-C / SIGTERM).

    SIGHUP reloads the run directory without downtime: with one worker the new model is
    loaded next to the old one and swapped in (a broken run is refused and logged); with
    several workers uvicorn replaces the workers one by one, each loading the run anew.

    Args:
        run: the run directory to serve.
        host: interface to bind; the loopback interface by default (not reachable from
            other machines), pass ``0.0.0.0`` deliberately to expose it.
        port: TCP port.
        workers: worker processes (each holds its own copy of the model).
        admin_token: enables ``POST /admin/reload``; default: ``$TWOTOWER_ADMIN_TOKEN``.
        max_k: largest ``k`` a request may ask for.
        max_batch: most user ids in one batch request, and most history items in one
            by-history request.
        max_results: most (user, item) entries one batch request may ask for (users x k).
        allowed_hosts: Host header names served (others: 400); None: the loopback names
            when ``host`` is a loopback address, else any (``default_allowed_hosts``).
        log_level: uvicorn/twotower log level.
        access_log: one JSON line per request on stderr.
        blas_threads: BLAS threads per process (None: leave the library default); requests
            run concurrently already, so more threads per matmul only add contention.
        max_filter: most item ids in one request's ``allow`` or ``deny`` list.
        deny: external item ids no answer lists (e.g. out of stock): prepared once per
            loaded run, kept across reloads (``create_app``'s ``deny``); with several
            workers, every worker (a restarted one too) gets the same list. Or a
            ``DenyList`` read from a file, read again by every reload as ``deny_file`` is
            (``twotower serve --deny FILE`` reads it so, for messages that name ``--deny``).
        deny_file: the same list as a file of one item id a line, read at start-up and
            again by every reload (``create_app``'s ``deny_file``; ``-``: standard input,
            read once). With several workers the parent reads it on SIGHUP, once, and
            every replacement worker serves that reading; a file that cannot be read or
            has a bad line skips the restart (logged).
        max_body_bytes: larger request bodies get 413; None: large enough for a request
            at every maximum (``app.default_max_body``).

    Raises:
        ArtifactError: the run cannot be loaded (raised before binding the port).
        ConfigError: a setting is out of range.
    """
    import uvicorn

    from twotower.service.app import create_app

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"`workers` must be an integer >= 1, got {workers!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"`port` must be an integer between 0 and 65535, got {port!r}")
    token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV) or None
    if blas_threads is not None:
        limit_blas_threads(blas_threads)
    log_config = _log_config(log_level)
    if not access_log:
        log_config["loggers"]["twotower.access"]["level"] = "WARNING"
    # Load in the parent first: a bad run fails here, with a plain message, not in a worker.
    settings = {"max_k": max_k, "max_batch": max_batch, "max_results": max_results,
                "allowed_hosts": (default_allowed_hosts(host) if allowed_hosts is None
                                  else list(allowed_hosts)),
                "access_log": access_log, "max_filter": max_filter,
                "max_body_bytes": max_body_bytes}
    app = create_app(run, admin_token=token, deny=deny, deny_file=deny_file, **settings)
    from twotower.service.protocol import JSONErrorsHTTPProtocol
    # (a request uvicorn cannot parse, e.g. a URL over 64 KiB: JSON, not its plain text)
    common = dict(host=host, port=port, log_config=log_config, log_level=log_level,
                  access_log=False, server_header=False, http=JSONErrorsHTTPProtocol)
    import inspect
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        common["timeout_worker_healthcheck"] = WORKER_START_TIMEOUT_S  # uvicorn >= 0.37
    if workers > 1:
        import json
        os.environ[_ENV_RUN] = str(Path(run).absolute())  # as given: a link's reload
        os.environ[_ENV_SETTINGS] = json.dumps(settings)
        if token:
            os.environ[ADMIN_TOKEN_ENV] = token
        deny_list = app.state.holder.deny_list  # the reading the parent checked
        # the parent only supervises: let its model go (the app's routes keep the holder,
        # and with it a whole copy of the model, alive for the parent's life)
        app.state.holder.current = None
        del app
        import gc
        gc.collect()
        config = uvicorn.Config("twotower.service.server:_app_from_env", factory=True,
                                workers=workers, **common)  # type: ignore[arg-type]
        sock = _listen_socket(host, port)
        log.info("twotower serving %s on http://%s:%d with %d workers", run, host,
                 sock.getsockname()[1], workers)
        _supervise(config, sock, deny_list)
        return
    server = uvicorn.Server(uvicorn.Config(app, **common))  # type: ignore[arg-type]
    holder = app.state.holder

    def _reload_in_background() -> None:
        from twotower.service.state import ReloadInProgress, ReloadRefused
        try:
            holder.reload()
        except ReloadInProgress as exc:
            log.error("SIGHUP reload: %s", exc)
        except ReloadRefused:
            pass  # the holder has logged why, and what it still serves

    def _on_hup(signum: int, frame: Any) -> None:
        # Signal handlers run on the event loop's thread: hand the (slow) load to a thread.
        log.info("SIGHUP: reloading %s", holder.current.run_dir)
        threading.Thread(target=_reload_in_background, name="twotower-reload",
                         daemon=True).start()

    # our socket, as for several workers: a port in use or a bad host is a ConfigError
    # (one line, exit 2), not uvicorn's log line and exit 3
    sock = _listen_socket(host, port)
    log.info("twotower serving %s on http://%s:%d", run, host, sock.getsockname()[1])
    previous = signal.signal(signal.SIGHUP, _on_hup) if hasattr(signal, "SIGHUP") else None
    try:
        server.run(sockets=[sock])
    finally:
        if previous is not None:
            signal.signal(signal.SIGHUP, previous)
