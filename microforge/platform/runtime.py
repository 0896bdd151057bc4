"""The Ray runtime: an embedded local Ray by default, or a connection to a running cluster.

``ray_runtime()`` starts Ray only if none is running in this process, and shuts down exactly
what it started, so library calls nest inside tests and CLI commands alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

log = logging.getLogger(__name__)

# CPUs kept free for the Ray Data tasks that render or read training data: if training workers
# (or Tune trials) held every CPU, no render task could start and the first batch would never come.
DATA_CPU_RESERVE = 1.0

# Ray 2.60 turns on token authentication when ~/.ray/auth_token exists and RAY_AUTH_MODE is
# unset; an embedded Ray must not depend on such a stray file, so the mode is always explicit.
# Serve's throughput-optimised data path (user code and the router on each replica's own event
# loop, gRPC between replicas) roughly doubled /predict throughput on a GPU node
# (benchmarks/serve_load.py); its "direct ingress" part stays off, so that the HTTP proxy binds
# the host and port the serve config names. Both are read when Ray's workers start.
DEFAULT_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
               "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}


def apply_default_env() -> None:
    for key, value in DEFAULT_ENV.items():
        os.environ.setdefault(key, value)


# Ray 2.60 binds the GCS, raylet, object manager, workers and agents to the node's IP address,
# which on Linux is the machine's network address (reachable by anyone on the network, and with
# RAY_AUTH_MODE=disabled, able to run code). Ray uses the loopback address instead when it is
# told that clusters are off (the setting is meant for Windows and macOS laptops), and ray.init's
# own ``_node_ip_address="127.0.0.1"`` is turned back into the network address, so an embedded
# Ray gets the setting, in this process (Ray read it at import) and in the processes it starts.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Make a Ray started inside the block bind every port to 127.0.0.1 (restored afterwards, so
    that a later connection to a cluster in the same process gets the network address again)."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved_env


@contextlib.contextmanager
def ray_runtime(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    **init_kwargs,
) -> Iterator[None]:
    """Make Ray available for the block.

    Args:
        address: a cluster to connect to (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
            defaults to ``$RAY_ADDRESS``; ``None`` starts an embedded local Ray.
        num_cpus, num_gpus: resources of an embedded Ray (ignored when connecting).

    An embedded Ray binds every port (GCS, raylet, object manager, workers, agents, dashboard)
    to 127.0.0.1: with ``RAY_AUTH_MODE=disabled`` nobody else on the network may reach it. A
    multi-node cluster (``microforge cluster``) is reached with ``address`` and should run with
    ``--ray-auth token``.
    """
    import ray

    apply_default_env()
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        log.info("connecting to Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True, **init_kwargs)
    else:
        init_kwargs.setdefault("include_dashboard", False)
        if not init_kwargs["include_dashboard"]:
            # Without a dashboard, Ray Train's placement-group cleaner would query the State API
            # at the default 127.0.0.1:8265, which may be another user's Ray on a shared node,
            # and tear down our training workers; point it at a closed port instead.
            os.environ.setdefault("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9")
            # ...where it then warns every few seconds for the whole run: silence that logger.
            init_kwargs.setdefault("runtime_env", {"worker_process_setup_hook": QUIET_WORKER_HOOK})
        else:
            init_kwargs.setdefault("dashboard_host", "127.0.0.1")
        # One embedded node is never drained for preemption, so Ray Train's preemption watcher has
        # nothing to watch; it would only log an "E ... PreemptionWatcher ... max_restarts > 0"
        # line at every launch. Its workers inherit this environment.
        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
        # Every port of an embedded Ray on 127.0.0.1 (see loopback_only); no client server starts.
        with loopback_only():
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **init_kwargs)
    try:
        yield
    finally:
        ray.shutdown()


PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"  # Ray Train's switch for it (default on)

# Ray Train's placement-group cleaner without a dashboard (see ray_runtime); our own
# release_orphaned_placement_groups does its job.
QUIET_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)
QUIET_WORKER_HOOK = "microforge.platform.runtime.quiet_worker_logs"


def quiet_worker_logs() -> None:
    """The embedded Ray's ``worker_process_setup_hook``: only errors from :data:`QUIET_LOGGERS`."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


ACTOR_START_S = 900  # the longest a job waits for its actors to load their models


def single_stage(dataset: Any, *, actors: bool = False) -> Any:
    """``dataset`` (a Ray Data dataset) set to run its one map stage on every worker at once.

    Ray Data reserves part of the cluster for each operator and, for a job of chunks read from
    the driver and one map stage, ran that stage on one worker for its first second or so (8
    tasks of 0.3 s on 2 CPUs took 2.4 s, 1.4 s without the reservation): a large share of a
    dataset job's time at the sizes users start with. A single stage needs no reservation.

    ``actors``: the stage is an actor pool; no chunk is handed out before every actor has
    started (loaded its model), or the first actor up queues chunks while the others load.
    """
    dataset.context.op_resource_reservation_enabled = False
    if actors:
        dataset.context.wait_for_min_actors_s = ACTOR_START_S
    return dataset


def cpus_left_for_training(cluster_cpus: float) -> float:
    """The cluster's CPUs less :data:`DATA_CPU_RESERVE` (the one CPU-reserve rule of training
    workers and Tune trials)."""
    return cluster_cpus - DATA_CPU_RESERVE


def release_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creator actor is dead; returns how many.

    Works around Ray 2.60 leaving the placement group of a Ray Train controller reserved after
    the controller died with its Tune trial (a trial stopped by the scheduler, or an interrupted
    search): Ray Train's own cleaner finds dead controllers through the State API, which needs
    the dashboard and one Ray per machine, so without them the reserved CPUs/GPUs would starve
    the next trials until the driver exits. The public ``placement_group_table`` omits the
    creator, so this reads Ray's internal GCS table; any failure is logged and ignored, leaving
    the groups to Ray's own cleanup.
    """
    try:
        import ray
        from ray._private.state import state
        from ray.core.generated import gcs_pb2
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        job_id = ray.get_runtime_context().get_job_id()
        removed = 0
        for raw in state._connect_and_get_accessor().get_placement_group_table():
            data = gcs_pb2.PlacementGroupTableData.FromString(raw)
            creator = data.creator_actor_id  # empty or nil for the driver's own (Tune's trial) groups
            created_by_actor = len(creator) == ray.ActorID.size() and not ray.ActorID(creator).is_nil()
            if (data.state == gcs_pb2.PlacementGroupTableData.CREATED and created_by_actor and data.creator_actor_dead
                    and not data.is_detached and data.creator_job_id.hex() == job_id):
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(data.placement_group_id)))
                removed += 1
        if removed:
            log.info("released %d placement group(s) of stopped trials", removed)
        return removed
    except Exception as exc:  # an internal API: never let it break a search
        log.debug("cannot release orphaned placement groups: %s", exc)
        return 0
