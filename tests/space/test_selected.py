"""``SearchSpace.selected(config)``: a config inside the block, the previous one after it,
also when the block raises, and nested blocks each restore their enclosing config."""

from __future__ import annotations

import pytest
from torch import nn

from nasframe.errors import UserInputError
from nasframe.space.hparam import Hparam
from nasframe.space.search_space import SearchSpace


def space() -> SearchSpace:
    hparams = {"a": Hparam(4, [1, 2, 4], name="a"), "b": Hparam(3, name="b")}
    return SearchSpace(nn.Identity(), hparams)


def test_selects_inside_and_restores_after() -> None:
    s = space()
    s.select({"a": 2})
    with s.selected({"b": 1}):
        assert s.config() == {"a": 2, "b": 1}
    assert s.config() == {"a": 2, "b": 3}


def test_restores_when_the_block_raises() -> None:
    s = space()
    with pytest.raises(RuntimeError, match="inside"), s.selected({"a": 1, "b": 2}):
        raise RuntimeError("inside")
    assert s.config() == s.max_config()


def test_nested_blocks_restore_their_enclosing_config() -> None:
    s = space()
    with s.selected({"a": 1}):
        with s.selected({"b": 1}):
            assert s.config() == {"a": 1, "b": 1}
            with s.selected(s.max_config()):
                assert s.config() == s.max_config()
            assert s.config() == {"a": 1, "b": 1}
        assert s.config() == {"a": 1, "b": 3}
    assert s.config() == s.max_config()


def test_a_bad_config_raises_before_changing_anything() -> None:
    s = space()
    s.select({"a": 2})
    with pytest.raises(UserInputError), s.selected({"a": 1, "c": 1}):
        pass
    with pytest.raises(UserInputError), s.selected({"b": 2, "a": 3}):
        pass
    assert s.config() == {"a": 2, "b": 3}
