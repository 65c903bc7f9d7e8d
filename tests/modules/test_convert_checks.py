"""``DynamicXxx.convert`` checks its argument with real exceptions, which ``python -O`` keeps:
a wrong module type is a TypeError, a supported type in an unsupported setup a user error."""

from __future__ import annotations

import subprocess
import sys

import pytest
from torch import nn

from nasframe.errors import UserInputError
from nasframe.modules.attention import DynamicMultiheadAttention
from nasframe.modules.depth import DynamicLayerList
from nasframe.modules.embedding import DynamicEmbedding
from nasframe.modules.linear import DynamicLinear
from nasframe.modules.norm import DynamicLayerNorm, DynamicRMSNorm

WRONG_TYPE = [
    (DynamicLinear, "Linear"),
    (DynamicEmbedding, "Embedding"),
    (DynamicLayerNorm, "LayerNorm"),
    (DynamicRMSNorm, "RMSNorm"),
    (DynamicMultiheadAttention, "MultiheadAttention"),
    (DynamicLayerList, "ModuleList"),
]


@pytest.mark.parametrize(("dynamic", "expected"), WRONG_TYPE)
def test_a_module_of_the_wrong_type_is_a_type_error(dynamic, expected: str) -> None:
    with pytest.raises(TypeError, match=rf"{dynamic.__name__}\.convert takes a {expected}, got "):
        dynamic.convert(nn.Conv1d(2, 2, 1))


@pytest.mark.parametrize(
    ("dynamic", "module"),
    [
        (DynamicLayerNorm, nn.LayerNorm((2, 3))),
        (DynamicRMSNorm, nn.RMSNorm((2, 3))),
        (DynamicMultiheadAttention, nn.MultiheadAttention(4, 2, add_bias_kv=True)),
        (DynamicMultiheadAttention, nn.MultiheadAttention(4, 2, add_zero_attn=True)),
        (DynamicMultiheadAttention, nn.MultiheadAttention(4, 2, kdim=3)),
    ],
)
def test_an_unsupported_setup_is_a_user_error_naming_what_is_needed(dynamic, module) -> None:
    with pytest.raises(UserInputError, match=r"cannot convert this .* it needs .*leave the "):
        dynamic.convert(module)


def test_the_checks_survive_python_dash_o() -> None:
    code = (
        "from torch import nn\n"
        "from nasframe.modules.linear import DynamicLinear\n"
        "from nasframe.modules.norm import DynamicLayerNorm\n"
        "from nasframe.errors import UserInputError\n"
        "assert False, 'asserts are on'\n"
        "try:\n"
        "    DynamicLinear.convert(nn.Embedding(3, 2))\n"
        "except TypeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no TypeError under -O')\n"
        "try:\n"
        "    DynamicLayerNorm.convert(nn.LayerNorm((2, 3)))\n"
        "except UserInputError:\n"
        "    print('checked')\n"
    )
    result = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "checked"
