"""``run_main``: the ``nasframe`` command line run in-process, for the CLI and model-loading
tests (a plain function, since module-scoped fixtures and helpers call it too)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from nasframe.app.cli import main


def run_main(argv: Sequence[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr); argparse's exits count too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()
