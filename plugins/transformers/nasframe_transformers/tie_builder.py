"""What every family's ``describe_ties`` collects: the modules to convert, their dynamic
classes, and the hidden size's slots and the modules that write into the residual stream."""

from __future__ import annotations

from nasframe.ties import SlotRef


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
