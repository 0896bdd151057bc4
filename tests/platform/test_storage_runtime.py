import pytest

from microforge.platform.errors import MicroforgeError
from microforge.platform.storage import atomic_write_bytes, ensure_writable_dir, write_new_file


def test_atomic_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_write_new_file_never_replaces_a_file(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    first = write_new_file(tmp_path / "up" / "a.png", b"first")
    assert first == tmp_path / "up" / "a.png"
    with ThreadPoolExecutor(8) as pool:  # writers racing for the same name each get their own
        paths = list(pool.map(lambda i: write_new_file(tmp_path / "up" / "a.png", b"%d" % i), range(16)))
    assert len(set(paths)) == 16 and first not in paths
    assert sorted(p.name for p in paths) == sorted(f"a-{n}.png" for n in range(1, 17))
    assert first.read_bytes() == b"first"
    assert sorted(p.read_bytes() for p in paths) == sorted(b"%d" % i for i in range(16))
    assert sorted(f.name for f in (tmp_path / "up").iterdir()) == sorted(["a.png"] + [p.name for p in paths])


def test_write_new_file_without_hard_links(tmp_path, monkeypatch):
    import errno
    import os

    def no_links(*_):
        raise OSError(errno.EPERM, "hard links not supported")

    write_new_file(tmp_path / "a.png", b"first")
    monkeypatch.setattr(os, "link", no_links)
    assert write_new_file(tmp_path / "a.png", b"second") == tmp_path / "a-1.png"
    assert (tmp_path / "a.png").read_bytes() == b"first" and (tmp_path / "a-1.png").read_bytes() == b"second"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a-1.png", "a.png"]  # no temp file left


def test_ensure_writable_dir_creates_nothing_and_rejects_files(tmp_path):
    assert ensure_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(MicroforgeError, match="not a directory"):
        ensure_writable_dir(tmp_path / "f" / "x")


def test_ensure_writable_dir_rejects_read_only_location():
    # /proc refuses new entries even to root, unlike a chmod 500 directory.
    with pytest.raises(MicroforgeError, match="not writable"):
        ensure_writable_dir("/proc/microforge-test/out")


def test_ray_runtime_reuses_running_ray(ray_local):
    from microforge.platform.runtime import ray_runtime

    with ray_runtime():
        assert ray_local.is_initialized()
    assert ray_local.is_initialized()  # not shut down: the fixture started it


def test_embedded_ray_workers_silence_the_dashboardless_placement_group_cleaner(ray_local):
    import logging

    from microforge.platform.runtime import QUIET_LOGGERS

    @ray_local.remote
    def levels():
        return [logging.getLogger(name).getEffectiveLevel() for name in QUIET_LOGGERS]

    assert ray_local.get(levels.remote()) == [logging.ERROR] * len(QUIET_LOGGERS)


def test_embedded_ray_workers_start_ray_train_without_a_preemption_watcher(ray_local):
    """One embedded node is never drained: the watcher's only output was an error-looking line."""
    import os

    from microforge.platform.runtime import PREEMPTION_WATCHER_ENV

    @ray_local.remote
    def setting():
        return os.environ.get(PREEMPTION_WATCHER_ENV)

    assert ray_local.get(setting.remote()) == "0"


def test_files_and_folders_honour_the_umask(tmp_path):
    """Everything written through storage gets 0o666/0o777 less the umask (0644/0755 under 022),
    not mkstemp's 0600, so colleagues can read a lab's shared datasets."""
    import os
    import stat

    from microforge.platform.storage import atomic_replace_dir, atomic_write_text

    def mode(path):
        return stat.S_IMODE(os.stat(path).st_mode)

    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_text(tmp_path / "b.txt", "x")
        written = write_new_file(tmp_path / "up" / "c.png", b"x")
        again = write_new_file(tmp_path / "up" / "c.png", b"y")
        atomic_replace_dir(tmp_path / "ds", lambda d: (d / "f").write_bytes(b"x"))
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "group.bin", b"x")
    finally:
        os.umask(previous)
    assert [mode(p) for p in (tmp_path / "a.bin", tmp_path / "b.txt", written, again)] == [0o644] * 4
    assert mode(tmp_path / "ds") == 0o755 and mode(tmp_path / "ds" / "f") == 0o644
    assert mode(tmp_path / "group.bin") == 0o640


_LISTENERS = r"""
import ipaddress, json, sys
import ray, psutil  # psutil ships with Ray (importable once ray is)
from microforge.platform.runtime import ray_runtime

with ray_runtime(num_cpus=1, include_dashboard=sys.argv[1] == "dashboard"):
    ray.get(ray.remote(lambda: 1).remote())  # a worker process too
    found = []
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            found += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    print(json.dumps(found))
"""


@pytest.mark.parametrize("dashboard", ["no-dashboard", "dashboard"])
def test_embedded_ray_listens_on_loopback_only(tmp_path, dashboard):
    """An embedded Ray (its own, in a subprocess) binds no port on a network address: with
    RAY_AUTH_MODE=disabled, a reachable GCS would run anyone's code."""
    import ipaddress
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["RAY_AUTH_MODE"] = "disabled"  # explicit, as microforge sets it
    result = subprocess.run([sys.executable, "-c", _LISTENERS, dashboard], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    listeners = json.loads(result.stdout.strip().splitlines()[-1])
    names = {name for name, _, _ in listeners}
    assert {"gcs_server", "raylet"} <= names, listeners

    def loopback(ip: str) -> bool:
        address = ipaddress.ip_address(ip.split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        return address.is_loopback or (mapped is not None and mapped.is_loopback)

    exposed = [entry for entry in listeners if not loopback(entry[1])]
    assert not exposed, f"Ray ports on non-loopback addresses: {exposed}"
