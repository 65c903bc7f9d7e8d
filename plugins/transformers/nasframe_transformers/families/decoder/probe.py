"""Which norms a layer applies to a block's output before the residual add (sandwich norms).

The module tree says which norms a layer has, not where its forward applies them: Llama's
``post_attention_layernorm`` normalises the MLP's input, Gemma's normalises the attention's
output. The description needs to know because gradnas masks the hidden size on the modules
that write into the residual stream, and a sandwich norm, not the block, is that writer. One
forward of four tokens, with hooks on the first layer that are removed afterwards, shows it:
a norm whose input is the very tensor a block returned is that block's post-norm.
:func:`probe_forward` runs it (the fused-row probe, :mod:`.rows_probe`, runs it too).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nasframe_transformers.families.decoder.structure import DecoderLayout, not_understood


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def probe_forward(model: nn.Module, layout: DecoderLayout, length: int = 4) -> None:
    """One forward of the model on ``length`` tokens, in eval mode without gradients (hooks
    see what it computes); every module's mode is restored, and any failure is a one-line
    stop."""
    modes = {module: module.training for module in model.modules()}
    embedding = model.get_submodule(layout.embeddings[0])
    tokens = torch.arange(length, device=embedding.weight.device)[None] % embedding.num_embeddings
    try:
        model.eval()
        with torch.no_grad():
            model(input_ids=tokens)
    except Exception as error:  # any failure means the forward is not what we understand
        what = f"a forward that fails on {length} tokens ({error})"
        raise not_understood("", model, what) from error
    finally:
        for module, mode in modes.items():
            module.train(mode)


def find_post_norms(model: nn.Module, layout: DecoderLayout) -> dict[str, str]:
    """Block ("attention" / "mlp") -> the norm (path in the layer) applied to its output."""
    if not layout.layers:
        return {}
    first = layout.layers[0]
    layer = model.get_submodule(f"{layout.stack_path}.0")
    container = first.mlp_container.rstrip(".")
    blocks = {"attention": first.attention.path, "mlp": container or first.mlp_output}
    # The tensors themselves, not their ids: holding them keeps a freed id from being reused.
    outputs: dict[str, torch.Tensor] = {}
    inputs: dict[str, torch.Tensor] = {}
    handles = []

    def record_output(block: str):
        def hook(_: nn.Module, __: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is not None:
                outputs[block] = tensor

        return hook

    def record_input(norm: str):
        def hook(_: nn.Module, args: Any) -> None:
            tensor = _first_tensor(args)
            if tensor is not None:
                inputs.setdefault(norm, tensor)

        return hook

    for block, path in blocks.items():
        handles.append(layer.get_submodule(path).register_forward_hook(record_output(block)))
    for norm in first.norms:
        handles.append(layer.get_submodule(norm).register_forward_pre_hook(record_input(norm)))
    try:
        probe_forward(model, layout)
    finally:
        for handle in handles:
            handle.remove()
    return {
        block: norm
        for block in blocks
        for norm in first.norms
        if block in outputs and inputs.get(norm) is outputs[block]
    }
