"""FLOPs of a config as a per-module polynomial in slot sizes, fitted once and checked.

Each module's matmul FLOPs are a polynomial in its own slot sizes: a few ``FlopCounterMode``
measurements of random configs fix the coefficients, and a held-out measurement checks the
fit before it is trusted.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from typing import Any

import torch

from nasframe.cost.flops import count_flops
from nasframe.errors import UserInputError
from nasframe.space.hparam import Hparam
from nasframe.space.search_space import Config, SearchSpace

# Random configs the fit may add to determine the coefficients, beyond its first ones.
_EXTRA = 64
# Random configs measured beyond those that determine the coefficients: rows the shared fit
# must meet exactly too, so that identical-looking modules with different FLOPs are caught.
_SPARE = 2


class KeptUnits:
    """Which positions of layer-like hparams a config keeps (cached per size)."""

    def __init__(self, sizes: Mapping[int, int]) -> None:
        self.sizes = sizes
        self._cache: dict[tuple[int, int], set[int]] = {}

    def all_present(self, presence: list[tuple[Hparam, int]]) -> bool:
        for hparam, position in presence:
            size = self.sizes[id(hparam)]
            key = (id(hparam), size)
            if key not in self._cache:
                self._cache[key] = hparam.kept_positions(size)
            if position not in self._cache[key]:
                return False
        return True


def measure_flops(
    space: SearchSpace, config: Config, dummy_input: Any
) -> tuple[int, dict[str, int]]:
    """Run the model under ``config`` with FlopCounterMode; total and per-module FLOPs.

    The space's config is restored afterwards, even on error. A crash is reported as the
    dummy input not fitting only when the unpruned model fails on it too; a model that runs
    at its full size but crashes at ``config`` is reported as that (see
    :func:`_explain_failure`).
    """
    try:
        with space.selected(config):
            return count_flops(space.model, dummy_input)
    except UserInputError:
        raise
    except Exception as error:
        raise _explain_failure(space, config, dummy_input, error) from error


def _explain_failure(
    space: SearchSpace, config: Config, dummy_input: Any, error: Exception
) -> UserInputError:
    """Tell a dummy input the model rejects from a model that crashes on a valid one.

    The full config is the original model: if it runs on the dummy input, the input fits and
    the crash is the pruned config's (a forward that hard-codes a size pruning changes).
    """
    what = f"{type(error).__name__}: {_first_line(error)}"
    full = space.max_config()
    if dict(config) != full:
        try:
            with space.selected(full):
                count_flops(space.model, dummy_input)
        except Exception:
            pass  # the unpruned model fails too: the input, reported below
        else:
            pruned = {k: v for k, v in config.items() if full.get(k) != v}
            return UserInputError(
                f"the model runs on the dummy input at its full size but crashes when pruned "
                f"to {_summary(pruned)} ({what}); its forward probably depends on a size "
                "pruning changes (e.g. a hard-coded reshape): keep those hparams at full size "
                "with rules, or make the forward read sizes from its tensors."
            )
    return UserInputError(
        f"the dummy input does not fit the model: the unpruned model fails on "
        f"{_describe(dummy_input)} ({what}); pass an input the model's forward accepts "
        "(check that model(dummy_input) runs)."
    )


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def _summary(config: Config, at_most: int = 3) -> str:
    items = [f"{name}={size}" for name, size in sorted(config.items())]
    more = f" and {len(items) - at_most} more" if len(items) > at_most else ""
    return ", ".join(items[:at_most]) + more


def _describe(inputs: Any) -> str:
    """A short description of the dummy input: shapes and dtypes of its tensors."""
    if isinstance(inputs, torch.Tensor):
        dtype = str(inputs.dtype).removeprefix("torch.")
        return f"a {dtype} tensor of shape {tuple(inputs.shape)} on {inputs.device}"
    if isinstance(inputs, Mapping):
        return (
            "keyword arguments {"
            + ", ".join(f"{key}: {_describe(value)}" for key, value in inputs.items())
            + "}"
        )
    if isinstance(inputs, tuple):
        return "arguments (" + ", ".join(_describe(value) for value in inputs) + ")"
    return f"a {type(inputs).__name__}"


class FlopModel:
    """FLOPs of each dynamic module as a polynomial in its slots' sizes, fitted once.

    Every monomial is a product of a subset of the module's slot sizes (a Linear's FLOPs are
    proportional to in_features * out_features). Identical modules (the same class, slot
    sizes, parameter shapes and submodules: a transformer's layers) share one polynomial,
    fitted from all their measurements together, so the few random configs that determine
    one module determine them all; a group whose members do not fit one polynomial exactly
    is fitted module by module instead. A held-out config checks the fit, and if any
    module's FLOPs are not of this form, every prediction falls back to measuring.
    """

    def __init__(self, space: SearchSpace, dummy_input: Any) -> None:
        self.space = space
        self.dummy_input = dummy_input
        presence = space.unit_presence()
        self.modules = [
            (name, module)
            for name, module in space.dynamic_modules()
            if any(module.get_hparam(s) is not None for s in module.slots) or id(module) in presence
        ]
        self.presence = {name: presence.get(id(module), []) for name, module in self.modules}
        groups = _identical_modules(self.modules, self.presence)
        rng = random.Random(0)
        configs = [space.max_config(), space.min_config()]
        longest = max((len(m.slots) for _, m in self.modules), default=0)
        # At most what fitting every module on its own measured: 2**longest + 4 random
        # configs, topped up by up to _EXTRA more.
        determined = self._top_up(configs, rng, groups, 2 + 2**longest + 4 + _EXTRA)
        measured = [measure_flops(space, c, dummy_input) for c in configs]
        self.terms, loose = self._fit(configs, measured, groups)
        if loose:  # not one polynomial: each module alone, measuring more configs if needed
            singles = [[member] for group in loose for member in group]
            done = len(configs)
            determined = self._top_up(configs, rng, singles, done + _EXTRA) and determined
            measured += [measure_flops(space, c, dummy_input) for c in configs[done:]]
            self.terms.update(self._fit(configs, measured, singles, shared=False)[0])
        self.constant = measured[0][0] - sum(self._own_totals(measured[:1])[0].values())
        check = _random_config(space, rng)
        self.exact = determined and all(
            _close(self.predict_fitted(c), measure_flops(space, c, dummy_input)[0])
            for c in (check, space.max_config())
        )

    def _top_up(
        self, configs: list[Config], rng: random.Random, groups: list[list[int]], limit: int
    ) -> bool:
        """Add random configs (to ``limit`` in all) until they determine every group's
        coefficients, then ``_SPARE`` more, whose rows the fit must also meet exactly.

        Random configs can miss a combination a module's polynomial needs (two hparams with
        two choices each, both at the same end in every sample); the fit would then be wrong
        elsewhere yet could pass the check. Returns False if ``limit`` did not suffice.
        """
        needed = [max(self._rank([i], self._grid(self.modules[i][1])) for i in g) for g in groups]
        short = [k for k, g in enumerate(groups) if self._rank(g, configs) < needed[k]]
        while short and len(configs) < limit:
            configs.append(_random_config(self.space, rng))
            short = [k for k in short if self._rank(groups[k], configs) < needed[k]]
        for _ in range(min(_SPARE, max(0, limit - len(configs)))):
            configs.append(_random_config(self.space, rng))
        return not short

    def _grid(self, module: Any) -> list[Config]:
        """Configs that reach every monomial of ``module``: for each of its hparams, one more
        size than the number of its slots that hparam sets (or all its sizes)."""
        uses: dict[int, tuple[Hparam, int]] = {}
        for slot in module.slots:
            hparam = module.get_hparam(slot)
            if hparam is not None:
                uses[id(hparam)] = (hparam, uses.get(id(hparam), (hparam, 0))[1] + 1)
        levels = []
        for hparam, count in uses.values():
            choices = hparam.choices
            k = min(len(choices), count + 1)
            picks = sorted({round(i * (len(choices) - 1) / max(k - 1, 1)) for i in range(k)})
            levels.append([(hparam.name, choices[i]) for i in picks])
        return [dict(combination) for combination in itertools.product(*levels)]

    def _rank(self, members: list[int], configs: list[Config]) -> int:
        """The rank of the monomials of ``members`` (indices into ``modules``, sharing one
        polynomial) over ``configs``: the coefficients are determined at full rank."""
        features = self._features(members, configs)
        return int(torch.linalg.matrix_rank(features / features.abs().amax(dim=0).clamp(min=1)))

    def _features(self, members: list[int], configs: list[Config]) -> torch.Tensor:
        rows = [
            self._monomials(self.modules[i][1], c, self.modules[i][0])
            for i in members
            for c in configs
        ]
        return torch.tensor(rows, dtype=torch.float64)

    def _monomials(self, module: Any, config: Config, name: str | None = None) -> list[float]:
        sizes = [_slot_size(module, slot, self.space, config) for slot in module.slots]
        # A module inside a dropped layer costs nothing.
        present = float(self._present(name, config)) if name is not None else 1.0
        return [
            present * math.prod(sizes[i] for i in subset)
            for r in range(len(sizes) + 1)
            for subset in itertools.combinations(range(len(sizes)), r)
        ]

    def _present(self, name: str, config: Config) -> bool:
        presence = self.presence.get(name, [])
        if not presence:
            return True
        sizes = {id(hp): config.get(hp.name, hp.active) for hp, _ in presence}
        return KeptUnits(sizes).all_present(presence)

    def _own_totals(self, measured: list[tuple[int, dict[str, int]]]) -> list[dict[str, int]]:
        """Each module's own FLOPs per measurement: a parent's count includes its dynamic
        children's, so each child is subtracted once, from its nearest dynamic ancestor that
        ran (a layer list is iterated, never called)."""
        names = [name for name, _ in self.modules]
        own_totals = []
        for _, per_module in measured:
            ran = [name for name in names if name in per_module]
            own = {name: per_module.get(name, 0) for name in names}
            for child in names:
                parent = _nearest_ancestor(child, ran)
                if parent is not None:
                    own[parent] -= per_module.get(child, 0)
            own_totals.append(own)
        return own_totals

    def _fit(
        self,
        configs: list[Config],
        measured: list[tuple[int, dict[str, int]]],
        groups: list[list[int]],
        shared: bool = True,
    ) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
        """Coefficients of each module (one solution per group), and the groups of several
        members that one polynomial does not fit exactly on every measured row."""
        own_totals = self._own_totals(measured)
        terms, loose = {}, []
        for members in groups:
            features = self._features(members, configs)
            targets = torch.tensor(
                [[own[self.modules[i][0]]] for i in members for own in own_totals],
                dtype=torch.float64,
            )
            solution = torch.linalg.lstsq(features, targets, driver="gelsd").solution
            if shared and len(members) > 1:
                fitted = (features @ solution).flatten().tolist()
                wanted = targets.flatten().tolist()
                if not all(_close(round(f), round(w)) for f, w in zip(fitted, wanted, strict=True)):
                    loose.append(members)
                    continue
            for i in members:
                terms[self.modules[i][0]] = solution.flatten()
        return terms, loose

    def predict_fitted(self, config: Config) -> int:
        total = float(self.constant)
        for name, module in self.modules:
            features = torch.tensor(self._monomials(module, config, name), dtype=torch.float64)
            total += float(features @ self.terms[name])
        return round(total)

    def predict(self, config: Config) -> int:
        if self.exact:
            return self.predict_fitted(config)
        return measure_flops(self.space, config, self.dummy_input)[0]


def _identical_modules(
    modules: list[tuple[str, Any]], presence: Mapping[str, list[tuple[Hparam, int]]]
) -> list[list[int]]:
    """Indices of ``modules`` grouped by what their FLOPs can depend on besides their slot
    sizes: class, each slot's full size and whether an hparam sets it, parameter shapes,
    submodule types and how many layer-like hparams gate them."""
    groups: dict[tuple, list[int]] = {}
    for index, (name, module) in enumerate(modules):
        key = (
            type(module),
            tuple((s, module.slot_size(s), module.get_hparam(s) is None) for s in module.slots),
            tuple((n, tuple(p.shape), p.dtype) for n, p in module.named_parameters()),
            tuple((n, type(m)) for n, m in module.named_modules()),
            len(presence.get(name, [])),
        )
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _close(predicted: int, measured: int) -> bool:
    return abs(predicted - measured) <= 1e-9 * max(1, measured)


def _nearest_ancestor(name: str, candidates: list[str]) -> str | None:
    ancestors = [c for c in candidates if c != name and (c == "" or name.startswith(c + "."))]
    return max(ancestors, key=len) if ancestors else None


def _slot_size(module: Any, slot: str, space: SearchSpace, config: Config) -> int:
    hparam = module.get_hparam(slot)
    if hparam is None:
        return module.slot_size(slot)
    return config.get(hparam.name, hparam.active)


def _random_config(space: SearchSpace, rng: random.Random) -> Config:
    return {name: rng.choice(hp.choices) for name, hp in space.hparams.items()}
