"""Size, perplexity and speed of a search result's GGUF under the real llama.cpp, pruned and
dense, on this machine.

    python benchmarks/gguf_llama_cpp.py /tmp/g1-out [--threads 2]

OUT is the output directory of ``nasframe search`` (its ``gguf/model.gguf`` is the pruned
model); the dense model is the one the search started from, written by the same writer with
nothing pruned. Both are measured with ``llama-perplexity -c 256`` on the first 40,000
characters of the built-in evaluation text and ``llama-completion -n 128`` (tokens/s of
generation), from ``../shared/tools/llama.cpp``; one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

LLAMA_CPP = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "llama.cpp"


def run(program: str, *args: str) -> str:
    for _ in range(5):  # llama.cpp may lose the end of its log at exit (issue 22142): rerun
        done = subprocess.run(
            [str(LLAMA_CPP / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=True,
        )
        if "total time" in done.stderr or "Final estimate" in done.stderr + done.stdout:
            break
    return done.stdout + done.stderr


def measure(model: Path, text: Path, threads: int) -> dict:
    ppl = run(
        "llama-perplexity", "-m", str(model), "-f", str(text), "-c", "256", "-t", str(threads)
    )
    gen = run("llama-completion", "-m", str(model), "-p", "The module", "-n", "128", "--temp",
              "0", "-no-cnv", "--ignore-eos", "-t", str(threads))  # fmt: skip
    # the generation's own line, not "prompt eval time" (nor the "unaccounted time" formula)
    speed = re.search(r"(?<!prompt )eval time =[^\n]*?([0-9.]+) tokens per second", gen)
    return {
        "file": str(model),
        "bytes": model.stat().st_size,
        "perplexity": float(re.search(r"Final estimate: PPL = ([0-9.]+)", ppl).group(1)),
        "generate_tokens_per_s": float(speed.group(1)) if speed else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    summary = json.loads((out / "summary.json").read_text())
    from nasframe.app.model_registry import get_model_entry
    from nasframe.app.text import stdlib_corpus

    entry = get_model_entry(summary["settings"]["model"])
    with tempfile.TemporaryDirectory() as scratch:
        text = Path(scratch) / "eval.txt"
        text.write_text(stdlib_corpus().evaluation[:40_000], encoding="utf-8")
        dense = Path(scratch) / "dense.gguf"
        entry.save_gguf(entry.load_bundle(progress=False).model, dense, "f32")
        for name, model in (("pruned", out / "gguf" / "model.gguf"), ("dense", dense)):
            print(json.dumps({"model": name, **measure(model, text, args.threads)}))


if __name__ == "__main__":
    main()
