"""Discover which module dimensions must shrink together, from the model's torch.fx graph.

Every tensor's last dimension gets a symbol. A Linear's input symbol is its ``in_features``
slot, its output a fresh symbol for ``out_features``; activations, dropout and norms pass a
symbol through; an elementwise add or multiply of two tensors unites their symbols (a residual
stream, a SwiGLU gate). Any operation nasframe does not understand (a reshape, a matmul, a
concatenation, the model's inputs and outputs) *freezes* the symbols it touches. Each group of
united slots that is not frozen becomes one hparam, so a tied dimension is never half pruned.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from nasframe.errors import UserInputError

SlotRef = tuple[str, str]  # (module name, slot name)

_ELEMENTWISE_UNARY_FUNCTIONS = {
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.exp,
    torch.neg,
    torch.abs,
    torch.square,
    torch.sqrt,
    torch.rsqrt,
    operator.neg,
    operator.pos,
    nn.functional.relu,
    nn.functional.gelu,
    nn.functional.silu,
    nn.functional.sigmoid,
    nn.functional.tanh,
    nn.functional.dropout,
    nn.functional.leaky_relu,
    nn.functional.elu,
    nn.functional.mish,
    nn.functional.softplus,
    nn.functional.hardswish,
    nn.functional.relu6,
}
_ELEMENTWISE_BINARY_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.imul,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
}
_ELEMENTWISE_UNARY_METHODS = {
    "relu",
    "sigmoid",
    "tanh",
    "exp",
    "neg",
    "abs",
    "square",
    "sqrt",
    "rsqrt",
    "contiguous",
    "float",
    "half",
    "bfloat16",
    "double",
    "to",
    "type_as",
    "clone",
    "detach",
}
_ELEMENTWISE_BINARY_METHODS = {"add", "sub", "mul", "div", "add_", "mul_"}


@dataclass
class TieAnalysis:
    """Result of tie discovery: groups of slots that form one hparam each."""

    groups: list[list[SlotRef]]
    frozen_slots: list[SlotRef]
    used_modules: list[str]
    unsupported: dict[str, str] = field(default_factory=dict)  # module name -> type name
    # Optional hparam name per group (same order); a family plugin names its dimensions
    # ("model.layers.0.mlp.intermediate_size"), traced groups are named after their producer.
    group_names: list[str] = field(default_factory=list)
    # Optional dynamic class per module name, for types no plugin registers globally (a family
    # plugin's classes, built only once its library is imported).
    converters: dict[str, type] = field(default_factory=dict)
    # Residual streams: group index -> the modules whose outputs are added into the stream.
    # gradnas masks a stream on those writes (one mask), not on each reader.
    residual_streams: dict[int, list[str]] = field(default_factory=dict)
    # hparam name -> sizes must be multiples of this for a same-size-every-layer result to be
    # expressible in the family's plain config (a hidden size divisible by any head count).
    uniform_multiples: dict[str, int] = field(default_factory=dict)
    # hparam names a uniform search keeps at full size (their sizes interact in ways the plain
    # config cannot express, e.g. GPT-2's n_embd == n_head * head_dim).
    uniform_fixed: list[str] = field(default_factory=list)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.frozen: list[bool] = []

    def new(self, frozen: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.frozen.append(frozen)
        return len(self.parent) - 1

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.frozen[ra] = self.frozen[ra] or self.frozen[rb]
        return ra

    def freeze(self, x: int) -> None:
        self.frozen[self.find(x)] = True

    def is_frozen(self, x: int) -> bool:
        return self.frozen[self.find(x)]


class _LeafTracer(fx.Tracer):
    def __init__(self, leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return isinstance(module, self.leaf_types) or super().is_leaf_module(module, qualname)


def trace(model: nn.Module, leaf_types: tuple[type, ...]) -> fx.Graph:
    """The fx graph of ``model`` with ``leaf_types`` kept as single calls."""
    try:
        return _LeafTracer(leaf_types).trace(model)
    except Exception as error:  # fx raises many types; all mean "not traceable"
        raise UserInputError(
            f"torch.fx could not trace {type(model).__name__} ({type(error).__name__}: {error}); "
            "make its forward traceable or install a nasframe plugin that describes this model "
            "family's search space."
        ) from error


def _bind(module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    try:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
    except TypeError:
        return {}
    return dict(bound.arguments)


def dynamic_class_for(module: nn.Module, dynamic_types: Mapping[type, type]) -> type | None:
    """The registered dynamic class for ``module`` (most specific type), if it supports it."""
    for cls in type(module).__mro__:
        if cls in dynamic_types:
            dynamic = dynamic_types[cls]
            # A subclass with its own forward computes something the dynamic version would
            # not (a LoRA or casting Linear): it stays a plain module at full size.
            same_forward = type(module).forward is cls.forward
            return dynamic if same_forward and dynamic.supports(module) else None
    return None


def analyse_ties(
    model: nn.Module,
    dynamic_types: Mapping[type, type],
    passthrough_types: tuple[type, ...],
) -> TieAnalysis:
    """Trace ``model`` and group the slots of convertible modules into tied dimensions."""
    leaf_types = tuple(dynamic_types) + passthrough_types
    graph = trace(model, leaf_types)
    modules = dict(model.named_modules())
    uf = _UnionFind()
    symbol: dict[fx.Node, Any] = {}  # node -> symbol id, or tuple of ids for tuple outputs
    slot_symbol: dict[SlotRef, int] = {}
    used: list[str] = []
    unsupported: dict[str, str] = {}

    def dynamic_class(module: nn.Module) -> type | None:
        return dynamic_class_for(module, dynamic_types)

    def tensor_symbols(value: Any) -> list[int]:
        found: list[int] = []
        fx.node.map_arg(value, lambda n: found.append(symbol[n]) if n in symbol else None)
        flat: list[int] = []
        for item in found:
            flat.extend(item if isinstance(item, tuple) else [item])
        return flat

    def freeze_all(*values: Any) -> None:
        for sym in tensor_symbols(values):
            uf.freeze(sym)

    def attach(ref: SlotRef, sym: int) -> None:
        if ref in slot_symbol:
            uf.union(slot_symbol[ref], sym)
        else:
            slot_symbol[ref] = sym

    def single(value: Any) -> int | None:
        return symbol.get(value) if isinstance(value, fx.Node) else None

    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            symbol[node] = uf.new(frozen=True)
            if node.op == "get_attr":
                # A parameter used outside its module: that module's slots must stay whole.
                owner = node.target.rpartition(".")[0]
                if owner in modules and dynamic_class(modules[owner]) is not None:
                    for slot in dynamic_class(modules[owner]).SLOTS:
                        attach((owner, slot), symbol[node])
        elif node.op == "output":
            freeze_all(node.args)
        elif node.op == "call_module":
            module = modules[node.target]
            cls = dynamic_class(module)
            if cls is not None:
                used.append(node.target)
                arguments = _bind(module, node.args, node.kwargs)
                mapped = set()
                for arg_name, slot in cls.TRACE_INPUTS:
                    sym = single(arguments.get(arg_name))
                    mapped.add(arg_name)
                    if slot is not None:  # an input nasframe cannot follow freezes its slot
                        attach((node.target, slot), sym if sym is not None else uf.new(True))
                freeze_all([v for k, v in arguments.items() if k not in mapped])
                outputs = cls.TRACE_OUTPUT
                if isinstance(outputs, tuple):
                    symbol[node] = tuple(uf.new(frozen=s is None) for s in outputs)
                    for slot, sym in zip(outputs, symbol[node], strict=True):
                        if slot is not None:
                            attach((node.target, slot), sym)
                else:
                    symbol[node] = uf.new(frozen=outputs is None)
                    if outputs is not None:
                        attach((node.target, outputs), symbol[node])
            elif isinstance(module, passthrough_types) and isinstance(
                single(node.args[0] if node.args else None), int
            ):
                symbol[node] = symbol[node.args[0]]
            else:
                freeze_all(node.args, node.kwargs)
                symbol[node] = uf.new(frozen=True)
                if not list(module.children()) and any(True for _ in module.parameters()):
                    unsupported.setdefault(node.target, type(module).__name__)
        else:  # call_function / call_method
            symbol[node] = _propagate(node, symbol, uf, freeze_all, tensor_symbols)

    # Every slot of a used module exists even if tracing never touched it (e.g. no bias).
    for name in used:
        for slot in dynamic_class(modules[name]).SLOTS:
            if (name, slot) not in slot_symbol:
                slot_symbol[(name, slot)] = uf.new(frozen=False)

    groups: dict[int, list[SlotRef]] = {}
    frozen: list[SlotRef] = []
    for ref, sym in slot_symbol.items():
        if uf.is_frozen(sym):
            frozen.append(ref)
        else:
            groups.setdefault(uf.find(sym), []).append(ref)
    return TieAnalysis(list(groups.values()), frozen, list(dict.fromkeys(used)), unsupported)


def _propagate(node: fx.Node, symbol, uf: _UnionFind, freeze_all, tensor_symbols) -> int:
    """Symbol of a function/method call's output; freezes what it cannot follow."""
    target, args = node.target, node.args
    if target is operator.getitem and isinstance(symbol.get(args[0]), tuple):
        index = args[1]
        return symbol[args[0]][index] if isinstance(index, int) else uf.new(frozen=True)
    if node.op == "call_method":
        unary, binary = target in _ELEMENTWISE_UNARY_METHODS, target in _ELEMENTWISE_BINARY_METHODS
    else:
        unary, binary = (
            target in _ELEMENTWISE_UNARY_FUNCTIONS,
            target in _ELEMENTWISE_BINARY_FUNCTIONS,
        )
    first = args[0] if args else None
    first_symbol = symbol.get(first) if isinstance(first, fx.Node) else None
    if unary and isinstance(first_symbol, int):
        freeze_all(args[1:], node.kwargs)
        return first_symbol
    tensors = [a for a in args if isinstance(a, fx.Node)]
    if binary and len(args) == 2 and tensors and not tensor_symbols(node.kwargs):
        symbols = [symbol.get(a) for a in tensors]
        if all(isinstance(s, int) for s in symbols):
            result = symbols[0]
            for other in symbols[1:]:
                result = uf.union(result, other)
            return result
    freeze_all(args, node.kwargs)
    return uf.new(frozen=True)
