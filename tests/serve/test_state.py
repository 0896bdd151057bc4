"""The shared state actor as the ingress replicas see it: the model selection each one caches."""

from __future__ import annotations

import asyncio
import time
import uuid

from microforge.serve.backend import Backend
from microforge.serve.state import get_state, kill_state
from microforge.serve.tasks import BUILTIN_ID, initial_selection


def test_a_selection_reaches_every_ingress_replica_at_once(ray_local, tmp_path):
    from .conftest import app_config

    name = f"test-state-{uuid.uuid4().hex[:8]}"
    config = app_config(tmp_path, 8000, name)  # never bound: no Serve here
    state = get_state(name, initial_selection())

    async def scenario() -> float:
        # Two ingress replicas' backends over the same actor; each holds its own copy.
        first, second = (Backend(config, {}, state) for _ in range(2))
        assert (await second.selection())["detector"] == BUILTIN_ID
        assert (await first.select("detector", "plugins/fixed-rod"))["detector"] == "plugins/fixed-rod"
        assert (await first.selection())["detector"] == "plugins/fixed-rod"  # its own change, at once
        began = time.monotonic()
        while (await second.selection())["detector"] != "plugins/fixed-rod":
            assert time.monotonic() - began < 5, "the other replica kept the old selection"
            await asyncio.sleep(0.01)
        waited = time.monotonic() - began
        await first.select("segmentation", "unet-tiny")
        while (await second.selection())["segmentation"] != "unet-tiny":
            await asyncio.sleep(0.01)
        assert (await second.selection())["detector"] == "plugins/fixed-rod"
        return waited

    try:
        # The long poll brings it, well before the poll's own 10 s timeout would.
        assert asyncio.run(scenario()) < 2.0
    finally:
        kill_state(name)
