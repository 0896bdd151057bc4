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
