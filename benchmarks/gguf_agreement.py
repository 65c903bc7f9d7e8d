"""Does llama.cpp run a search result as nasframe does? Greedy tokens and perplexity, same text.

    python benchmarks/gguf_agreement.py OUT [--threads 2]

OUT is the output directory of ``nasframe search`` on a GGUF-loaded model (the main job's
SmolLM2). For each weight type (f32, f16, bf16) the result is written with the project's GGUF
writer and compared with ``nasframe.load(OUT)`` in torch (float32):

- greedy continuation of a fixed prompt, 24 tokens: how many of nasframe's tokens
  llama-completion reproduces, counted on the text (the longest prefix of nasframe's decoded
  tokens that llama.cpp's text starts with);
- perplexity on the first 12,000 characters of the built-in *evaluation* text, with the
  windows llama-perplexity uses (``-c 256``, each window scoring its second half), in torch
  and in llama.cpp.

One JSON line per weight type. The binaries come from ``../shared/tools/llama.cpp``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

LLAMA_CPP = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "llama.cpp"
PROMPT = "def read_config(path):\n    "
TOKENS = 24
CONTEXT = 256
TEXT_CHARS = 12_000


def llama_cpp(program: str, *args: str, done: str) -> str:
    """Run a llama.cpp program; rerun while its log lacks ``done`` (llama.cpp may lose the
    end of its output at exit, issue 22142)."""
    for _ in range(5):
        run = subprocess.run(
            [str(LLAMA_CPP / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=True,
        )
        if done in run.stdout + run.stderr:
            break
    return run.stdout + run.stderr


def agreeing_tokens(decode, tokens: list[int], text: str) -> int:
    """How many of ``tokens`` (from the start) ``text`` reproduces."""
    agreeing = [n for n in range(len(tokens) + 1) if text.startswith(decode(tokens[:n]))]
    return max(agreeing, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import transformers
    from nasframe_transformers.loading import smollm2_gguf_path

    import nasframe
    from nasframe.app.exporting.parity import greedy, windowed_perplexity
    from nasframe.app.model_registry import get_model_entry
    from nasframe.app.text import stdlib_corpus

    out = Path(args.out)
    summary = json.loads((out / "summary.json").read_text())
    entry = get_model_entry(summary["settings"]["model"])
    gguf_file = smollm2_gguf_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name
    )
    model = nasframe.load(out).float().eval()
    prompt_ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    expected, _ = greedy(model, prompt_ids, TOKENS)
    text = stdlib_corpus().evaluation[:TEXT_CHARS]
    torch_ppl = windowed_perplexity(
        model, tokenizer(text, add_special_tokens=False)["input_ids"], CONTEXT
    )
    with tempfile.TemporaryDirectory() as scratch:
        text_file = Path(scratch) / "eval.txt"
        text_file.write_text(text, encoding="utf-8")
        for dtype in ("f32", "f16", "bf16"):
            path = Path(scratch) / f"{dtype}.gguf"
            entry.save_gguf(model, path, dtype)
            gen = llama_cpp("llama-completion", "-m", str(path), "-p", PROMPT, "-n",
                            str(TOKENS + 8), "--temp", "0", "-no-cnv", "--ignore-eos", "-t",
                            str(args.threads), "--no-warmup", done="\n\n")  # fmt: skip
            continuation = gen[gen.index(PROMPT) + len(PROMPT) :] if PROMPT in gen else ""
            ppl_log = llama_cpp("llama-perplexity", "-m", str(path), "-f", str(text_file),
                                "-c", str(CONTEXT), "-b", str(CONTEXT), "-t", str(args.threads),
                                done="Final estimate")  # fmt: skip
            llama_ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", ppl_log).group(1))
            print(
                json.dumps(
                    {
                        "dtype": dtype,
                        "bytes": path.stat().st_size,
                        "greedy_tokens_agreeing": agreeing_tokens(
                            tokenizer.decode, expected, continuation
                        ),
                        "greedy_tokens": TOKENS,
                        "perplexity_nasframe": round(torch_ppl, 4),
                        "perplexity_llama_cpp": llama_ppl,
                        "relative_difference": round(llama_ppl / torch_ppl - 1, 5),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
