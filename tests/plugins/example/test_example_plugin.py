"""The example third-party plugin works through entry points alone, with no change to nasframe.

The plugin is "installed" without pip: a ``.dist-info`` folder with its entry points goes into
a temporary directory on ``sys.path`` (and on ``PYTHONPATH`` for the CLI subprocess), next to
the plugin's source directory. Everything is undone after this module's tests.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from gradnas.searcher import GradientBinarySearcher

from nasframe.api import convert, export
from nasframe.app.lm import ByteTokenizer, next_token_loss, token_batches
from nasframe.app.model_registry import model_entries
from nasframe.cost.cost_model import CostModel
from nasframe.plugins import reset_plugin_manager
from nasframe.space.dynamic import DynamicModule

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "nasframe-example-plugin"
SOURCE = EXAMPLE / "src"
ENTRY_POINTS = "[nasframe]\nexample = nasframe_example_plugin.plugin\n"
MODEL_NAME = "example-gated-lm"
TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen jugs. " * 30


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory holding the plugin's installed metadata (what pip would write)."""
    site = tmp_path_factory.mktemp("example-plugin-site")
    info = site / "nasframe_example_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nasframe-example-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


@pytest.fixture(scope="module", autouse=True)
def installed_example(example_site: Path):
    """The plugin is visible to this module's tests only; the plugin manager is rebuilt on
    the way in and on the way out."""
    paths = [str(example_site), str(SOURCE)]
    sys.path[:0] = paths
    importlib.invalidate_caches()
    reset_plugin_manager()
    GradientBinarySearcher.SETUP_GRADIENT_FUNC.reload()
    try:
        yield paths
    finally:
        for path in paths:
            sys.path.remove(path)
        importlib.invalidate_caches()
        reset_plugin_manager()
        GradientBinarySearcher.SETUP_GRADIENT_FUNC.reload()


def test_the_pyproject_declares_the_entry_point_the_fixture_installs() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project["name"] == "nasframe-example-plugin" and project["version"] == "0.1"
    assert project["entry-points"]["nasframe"] == {"example": "nasframe_example_plugin.plugin"}


def test_the_plugin_registers_its_module_type_setup_and_model() -> None:
    from nasframe_example_plugin import DynamicGatedMLP, GatedMLP, setup_gated_mlp

    from nasframe.plugins import registry

    assert registry("nasframe_dynamic_modules")[GatedMLP] is DynamicGatedMLP
    assert GradientBinarySearcher.SETUP_GRADIENT_FUNC[DynamicGatedMLP] is setup_gated_mlp
    assert MODEL_NAME in model_entries()


def _tiny_model(seed: int = 0, dtype=torch.float32):
    from nasframe_example_plugin import GatedByteLM

    torch.manual_seed(seed)
    return GatedByteLM(context=2, dim=16, hidden=24, layers=2).to(dtype)


def _batches(n: int = 4) -> list[torch.Tensor]:
    return token_batches(ByteTokenizer().encode(TEXT), seq_len=16, batch_size=4, max_batches=n)


def _loss64(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy in the model's dtype (next_token_loss upcasts only to fp32)."""
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())


def test_the_hidden_mask_sits_on_the_gated_product() -> None:
    """Mask gradient of hidden unit j = sum over positions of p_j * dL/dp_j, where
    p = silu(w_gate x) * w_up x is the gated product; checked by finite differences."""
    from nasframe_example_plugin import DynamicGatedMLP, setup_gated_mlp

    model = _tiny_model(dtype=torch.float64)
    convert(model)
    mlp = model.blocks[1].mlp
    assert isinstance(mlp, DynamicGatedMLP)
    manager, handle = setup_gated_mlp(mlp)
    assert manager.hparam is mlp.get_hparam("hidden") and manager.mask.shape == (24,)
    batch = _batches(1)[0]
    _loss64(model, batch).backward()
    gradient = manager.mask.grad.clone()
    manager.mask = manager.mask.detach().double()
    eps = 1e-6
    for unit in (0, 7, 23):
        losses = []
        for step in (eps, -eps):
            manager.mask[unit] = 1.0 + step
            with torch.no_grad():
                losses.append(_loss64(model, batch).item())
            manager.mask[unit] = 1.0
        quotient = (losses[0] - losses[1]) / (2 * eps)
        assert quotient == pytest.approx(gradient[unit].item(), rel=1e-4, abs=1e-8)
    handle.remove()
    assert not mlp.product._forward_hooks


