"""Independent tasks on a Ray cluster, results streamed back as they finish (``--cluster ADDRESS``).

Ray is an optional dependency (``pip install 'pks-difftest[cluster]'``).  ``ADDRESS`` is what
``ray.init`` takes: ``ray://HOST:PORT`` for a remote cluster's client server, ``auto`` for the cluster
started on this machine with ``ray start --head``, or ``HOST:PORT`` of a head node.  The tasks are
plain module-level functions and picklable arguments, so the nodes need pks-difftest installed (on
one machine, the driver's ``PYTHONPATH`` is passed on, so a source checkout works too).  The caller
gets each task's result as soon as it is done, in completion order, and puts them back in its own order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from .errors import InputError

T = TypeVar("T")
R = TypeVar("R")
INSTALL_HINT = "Ray is not installed: pip install 'pks-difftest[cluster]'"
IN_FLIGHT = 64  # tasks submitted and not yet collected, per worker CPU at most this many in all


def _ray(address: str) -> Any:
    """The ``ray`` module, connected to ``address`` (InputError naming the option if that cannot be done)."""
    try:
        import ray
    except ImportError:
        raise InputError("--cluster", INSTALL_HINT) from None
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in ("PYTHONPATH", "DIFFTEST_REFERENCE") if k in os.environ}
        try:
            ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False,
                     include_dashboard=False if not address.startswith("ray://") else None)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError("--cluster", f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    return ray


def map_unordered(fn: Callable[[T], R], items: Sequence[T], address: str) -> Iterator[R]:
    """``fn(item)`` for every item as a Ray task on the cluster at ``address``; results in completion order."""
    ray = _ray(address)
    remote = ray.remote(fn)
    pending: list[Any] = []
    it = iter(items)
    for item in it:
        pending.append(remote.remote(item))
        if len(pending) >= IN_FLIGHT:
            break
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])
        nxt = next(it, None)
        if nxt is not None:
            pending.append(remote.remote(nxt))


def workers(address: str) -> int:
    """CPUs the cluster offers (for sizing chunks)."""
    return max(1, int(_ray(address).cluster_resources().get("CPU", 1)))


def shutdown() -> None:
    """Disconnect from the cluster (a no-op without Ray or a connection)."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()
