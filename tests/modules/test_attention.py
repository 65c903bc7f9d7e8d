"""DynamicMultiheadAttention: exactly nn.MultiheadAttention at full size; heads prune and export."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from models import AttentionOnly, TransformerLM, input_for, seeded
from torch import nn

import nasframe
from nasframe import DynamicModule, convert, export
from nasframe.modules.attention import DynamicMultiheadAttention, SlimMultiheadAttention

EMBED, HEADS, BATCH, TARGET, SOURCE = 8, 2, 3, 4, 5


def close(actual, expected) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def make_masks(kind: str, generator: torch.Generator):
    """``(attn_mask, key_padding_mask)``; no query row is ever fully masked."""
    allowed = torch.ones(TARGET, SOURCE, dtype=torch.bool).tril(diagonal=1)
    padding = torch.zeros(BATCH, SOURCE, dtype=torch.bool)
    padding[0, -2:] = True
    padding[2, -1] = True
    float_2d = torch.randn(TARGET, SOURCE, generator=generator)
    float_3d = torch.randn(BATCH * HEADS, TARGET, SOURCE, generator=generator)
    bool_3d = torch.rand(BATCH * HEADS, TARGET, SOURCE, generator=generator) < 0.3
    bool_3d[..., 0] = False
    return {
        "none": (None, None),
        "bool": (~allowed, None),
        "float": (float_2d, None),
        "bool-3d": (bool_3d, None),
        "float-3d": (float_3d, None),
        "padding": (None, padding),
        "bool+padding": (~allowed, padding),
        "float+float-padding": (float_2d, torch.zeros(BATCH, SOURCE).masked_fill(padding, -1e4)),
    }[kind]


def qkv(batch_first: bool, generator: torch.Generator):
    query = torch.randn(BATCH, TARGET, EMBED, generator=generator)
    key = torch.randn(BATCH, SOURCE, EMBED, generator=generator)
    value = torch.randn(BATCH, SOURCE, EMBED, generator=generator)
    if not batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    return query, key, value


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize(
    "masks",
    [
        "none",
        "bool",
        "float",
        "bool-3d",
        "float-3d",
        "padding",
        "bool+padding",
        "float+float-padding",
    ],
)
def test_full_size_equals_nn_multihead_attention(batch_first, need_weights, masks) -> None:
    torch.manual_seed(0)
    plain = nn.MultiheadAttention(EMBED, HEADS, batch_first=batch_first).eval()
    with torch.no_grad():
        plain.in_proj_bias.normal_()
        plain.out_proj.bias.normal_()
    dynamic = DynamicMultiheadAttention.convert(plain)
    assert dynamic.in_proj_weight is plain.in_proj_weight
    generator = torch.Generator().manual_seed(1)
    attn_mask, key_padding_mask = make_masks(masks, generator)
    inputs = qkv(batch_first, generator)
    for average in (True, False):
        kwargs = {
            "attn_mask": attn_mask,
            "key_padding_mask": key_padding_mask,
            "need_weights": need_weights,
            "average_attn_weights": average,
        }
        expected, expected_weights = plain(*inputs, **kwargs)
        actual, weights = dynamic(*inputs, **kwargs)
        close(actual, expected)
        if need_weights:
            close(weights, expected_weights)
        else:
            assert weights is None and expected_weights is None
    with torch.no_grad():  # nn.MultiheadAttention's fused inference path
        close(
            dynamic(*inputs, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0],
            plain(*inputs, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0],
        )


def test_is_causal_matches_an_explicit_causal_mask() -> None:
    torch.manual_seed(0)
    plain = nn.MultiheadAttention(EMBED, HEADS, batch_first=True)
    dynamic = DynamicMultiheadAttention.convert(plain)
    x = torch.randn(BATCH, TARGET, EMBED)
    causal = nn.Transformer.generate_square_subsequent_mask(TARGET)
    expected = plain(x, x, x, attn_mask=causal, need_weights=False)[0]
    close(dynamic(x, x, x, attn_mask=causal, need_weights=False, is_causal=True)[0], expected)
    close(dynamic(x, x, x, need_weights=False, is_causal=True)[0], expected)


def test_unsupported_variants_stay_plain() -> None:
    assert not DynamicMultiheadAttention.supports(nn.MultiheadAttention(8, 2, add_bias_kv=True))
    assert not DynamicMultiheadAttention.supports(nn.MultiheadAttention(8, 2, add_zero_attn=True))
    assert not DynamicMultiheadAttention.supports(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))
    assert DynamicMultiheadAttention.supports(nn.MultiheadAttention(8, 2))


def attention_space(batch_first: bool, seed: int = 0):
    model = seeded(AttentionOnly, 3, EMBED, HEADS, 2, batch_first, seed=seed)
    space = convert(model)
    assert set(space.hparams) == {"proj.out_features", "attn.num_heads"}
    generator = torch.Generator().manual_seed(seed)
    for hparam in space.all_hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    return space, input_for(model)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(
    ("heads", "embed", "target"),
    [
        (1, 4, nn.MultiheadAttention),  # heads * head_dim == embed
        (2, 8, nn.MultiheadAttention),
        (1, 8, SlimMultiheadAttention),  # fewer heads than the width holds
        (2, 5, SlimMultiheadAttention),
        (1, 3, SlimMultiheadAttention),
    ],
)
def test_pruned_heads_export_to_an_equivalent_module(batch_first, heads, embed, target) -> None:
    space, x = attention_space(batch_first)
    space.select({"attn.num_heads": heads, "proj.out_features": embed})
    exported = export(space)
    assert type(exported.attn) is target
    assert not any(isinstance(m, DynamicModule) for m in exported.modules())
    assert exported.attn.batch_first == batch_first
    assert exported.attn.out_proj.weight.shape == (embed, heads * EMBED // HEADS)
    close(exported(x), space.model(x))
    with torch.no_grad():
        close(exported.eval()(x), space.model(x))


def test_a_per_head_mask_follows_the_kept_heads_through_sorting_and_export() -> None:
    torch.manual_seed(0)
    heads = 4
    model = seeded(AttentionOnly, 3, EMBED, heads, 2, True)
    space = convert(model)
    attn = space.model.attn
    hparam = space.all_hparams["attn.num_heads"]
    hparam.importance = torch.tensor([0.2, 0.9, 0.1, 0.5])
    x = torch.randn(BATCH, TARGET, EMBED)
    mask = torch.randn(BATCH * heads, TARGET, TARGET)  # per head, in the original head order

    def run(module, mask):
        return module(x, x, x, attn_mask=mask, need_weights=False)[0]

    full = run(attn, mask)
    hparam.active = 2  # keeps original heads 1 and 3
    pruned = run(attn, mask)
    kept_mask = mask.view(BATCH, heads, TARGET, TARGET)[:, [1, 3]].reshape(-1, TARGET, TARGET)
    exported = export(space).attn
    assert exported.num_heads == 2
    close(run(exported, kept_mask), pruned)

    hparam.active = heads
    space.sort_parameters()  # heads move; the caller's mask keeps the original order
    close(run(attn, mask), full)
    hparam.active = 2
    close(run(attn, mask), pruned)
    close(run(export(space).attn, kept_mask), pruned)


def test_sort_parameters_keeps_transformer_outputs() -> None:
    model = seeded(TransformerLM, 13, 8, 4, 10, 2)
    ids = input_for(model)
    space = convert(model)
    assert {"blocks.0.attn.num_heads", "blocks.1.attn.num_heads"} <= set(space.hparams)
    generator = torch.Generator().manual_seed(3)
    for hparam in space.all_hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    with torch.no_grad():
        full = space.model(ids)
        config = space.sample(random.Random(4))
        pruned = space.model(ids)
        exported_before = export(space)(ids)
        space.select(space.max_config())
        space.sort_parameters()
        close(space.model(ids), full)
        space.select(config)
        close(space.model(ids), pruned)
        close(export(space)(ids), pruned)
        close(exported_before, pruned)


@pytest.mark.parametrize("seed", range(4))
def test_random_transformer_configs_export_equivalently(seed) -> None:
    model = seeded(TransformerLM, 13, 12, 3, 10, 1, seed=seed)
    ids = input_for(model)
    space = convert(model)
    space.sample(random.Random(seed))
    with torch.no_grad():
        close(export(space)(ids), space.model(ids))


def test_gradnas_prunes_heads_within_budget_and_exports_equivalently() -> None:
    model = seeded(TransformerLM, 13, 12, 3, 16, 2)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 13, (4, 6), generator=generator) for _ in range(4)]

    def loss(model, ids):
        logits = model(ids[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, 13), ids[:, 1:].reshape(-1))

    total = sum(p.numel() for p in model.parameters())
    config = {"data_loader": batches, "loss_func": loss, "verbose": False}
    space, result = nasframe.search(model, "params=55%", algorithm="gradnas", config=config)
    assert {"blocks.0.attn.num_heads", "blocks.1.attn.num_heads"} <= set(result.importance)
    exported = export(space)
    assert sum(p.numel() for p in exported.parameters()) <= 0.55 * total
    assert not any(isinstance(m, DynamicModule) for m in exported.modules())
    with torch.no_grad():
        close(exported(batches[0]), space.model(batches[0]))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_dynamic_attention_accepts_unbatched_input(batch_first: bool, need_weights: bool) -> None:
    """Regression (found in review): DynamicMultiheadAttention failed on unbatched (2-D) input
    with a key padding mask, which nn.MultiheadAttention accepts."""
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    dynamic = DynamicMultiheadAttention.convert(copy.deepcopy(attention))
    x = torch.randn(5, 16)
    padding = torch.tensor([False, False, False, True, False])
    with torch.no_grad():
        expected = attention(x, x, x, key_padding_mask=padding, need_weights=need_weights)
        got = dynamic(x, x, x, key_padding_mask=padding, need_weights=need_weights)
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)
    if need_weights:
        torch.testing.assert_close(got[1], expected[1], atol=1e-6, rtol=0)