def test_gradnas_scores_prunes_and_exports_the_new_module_type() -> None:
    from nasframe_example_plugin import DynamicGatedMLP, GatedMLP

    model = _tiny_model()
    with torch.no_grad():  # hidden unit 5 of block 0 writes nothing: it must score 0
        model.blocks[0].mlp.w_down[:, 5] = 0.0
    reference = copy.deepcopy(model)
    space = convert(model)
    assert all(isinstance(block.mlp, DynamicGatedMLP) for block in model.blocks)
    hidden = ["blocks.0.mlp.hidden", "blocks.1.mlp.hidden"]
    assert set(hidden) <= set(space.hparams)

    config = {"data_loader": _batches(), "loss_func": next_token_loss, "verbose": False}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = GradientBinarySearcher().search(space, "params=70%", config=config)
    assert not [w for w in caught if "no gradient setup" in str(w.message)]

    for name in hidden:
        scores = result.importance[name]
        assert scores.shape == (24,) and len(set(scores.tolist())) > 20
    block0 = result.importance["blocks.0.mlp.hidden"]
    assert block0[5].item() == 0.0 and (block0[[i for i in range(24) if i != 5]] > 0).all()
    assert result.cost_after <= result.limit
    assert any(result.config[name] < 24 for name in hidden)

    ids = _batches(1)[0][:, :-1]
    with torch.no_grad():
        dynamic_logits = model(ids)
        space.select(space.max_config())
        torch.testing.assert_close(model(ids), reference(ids))  # sorting changed no function
        space.select(result.config)
    pruned = export(space)
    assert not any(isinstance(m, DynamicModule) for m in pruned.modules())
    for block, name in zip(pruned.blocks, hidden, strict=True):
        assert isinstance(block.mlp, GatedMLP)
        assert block.mlp.w_gate.shape[0] == block.mlp.w_down.shape[1] == result.config[name]
    assert sum(p.numel() for p in pruned.parameters()) == CostModel(space).params()
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids), dynamic_logits)
    # block 0 was pruned, and its zero unit 5 was among the units pruned
    assert result.config["blocks.0.mlp.hidden"] < 24
    assert (pruned.blocks[0].mlp.w_down.abs().sum(dim=0) > 0).all()


def test_nasframe_search_cli_prunes_the_plugin_model(tmp_path: Path, installed_example) -> None:
    out = tmp_path / "out"
    env = dict(os.environ)
    # The plugin's metadata and source, then the repository (so nasframe imports from any cwd).
    env["PYTHONPATH"] = os.pathsep.join(
        [*installed_example, str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    # One intra-op thread: a model this small gains nothing from more, and a second thread
    # spinning on a busy shared machine makes the run many times slower.
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "nasframe",
        "search",
        "--algo",
        "gradnas",
        "--model",
        MODEL_NAME,
        "--constraint",
        "params=70%",
        "--out",
        str(out),
        "--quiet",
    ]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == MODEL_NAME and summary["algorithm"] == "gradnas"
    assert summary["params"]["after"] <= 0.70 * summary["params"]["before"]
    assert summary["search"]["cost_after"] <= summary["search"]["limit"]
    hidden = {name: hp for name, hp in summary["hparams"].items() if name.endswith(".hidden")}
    assert hidden and any(hp["kept"] < hp["max"] for hp in hidden.values())
    assert "gradnas on example-gated-lm" in done.stdout
