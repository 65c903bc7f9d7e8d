"""Importing nasframe changes nothing in torch: the CPU attention FLOP formulas are added to
torch's registry on the first ``count_flops``."""

from __future__ import annotations

import subprocess
import sys
import threading

import torch

from nasframe.cost import flops

CHECK = """
from torch.utils.flop_counter import flop_registry
before = dict(flop_registry)
import nasframe, nasframe.cost.flops, nasframe.cost.flop_model  # noqa: E401
assert dict(flop_registry) == before, "importing nasframe changed torch's flop registry"
import torch
from nasframe.cost.flops import count_flops

class Attend(torch.nn.Module):
    def forward(self, q):
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)

q = torch.randn(2, 4, 16, 8)
assert count_flops(Attend(), q)[0] == 2 * 4 * (2 * 2 * 16 * 16 * 8)
assert torch.ops.aten._scaled_dot_product_flash_attention_for_cpu in flop_registry
print("ok")
"""


def test_import_leaves_the_registry_alone_and_counting_registers() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_concurrent_first_calls_register_once(monkeypatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(flops, "_registered", False)
    monkeypatch.setattr(flops, "flop_registry", {})
    monkeypatch.setattr(flops, "register_flop_formula", lambda op: lambda formula: calls.append(op))
    threads = [threading.Thread(target=flops._register_missing_formulas) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 2  # the two CPU kernels, once each
    assert flops._registered
    assert torch.ops.aten._native_multi_head_attention in calls
