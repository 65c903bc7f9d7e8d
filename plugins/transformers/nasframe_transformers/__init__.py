"""Hugging Face transformers support for nasframe (a plugin, like any third party's).

Llama-style decoders (Llama, Mistral, Qwen2) get their FFN width per layer as a searchable
dimension, described directly rather than traced (transformers 5 models are not
torch.fx-traceable). Pruned models export to a standard model directory that plain
transformers loads (same width in every layer) or to a nasframe directory (per-layer widths).
Importing this package does not import transformers; using it does.
"""

from nasframe_transformers.export import clean_config_dict, save_pretrained_pruned
from nasframe_transformers.families.llama import LLAMA_STYLE_MODEL_TYPES
from nasframe_transformers.families.llama import describe_ties as describe_llama_ties

__all__ = [
    "LLAMA_STYLE_MODEL_TYPES",
    "clean_config_dict",
    "describe_llama_ties",
    "save_pretrained_pruned",
]
