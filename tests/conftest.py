"""Shared fixtures: one local Ray per test session, shut down at the end."""

import os
import signal

import pytest

from microforge.platform.runtime import apply_default_env

# Before anything imports Ray: the environment microforge gives every Ray it starts (an explicit
# RAY_AUTH_MODE, so a stray ~/.ray/auth_token cannot switch on token auth; Serve's data path).
apply_default_env()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The session Ray has no dashboard; keep Ray Train's cleaner off any other Ray's State API.
os.environ.setdefault("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9")

# A CI launcher may start us in the background with SIGINT ignored, and an ignored signal stays
# ignored in every child: the tests that press Ctrl-C on a subprocess need it handled here, so
# that children start with the default disposition (handlers reset on exec, SIG_IGN does not).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with exactly 2 CPUs, started once and shut down after the last test."""
    import ray

    from microforge.platform.runtime import ray_runtime

    # Started as every embedded Ray microforge starts: ports on the loopback only, no dashboard.
    with ray_runtime(num_cpus=2, configure_logging=False):
        yield ray


@pytest.fixture()
def state_home(tmp_path, monkeypatch):
    """An isolated $MICROFORGE_HOME."""
    home = tmp_path / "microforge-home"
    monkeypatch.setenv("MICROFORGE_HOME", str(home))
    return home
