"""Data-dependent importance at scale: bf16 models, bounded state over calibration batches."""

from __future__ import annotations

import copy

import pytest
import torch

from torchpare.prune.importance import TaylorImportance

pytest.importorskip("transformers")

from torchpare.zoo.hf import hf_llama  # noqa: E402


def _batches(n: int, vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (2, 8), generator=gen)
        out.append({"input_ids": ids, "labels": ids})
    return out


def _member_scores(imp: TaylorImportance, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Per-output-row Taylor scores ``|sum_in(w * g)|`` of every 2-D weight, from the criterion's sums."""
    scores = {}
    for name, p in model.named_parameters():
        grad = imp._collected.get(name)
        if grad is not None and p.ndim == 2:
            scores[name] = (p.detach().float() * grad.float()).sum(1).abs()
    return scores


def test_bf16_llama_taylor_scores_match_float32_with_bounded_state() -> None:
    model32, _ = hf_llama()
    model32.eval()
    model16 = copy.deepcopy(model32).to(torch.bfloat16)
    vocab = model32.config.vocab_size
    n_params = sum(p.numel() for p in model16.parameters())

    one = TaylorImportance()
    one.prepare(model16, _batches(1, vocab))
    three = TaylorImportance()
    three.prepare(model16, _batches(3, vocab))
    # O(params) state whatever the number of batches, summed in float32, and .grad left as it was.
    assert one.state_numel == three.state_numel == n_params
    assert all(g.dtype == torch.float32 for g in three._collected.values())
    assert all(p.grad is None and p.dtype == torch.bfloat16 for p in model16.parameters())

    ref = TaylorImportance()
    ref.prepare(model32, _batches(3, vocab))
    got, want = _member_scores(three, model16), _member_scores(ref, model32)
    assert got.keys() == want.keys() and len(got) > 5
    for name, w in want.items():
        k = max(1, w.numel() // 4)
        top_got = set(got[name].topk(k).indices.tolist())
        top_want = set(w.topk(k).indices.tolist())
        overlap = len(top_got & top_want) / k
        assert overlap >= 0.5, f"{name}: top-{k} overlap {overlap:.2f} between bf16 and float32 scores"
        corr = torch.corrcoef(torch.stack([got[name], w]))[0, 1]
        assert corr > 0.9, f"{name}: correlation {corr:.3f} between bf16 and float32 scores"


def test_prepare_again_replaces_the_sums_instead_of_adding_state() -> None:
    model, _ = hf_llama()
    model = model.to(torch.bfloat16)
    imp = TaylorImportance()
    imp.prepare(model, _batches(2, model.config.vocab_size))
    first = imp.state_numel
    imp.prepare(model, _batches(2, model.config.vocab_size, seed=1))
    assert imp.state_numel == first


@pytest.mark.slow
def test_llama_calibrate_example_recovers_the_teacher_student_kl(monkeypatch, capsys) -> None:
    import importlib.util
    import pathlib
    import re

    path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "prune_llama_calibrate.py"
    spec = importlib.util.spec_from_file_location("prune_llama_calibrate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr("sys.argv", ["prune_llama_calibrate.py", "--pretrain-steps", "60", "--recover-steps", "60"])
    module.main()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    before, after = map(float, re.findall(r"before recovery ([\d.]+), after ([\d.]+)", line)[0])
    assert after < before


@pytest.mark.slow
def test_bf16_llama_group_fisher_state_is_float32_and_per_unit() -> None:
    from torchpare.prune import DependencyGraph
    from torchpare.prune.importance import GroupFisherImportance

    model, inputs = hf_llama()
    model = model.to(torch.bfloat16).eval()
    graph = DependencyGraph.build(model, inputs)
    sizes = {}
    for n in (1, 3):
        imp = GroupFisherImportance()
        imp.prepare(model, _batches(n, model.config.vocab_size), graph=graph)
        assert all(v.dtype == torch.float32 for v in imp._collected.values())
        sizes[n] = {gid: v.numel() for gid, v in imp._collected.items()}
    assert sizes[1] == sizes[3] and sizes[1]  # one value per unit, whatever the number of batches
