"""Registers fastnas with nasframe through the ``nasframe`` entry-point group."""

from fastnas.searcher import FastNASSearcher
from nasframe.hookspecs import hookimpl


@hookimpl
def nasframe_algorithms() -> dict[str, type]:
    return {"fastnas": FastNASSearcher}
