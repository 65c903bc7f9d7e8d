"""The parts of ``benchmarks/smollm2_compare.py``, one concept a module.

settings (names, sizes, flags) -> data (model, batches) -> search / torch_pruning_baseline
(one method at one budget) and scoring (gradnas scoring vs a plain backward, in child
processes) -> run (every method at every budget, then variants) -> targets, report,
protocol_text, plot (pure functions of the results dict). provenance records the machine and
the protocol. The script puts ``benchmarks/`` on ``sys.path``, so this is the top-level
package ``compare``; its modules import each other relatively, never from this file.
"""
