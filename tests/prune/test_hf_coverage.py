"""Head pruning across Hugging Face architectures (tiny random configs built offline).

For every architecture of ``torchpare.zoo.hf.HF_TINY``: whole heads are prunable groups wherever the
model has multi-head attention, or ``DependencyGraph.build`` warns with the reason (listed in
``NO_HEADS`` and in docs/design/pruning-transformers.md); dead heads (every tensor slice of a head
zeroed: q/k/v rows, output columns, per-head tables) are removed exactly, at two sequence lengths;
and the pruned model runs.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from torchpare._utils import get_submodule  # noqa: E402
from torchpare.prune import prune  # noqa: E402
from torchpare.prune.graph import DependencyGraph  # noqa: E402
from torchpare.zoo.hf import HF_TINY, hf_tiny, hf_tiny_inputs  # noqa: E402

# Architectures whose attention keeps its heads, with a word of the warning that says why (none left:
# BLOOM's heads prune since its ALiBi rows follow each layer's kept heads, see test_hf_bloom.py).
NO_HEADS: dict[str, str] = {}
HEAD_UNITS = ("head", "kv_head")


def _outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs)
    return [v for v in out.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def _build(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model, inputs = hf_tiny(name)
    long = hf_tiny_inputs(HF_TINY[name][3], 9)
    if name == "vit":  # another image size needs interpolated position embeddings
        inputs, long = ({**x, "interpolate_pos_encoding": True} for x in (inputs, long))
    return model, inputs, long


def _head_groups(graph: DependencyGraph) -> list[Any]:
    return [g for g in graph.groups() if g.unit in HEAD_UNITS and g.size > 1]


@pytest.mark.parametrize("name", sorted(HF_TINY))
def test_dead_heads_are_removed_exactly_at_two_lengths(name: str) -> None:
    model, short, long = _build(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = DependencyGraph.build(model, short)
    heads = _head_groups(graph)
    if name in NO_HEADS:
        assert not heads, graph.report()
        messages = [str(w.message) for w in caught]
        assert any(NO_HEADS[name] in m and "no head unit" in m for m in messages), messages
        assert NO_HEADS[name] in graph.report()
        return
    assert heads, graph.report()
    assert not [w for w in caught if "no head unit" in str(w.message)], graph.report()
    with torch.no_grad():  # kill unit 0 of every head group: every slice of it, in every member
        for group in heads:
            for m in group.members:
                tensor = getattr(get_submodule(model, m.module_name), m.param_name)
                tensor.index_fill_(m.dim, torch.tensor(m.index_map[0]), 0)
    before = [_outputs(model, short), _outputs(model, long)]
    sizes = {g.id: g.size for g in heads}
    graph.prune({g.id: [0] for g in heads})
    assert all(graph.group(gid).size == n - 1 for gid, n in sizes.items())
    after = [_outputs(model, short), _outputs(model, long)]
    for ref, got in zip(before, after):
        assert len(ref) == len(got)
        for a, b in zip(ref, got):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


# A 70% parameter budget on every architecture: prune() returns a model that runs on its example
# inputs and on another length. SegFormer's classifier reshapes to config.hidden_sizes[-1], the case
# of the issue; the rest of the sweep is slow.
_FAST_PRUNE = {"segformer", "llama", "bert"}


def _check_prune_runs(name: str) -> None:
    model, short, long = _build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model, summary = prune(model, short, target_params_ratio=0.7)
    assert summary.params_after < summary.params_before
    for inputs in (short, long):
        assert all(torch.isfinite(t).all() for t in _outputs(model, inputs))


@pytest.mark.parametrize("name", sorted(_FAST_PRUNE))
def test_prune_to_seventy_percent_returns_a_model_that_runs(name: str) -> None:
    _check_prune_runs(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(HF_TINY) - _FAST_PRUNE))
def test_prune_to_seventy_percent_returns_a_model_that_runs_sweep(name: str) -> None:
    _check_prune_runs(name)
