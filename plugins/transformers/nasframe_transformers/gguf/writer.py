"""Write an exported (plain) pruned model as one GGUF file that llama.cpp runs.

The steps: check the model maps onto llama.cpp (``layout``), write its hyperparameters
(``hparams``), the tokenizer of the model the search started from (``tokenizer``), then the
weights (``tensors``). The file is written to a temporary sibling and renamed, so an
interrupted export never leaves a truncated ``.gguf``.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from nasframe.errors import UserInputError
from nasframe.io.atomic import atomic_write
from nasframe_transformers.gguf.hparams import add_hparams
from nasframe_transformers.gguf.layout import check_supported, gguf_layout
from nasframe_transformers.gguf.tensors import add_tensors, check_dtype
from nasframe_transformers.gguf.tokenizer import add_directory_tokenizer, copy_gguf_tokenizer

# llama.cpp's file types (gguf.LlamaFileType) for the weight types nasframe writes.
FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32}


def write_gguf(
    model: nn.Module,
    path: str | os.PathLike,
    tokenizer_source: str | os.PathLike,
    dtype: str = "f32",
    name: str | None = None,
) -> Path:
    """Write ``model`` to ``path`` with the tokenizer of ``tokenizer_source`` (the GGUF file
    or model directory the unpruned model came from); raises :class:`UserInputError` with
    one sentence when llama.cpp cannot express the model."""
    import gguf

    check_dtype(dtype)
    config = check_supported(model)
    layout = gguf_layout(model)
    source = Path(tokenizer_source)
    if not source.exists():
        raise UserInputError(
            f"the model the search started from ({source}) is gone, and its GGUF needs that "
            "model's tokenizer; pass the model again with --source."
        )
    target = Path(path)

    def write(temporary: str) -> None:
        writer = gguf.GGUFWriter(temporary, layout.arch)
        writer.add_name(name or getattr(config, "model_type", "model"))
        writer.add_file_type(FILE_TYPES[dtype])
        rope_freqs = add_hparams(writer, config, layout)
        if source.is_dir():
            add_directory_tokenizer(writer, source, layout.vocab)
        else:
            copy_gguf_tokenizer(writer, source)
        add_tensors(writer, model, layout, dtype, rope_freqs)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic_write(target, write)
    return target
