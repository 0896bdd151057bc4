"""The Serve application: the ``Ingress`` deployment, the application builder, and ``serve up``.

Deploy on an existing cluster with the builder::

    serve run microforge.serve.app:app_builder config=serve.yaml data_root=/data models_dir=/models

(``serve run`` binds HTTP where ``serve start``/the cluster's Serve config says; ``host`` and
``port`` in serve.yaml apply to ``microforge serve up`` only.)
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable, Mapping

from ray import serve
from ray.serve import Application

from . import deployments
from .config import ServeConfig, load_serve_config
from .state import get_state, kill_state
from .tasks import INGRESS, TASKS, initial_selection

log = logging.getLogger(__name__)

APP_NAME = "microforge"


@serve.deployment
@serve.ingress()
class Ingress:
    """The FastAPI ingress (built per replica by ``__serve_build_asgi_app__``, so that CORS, the
    token and limits come from this deployment's settings). ``handles``: one deployment handle
    per Serve task, by task name."""

    async def __init__(self, settings: dict[str, Any], **handles: Any) -> None:
        from .backend import Backend

        config = ServeConfig.from_settings(settings)
        from .detection import default_detector

        detector = default_detector(config.models_dir, config.default_models.get("detect"))
        state = get_state(config.state_actor, initial_selection({"detect": detector}))
        await state.ping.remote()
        self.backend = Backend(config, handles, state)

    def __serve_build_asgi_app__(self):
        from .api import create_api

        return create_api(self.backend)


def build_app(config: ServeConfig) -> Application:
    """Bind one deployment per Serve task (see :mod:`microforge.serve.tasks`) and the ingress,
    with their scaling options from ``config``.

    Raises:
        ConfigError: directories that overlap (see :meth:`ServeConfig.resolved`).
    """
    config = config.resolved()
    settings = config.settings()
    options = {name: d.serve_options() for name, d in config.deployments.items()}
    handles = {task.name: getattr(deployments, task.deployment).options(**options[task.deployment]).bind(settings)
               for task in TASKS}
    return Ingress.options(**options[INGRESS]).bind(settings, **handles)


def app_builder(args: Mapping[str, Any]) -> Application:
    """Application builder for ``serve run microforge.serve.app:app_builder key=value ...``.

    Keys: ``config`` (a YAML/JSON serve config) and any top-level ServeConfig field
    (``data_root``, ``models_dir``, ``segmentation_model``, ...), which override the file.
    """
    args = dict(args)
    return build_app(load_serve_config(args.pop("config", None), **args))


def shutdown_serve() -> None:
    """``serve.shutdown()`` without the line Ray prints on every clean stop, "(raylet) Task
    ServeController.graceful_shutdown failed. There are infinite retries remaining...": the
    controller kills itself once the applications and proxies are down, while that call still
    waits on it with the controller's unlimited retries. Made here with no retries, the call just
    ends when the controller does."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        controller = None  # no Serve running
    if controller is not None:
        try:
            ray.get(controller.graceful_shutdown.options(max_task_retries=0).remote(), timeout=60)
        except ray.exceptions.RayActorError:
            pass  # the controller ended: Serve is down
        except ray.exceptions.GetTimeoutError:
            log.warning("Serve did not shut down within 60 s")
    # Drops this process's Serve client; with the controller gone it would log that it found none.
    serve_log = logging.getLogger("ray.serve")
    level = serve_log.level
    serve_log.setLevel(logging.WARNING)
    try:
        serve.shutdown()
    finally:
        serve_log.setLevel(level)


def run_foreground(config: ServeConfig, address: str | None = None,
                   on_ready: Callable[[str], None] | None = None, stop: threading.Event | None = None) -> None:
    """Start Serve (and an embedded Ray unless ``address``), deploy, and block until Ctrl-C/SIGTERM
    (or ``stop``); then shut down Serve, the state actor and the Ray this call started.

    ``on_ready(url)`` is called once the application is running.
    """
    import ray

    from microforge.platform.runtime import ray_runtime

    stop = stop or threading.Event()
    config = config.resolved()
    application = build_app(config)  # validate before starting anything

    def request_stop(signum, _frame) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    with ray_runtime(address=address):
        # Installed after ray.init, which sets its own SIGTERM handler (one that aborts the process).
        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            serve.start(http_options={"host": config.host, "port": config.port})
            serve.run(application, name=APP_NAME, route_prefix="/")
            if on_ready is not None:
                on_ready(f"http://{config.host}:{config.port}/")
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutdown_serve()
            if ray.is_initialized():
                kill_state(config.state_actor)
