"""Atomic writes give plain-``open`` modes without touching the process umask, which is
shared by every thread: concurrent writes all get the mode the umask implies."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

import nasframe.io.atomic as atomic


@pytest.fixture
def umask_forbidden(monkeypatch: pytest.MonkeyPatch) -> int:
    """The umask as it is (read once here), with ``os.umask`` failing from now on."""
    current = os.umask(0o022)
    os.umask(current)

    def forbidden(*_: object) -> int:
        raise AssertionError("os.umask changed the process-wide umask")

    monkeypatch.setattr(os, "umask", forbidden)
    return current


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_concurrent_writes_get_the_umask_mode(tmp_path: Path, umask_forbidden: int) -> None:
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for round_ in range(5):
                atomic.atomic_write_text(tmp_path / f"file{index}.txt", f"{index} {round_}")
                atomic.atomic_write_directory(
                    tmp_path / f"dir{index}",
                    lambda d, i=index: (d / "config.json").write_text(str(i)),
                )
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for index in range(8):
        assert mode(tmp_path / f"file{index}.txt") == 0o666 & ~umask_forbidden
        assert mode(tmp_path / f"dir{index}") == 0o777 & ~umask_forbidden
        assert (tmp_path / f"file{index}.txt").read_text() == f"{index} 4"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_the_mode_follows_a_umask_set_later(tmp_path: Path) -> None:
    """Nothing is cached at import: the kernel applies the umask of the moment."""
    previous = os.umask(0o077)
    try:
        atomic.atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "private.txt") == 0o600


def test_a_writer_that_replaces_the_file_still_gets_the_plain_mode(
    tmp_path: Path, umask_forbidden: int
) -> None:
    def replace_with_private(temporary: str) -> None:
        os.unlink(temporary)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(descriptor)

    atomic.atomic_write(tmp_path / "out.bin", replace_with_private)
    assert mode(tmp_path / "out.bin") == 0o666 & ~umask_forbidden
