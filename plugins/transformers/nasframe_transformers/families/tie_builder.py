"""What every family's ``describe`` collects: the modules to convert, their dynamic
classes, and the hidden size's slots and the modules that write into the residual stream."""

from __future__ import annotations

from typing import Any

from nasframe.space.ties import SlotRef, TieAnalysis


class TieBuilder:
    """Collects the used modules, their converters and the hidden size's slots and writers."""

    def __init__(self) -> None:
        self.used: list[str] = []
        self.converters: dict[str, type] = {}
        self.hidden: list[SlotRef] = []
        self.writers: list[str] = []

    def use(self, name: str, converter: type) -> str:
        self.used.append(name)
        self.converters[name] = converter
        return name

    def hidden_slots(self, name: str, converter: type, *slots: str, writes: bool = False) -> str:
        self.use(name, converter)
        self.hidden += [(name, slot) for slot in slots]
        if writes:
            self.writers.append(name)
        return name

    def analysis(
        self,
        groups: list[list[SlotRef]],
        names: list[str],
        frozen: list[SlotRef],
        prefix: str,
        layers: str,
        **extra: Any,
    ) -> TieAnalysis:
        """The family's ties: its per-layer ``groups`` (named ``names``), then the hidden size
        (the residual stream, ``prefix + "hidden_size"``) and the depth of ``layers``."""
        groups = [*groups, self.hidden, [(layers, "depth")]]
        return TieAnalysis(
            groups,
            frozen,
            self.used,
            group_names=[*names, f"{prefix}hidden_size", f"{layers}.depth"],
            converters=self.converters,
            residual_streams={len(groups) - 2: self.writers},
            **extra,
        )
