"""Driver used by the Slurm tests: report what the Ray cluster of the job looks like.

    python ray_probe.py REPORT.json [--hold] [-- COMMAND ...]

Connects to $RAY_ADDRESS, records the alive nodes and the nodes that pinned tasks ran on,
the auth settings it sees, then runs COMMAND (if any) and records which nodes ran the tasks
whose name contains ``_write_chunks`` (Ray Data's render tasks). With --hold it keeps one actor
on each node alive and sleeps, so a test can cancel the job while Ray is busy.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    report_path = argv[0]
    hold = "--hold" in argv[1:]
    command = argv[argv.index("--") + 1 :] if "--" in argv else []

    import ray

    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0.01)
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    # One task pinned to each node: every node that joined must also run work.
    pinned = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
              for n in nodes]
    task_nodes = sorted(set(ray.get(pinned)))
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    report = {
        "alive_nodes": [{"id": n["NodeID"], "ip": n["NodeManagerAddress"]} for n in nodes],
        "task_nodes": task_nodes,
        "ray_auth_mode": os.environ.get("RAY_AUTH_MODE"),
        "token_path": token_path,
        "token_mode": oct(stat.S_IMODE(os.stat(token_path).st_mode)) if token_path else None,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }

    if command:
        started = time.time()
        report["command_exit"] = subprocess.call(command)
        report["command_seconds"] = round(time.time() - started, 1)
        from ray.util.state import list_tasks

        # Task events reach the dashboard a second or so late: read them until they settle.
        render: list = []
        for _ in range(15):
            try:
                tasks = list_tasks(filters=[("state", "=", "FINISHED")], limit=10000, raise_on_missing_output=False)
            except Exception as exc:  # the dashboard's API server may still be starting
                report["render_task_nodes_error"] = repr(exc)
                time.sleep(2)
                continue
            found = [t for t in tasks if "_write_chunks" in t.name]
            if found and len(found) == len(render):
                break
            render = found
            time.sleep(1)
        report["render_tasks"] = [[t.name, t.node_id] for t in render]
        report["render_task_nodes"] = sorted({t.node_id for t in render if t.node_id})

    if hold:

        @ray.remote(num_cpus=0.01)
        class Holder:
            def node(self) -> str:
                return ray.get_runtime_context().get_node_id()

        holders = [Holder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
                   for n in nodes]
        report["holder_nodes"] = sorted(set(ray.get([h.node.remote() for h in holders])))

    tmp = report_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, indent=2)
    os.replace(tmp, report_path)
    print("probe report:", json.dumps(report), flush=True)
    if hold:
        while True:
            time.sleep(1)
    return int(report.get("command_exit", 0))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
