"""``atomic_write_directory``: a model directory is replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasframe.io.atomic import atomic_write_directory


def write_files(**files: str):
    def write(directory: Path) -> None:
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")

    return write


def contents(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.iterdir())}


def test_a_new_directory_replaces_the_old_one_whole(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model"
    atomic_write_directory(target, write_files(**{"config.json": "old", "old.bin": "x"}))
    assert atomic_write_directory(target, write_files(**{"config.json": "new"})) == target
    assert contents(target) == {"config.json": "new"}  # no file of the old directory is left
    assert [p.name for p in target.parent.iterdir()] == ["model"]  # no temporary directory


def test_a_failed_write_keeps_the_old_directory_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "model"
    atomic_write_directory(target, write_files(**{"config.json": "old"}))

    def fail_halfway(directory: Path) -> None:
        (directory / "config.json").write_text("half", encoding="utf-8")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_directory(target, fail_halfway)
    assert contents(target) == {"config.json": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
