"""gradnas gates that rebuild what the mask gradients read (``gradnas.gates``,
``gradnas.rebuild``) give the scores of the plain multiplications they replaced, and keep
less for backward: on a tiny Llama no more than a frozen forward pass with one mask.

The reference is the previous implementation itself (plain ``x * m`` hooks, copied below),
put in place of the current setups for one scoring run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from gradnas import searcher as searcher_module
from gradnas.data_manager import GradientDataManager
from gradnas.gates import gate
from gradnas.rebuild import held, keeping_activations, plan_for
from gradnas.searcher import GradientBinarySearcher
from gradnas.setups import Handles, _first_tensor, _replace_first

from nasframe.api import convert
from nasframe.app.byte_mlp import ByteMLPLM
from nasframe.app.lm import next_token_loss
from nasframe.modules.depth import DynamicLayerList
from nasframe.modules.linear import DynamicLinear

transformers = pytest.importorskip("transformers")

from hf_models import decoders, gpt2, llama  # noqa: E402

# ---- the previous setups: plain multiplications, which keep what they multiply ----------


def _old_linear_input(module: DynamicLinear) -> Any:
    hparam = module.get_hparam("in_features")
    if hparam is None or getattr(hparam, "is_residual_stream", False):
        return None
    manager = GradientDataManager(hparam.max, module)
    manager.hparam = hparam

    def gate_input(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]):
        if args:
            x = args[0]
            return (x * manager.mask.to(x.dtype), *args[1:]), kwargs
        x = kwargs["input"]
        return args, {**kwargs, "input": x * manager.mask.to(x.dtype)}

    return manager, module.register_forward_pre_hook(gate_input, with_kwargs=True)


def _old_layer_gates(module: DynamicLayerList) -> Any:
    hparam = module.get_hparam("depth")
    if hparam is None:
        return None
    manager = GradientDataManager(hparam.max, module)
    manager.hparam = hparam
    handles = []
    for position, layer in enumerate(module.unit_modules("depth")):

        def hook(_: Any, args: tuple, kwargs: dict, output: Any, position: int = position) -> Any:
            x = args[0] if args else kwargs["hidden_states"]
            y = _first_tensor(output)
            m = manager.mask[position].to(y.dtype)
            return _replace_first(output, x + m * (y - x))

        handles.append(layer.register_forward_hook(hook, with_kwargs=True))
    return manager, Handles(handles)


def _old_residual_stream(model: torch.nn.Module, hparam: Any, writers: list[str]) -> Any:
    manager = GradientDataManager(hparam.max, model)
    manager.hparam = hparam

    def scale(_: Any, __: Any, output: Any) -> Any:
        y = _first_tensor(output)
        return _replace_first(output, y * manager.mask.to(y.dtype))

    handles = [model.get_submodule(name).register_forward_hook(scale) for name in writers]
    return manager, Handles(handles)


@contextmanager
def _previous_setups() -> Iterator[None]:
    registry = GradientBinarySearcher.SETUP_GRADIENT_FUNC
    current = searcher_module.setup_residual_stream
    registry[DynamicLinear] = _old_linear_input
    registry[DynamicLayerList] = _old_layer_gates
    searcher_module.setup_residual_stream = _old_residual_stream
    try:
        yield
    finally:
        del registry[DynamicLinear], registry[DynamicLayerList]
        searcher_module.setup_residual_stream = current


# ---- scoring, and what it keeps for backward ----------------------------------------------


def _saved_bytes_counter(model: torch.nn.Module) -> tuple[Callable, dict[int, int]]:
    """A loss that records the unique non-parameter storages autograd keeps for backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def loss(m: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            return next_token_loss(m, batch)

    return loss, saved


def _score(model: torch.nn.Module, batches: list[torch.Tensor]) -> tuple[dict, int]:
    """gradnas scores of ``model`` on ``batches`` and the bytes kept for the first batch."""
    loss, saved = _saved_bytes_counter(model)
    kept: list[int] = []

    def first_batch_loss(m: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        saved.clear()
        value = loss(m, batch)
        kept.append(sum(saved.values()))
        return value

    searcher = GradientBinarySearcher()
    searcher.space = convert(model)
    searcher.configure(
        {
            "data_loader": batches,
            "loss_func": first_batch_loss,
            "max_iter_data_loader": len(batches),
            "verbose": False,
        }
    )
    return searcher.compute_importance(searcher.hparam_names_for_search()), kept[0]


def _byte_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return ByteMLPLM().eval()  # the byte-mlp model's shape, random weights


def _byte_batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    return [torch.randint(0, 256, (3, 12), generator=generator) for _ in range(3)]


MODELS = {
    "llama": (lambda: llama.tiny_model("llama"), lambda: [llama.ids(1), llama.ids(2)]),
    "byte-mlp": (_byte_mlp, _byte_batches),
    "gpt2": (gpt2.tiny_model, lambda: [gpt2.ids(1), gpt2.ids(2)]),
    "opt": (lambda: decoders.tiny_model("opt"), lambda: [decoders.ids(1), decoders.ids(2)]),
    "qwen3": (lambda: decoders.tiny_model("qwen3"), lambda: [decoders.ids(1), decoders.ids(2)]),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_scores_equal_the_plain_multiplications_and_less_is_kept(name: str) -> None:
    build, batches = MODELS[name]
    with _previous_setups():
        before, kept_before = _score(build(), batches())
    after, kept_after = _score(build(), batches())
    assert after.keys() == before.keys() and after
    for hparam, scores in before.items():
        torch.testing.assert_close(after[hparam], scores, rtol=1e-6, atol=0, msg=hparam)
    assert kept_after <= kept_before
    if name in ("llama", "byte-mlp"):  # a SwiGLU or GELU FFN and leaf residual writers
        assert kept_after < kept_before


def test_keeping_activations_gives_the_same_scores() -> None:
    rebuilt, _ = _score(llama.tiny_model("llama"), [llama.ids(1)])
    with keeping_activations():
        kept, _ = _score(llama.tiny_model("llama"), [llama.ids(1)])
    for hparam, scores in kept.items():
        assert torch.equal(rebuilt[hparam], scores), hparam


def test_a_llama_keeps_no_more_than_a_frozen_forward_pass_with_one_mask() -> None:
    """What the loss alone needs (weights frozen, one mask on the embedding output): every
    gated activation is rebuilt (the SwiGLU products, o_proj and down_proj outputs, the
    layers' outputs), none is kept on top."""
    model = llama.tiny_model("llama")
    for p in model.parameters():
        p.requires_grad_(False)
    mask = torch.ones(model.config.hidden_size, requires_grad=True)
    handle = model.get_input_embeddings().register_forward_hook(lambda _, __, out: out * mask)
    loss, saved = _saved_bytes_counter(model)
    loss(model, llama.ids(1)).backward()
    handle.remove()
    for p in model.parameters():
        p.requires_grad_(True)
    _, kept = _score(model, [llama.ids(1)])
    assert kept <= sum(saved.values())


def test_a_gate_rebuilds_a_product_and_refuses_one_modified_in_place() -> None:
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    mask = torch.ones(4, requires_grad=True)
    product = a * b
    assert plan_for(product) is not None  # both factors are kept by the multiplication
    out = gate(product, mask)
    (out * torch.arange(12.0).view(3, 4)).sum().backward()
    expected = (product.detach() * torch.arange(12.0).view(3, 4)).sum(0)
    assert torch.equal(mask.grad, expected)

    x = torch.randn(5)
    plan = held(x)
    x.add_(1)
    with pytest.raises(RuntimeError, match="modified in place"):
        plan()


def test_a_tensor_nothing_keeps_has_no_plan() -> None:
    weight = torch.randn(4)  # frozen: a product with it keeps only the weight
    x = torch.randn(2, 4, requires_grad=True)
    assert plan_for(x * weight) is None
    assert plan_for(x.t().contiguous().t()) is None  # not contiguous


def test_a_retained_graph_rebuilds_again_for_a_second_backward() -> None:
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    mask = torch.ones(4, requires_grad=True)
    loss = gate(a * b, mask).sum()
    loss.backward(retain_graph=True)
    first = mask.grad.clone()
    loss.backward()
    assert torch.equal(mask.grad, 2 * first)
