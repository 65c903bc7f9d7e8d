"""What the decoder description finds, as data: the layout of the decoder, its layers and
their attention blocks, and the one-line error for whatever it does not understand."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from nasframe.errors import UserInputError
from nasframe_transformers.modules.swapped import has_only_sliceable_state, stated_width


@dataclass
class AttentionLayout:
    """An attention block: its path in the layer and its projections by role."""

    path: str
    roles: dict[str, str]
    head_dim: int
    heads: int
    kv_heads: int
    #: Fused projections: name -> sections (roles, in row order); empty when separate.
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The fused projection of [query, key, value] rows per head, "" when there is none.
    per_head: str = ""
    #: Norms over all heads' outputs at once (OLMo 2's q_norm/k_norm): removing a head
    #: would change how the others are normalised, so the heads stay whole.
    head_norms: tuple[str, ...] = ()

    @property
    def heads_prunable(self) -> bool:
        """Whether a head can be removed without changing what the others compute."""
        return not self.head_norms


@dataclass
class LayerLayout:
    """One decoder layer: attention, MLP projections (paths in the layer), hidden norms."""

    attention: AttentionLayout
    mlp_inputs: list[str]
    mlp_output: str
    mlp_width: int
    norms: list[str]
    #: MLP inputs that fuse the gate and up projections (rows: gate, then up).
    mlp_packed: list[str] = field(default_factory=list)
    #: Block ("attention" / "mlp") -> the norm its output passes through before the residual.
    post_norms: dict[str, str] = field(default_factory=dict)

    @property
    def mlp_container(self) -> str:
        """The MLP's module path in the layer (``"mlp."``), or "" when inline (OPT)."""
        parent = self.mlp_output.rpartition(".")[0]
        return f"{parent}." if parent else ""


@dataclass
class DecoderLayout:
    """The recognised decoder: paths from the model root."""

    base: str  # "" or "model." (with the dot)
    stack: str  # the layer list's attribute in the base model
    hidden: int
    embeddings: list[str]
    final_norms: list[str]
    heads: list[str]
    layers: list[LayerLayout]

    @property
    def stack_path(self) -> str:
        return f"{self.base}{self.stack}"


def not_understood(path: str, module: nn.Module, what: str) -> UserInputError:
    """The one-line error for a module the decoder description cannot express."""
    return UserInputError(
        f"nasframe's decoder description does not understand {path or 'the model'} "
        f"({type(module).__name__}): {what}; only standard decoder layers (attention with "
        "separate or fused q/k/v projections, a gated, gate/up-fused or two-matrix MLP, "
        "norms) can be pruned."
    )


def is_norm(module: nn.Module, size: int) -> bool:
    """A norm over ``size`` channels: a LayerNorm of that shape, or a module whose only
    parameters are vectors of that size (an RMSNorm of any formula), or a module without
    parameters whose ``normalized_shape`` is that size (OLMo's LayerNorm)."""
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape) == (size,)
    if isinstance(module, nn.Linear | nn.Embedding) or list(module.children()):
        return False
    if not any(True for _ in module.parameters()):
        return stated_width(module) == size
    return has_only_sliceable_state(module, size)


def leaves(module: nn.Module, hidden: int | None = None) -> list[tuple[str, nn.Module]]:
    """The submodules of ``module`` that hold parameters of their own, and (given the
    ``hidden`` size) the parameter-free norms over it: what the description must place."""
    return [
        (name, m)
        for name, m in module.named_modules()
        if name
        and (
            any(True for _ in m.parameters(recurse=False))
            or (hidden is not None and not list(m.children()) and is_norm(m, hidden))
        )
    ]
