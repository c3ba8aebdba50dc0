"""Parameter and FLOP counts of a model on example inputs, via ``torch.utils.flop_counter``, and the
``(in, out)`` channels of one layer (:func:`module_channels`).

FLOPs are what :class:`torch.utils.flop_counter.FlopCounterMode` reports for one forward pass:
``2 * MACs`` of the matmul and convolution families it knows (``mm``, ``addmm``, ``bmm``, ``baddbmm``,
``convolution``, scaled-dot-product attention, ...). Element-wise ops, normalisation, pooling and
activations count as 0. So a ``Linear(in, out)`` on ``N`` rows is ``2 * N * in * out`` FLOPs (the
bias add is not counted) and a ``Conv2d`` is ``2 * N * H_out * W_out * C_out * (C_in / groups) * k_h * k_w``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torchpare.model_io import call_model

__all__ = ["count", "counted", "module_channels"]


def _rows(shape: Any) -> int:
    """Number of feature vectors in a tensor of ``shape`` (all dims but the last)."""
    n = 1
    for s in tuple(shape)[:-1]:
        n *= int(s)
    return n


def _attention_core(batch: int, q_len: int, kv_len: int, width: int) -> int:
    """Scores ``q @ k^T`` and weighted values ``p @ v`` over all heads of total ``width``."""
    return 2 * 2 * batch * q_len * kv_len * width


def _native_mha_flops(
    query: Any,
    key: Any,
    value: Any,
    embed_dim: int,
    num_head: int,
    qkv_weight: Any,
    qkv_bias: Any,
    proj_weight: Any,
    proj_bias: Any,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    inner = int(qkv_weight[0]) // 3
    q_rows, k_rows, v_rows = _rows(query), _rows(key), _rows(value)
    proj = 2 * q_rows * inner * query[-1] + 2 * k_rows * inner * key[-1] + 2 * v_rows * inner * value[-1]
    batch = _rows(query[:-1]) if len(query) == 3 else 1
    core = _attention_core(batch, int(query[-2]), int(key[-2]), inner)
    return int(proj + core + 2 * q_rows * int(proj_weight[0]) * int(proj_weight[1]))


def _encoder_layer_flops(
    src: Any,
    embed_dim: int,
    num_heads: int,
    qkv_weight: Any,
    qkv_bias: Any,
    proj_weight: Any,
    proj_bias: Any,
    use_gelu: bool,
    norm_first: bool,
    eps: float,
    norm_weight_1: Any,
    norm_bias_1: Any,
    norm_weight_2: Any,
    norm_bias_2: Any,
    ffn_weight_1: Any,
    ffn_bias_1: Any,
    ffn_weight_2: Any,
    ffn_bias_2: Any,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    attn = _native_mha_flops(
        src, src, src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias
    )
    rows = _rows(src)
    ffn = 2 * rows * int(ffn_weight_1[0]) * int(ffn_weight_1[1]) + 2 * rows * int(ffn_weight_2[0]) * int(
        ffn_weight_2[1]
    )
    return attn + ffn


def _sdpa_cpu_flops(
    query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """``(..., L, E)`` queries, ``(..., S, E)`` keys, ``(..., S, Ev)`` values."""
    batch = _rows(query[:-1])
    return 2 * batch * int(query[-2]) * int(key[-2]) * (int(query[-1]) + int(value[-1]))


def _grouped_mm_flops(mat_a: Any, mat_b: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """``(S, K)`` rows, each multiplied by one of the ``(G, K, N)`` matrices: ``2 * S * K * N`` (the
    mixture-of-experts kernel of transformers; the eager experts loop counts the same)."""
    if len(mat_a) == 2 and len(mat_b) == 3:
        return 2 * int(mat_a[0]) * int(mat_a[1]) * int(mat_b[-1])
    return 2 * _rows(out_shape) * int(mat_a[-1]) * int(out_shape[-1]) if out_shape is not None else 0


def attention_flop_formulas() -> dict[Any, Any]:
    """FLOP formulas for the fused attention kernels ``FlopCounterMode`` does not know.

    ``FlopCounterMode`` alone counts 0 for ``aten._native_multi_head_attention`` (the eval fast path of
    ``nn.MultiheadAttention``: q/k/v and output projections and both attention matmuls),
    ``aten._transformer_encoder_layer_fwd`` (``nn.TransformerEncoderLayer``'s, its MLP included) and
    ``aten._scaled_dot_product_flash_attention_for_cpu``. An attention over ``L`` queries and ``S``
    keys of total width ``E`` (all heads) is ``2 * N * L * S * E`` for the scores plus as much for
    the weighted values. ``aten._grouped_mm`` (transformers' fused mixture-of-experts kernel) counts
    ``2 * S * K * N`` for ``S`` routed rows of width ``K`` and experts of ``N`` outputs, as the eager
    experts loop does.

    Returns:
        ``{aten overload: formula}`` for ``FlopCounterMode(custom_mapping=...)``; kernels missing from
        this torch build are left out.

    Example:
        >>> mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
        >>> x = torch.zeros(1, 3, 8)
        >>> counter = FlopCounterMode(display=False, custom_mapping=attention_flop_formulas())
        >>> with torch.no_grad(), counter:  # the fast path: one fused kernel
        ...     _ = mha(x, x, x, need_weights=False)
        >>> counter.get_total_flops() == 2 * 3 * 8 * 24 + 2 * 2 * 3 * 3 * 8 + 2 * 3 * 8 * 8
        True
    """
    aten = torch.ops.aten
    table = {
        "_native_multi_head_attention": _native_mha_flops,
        "_transformer_encoder_layer_fwd": _encoder_layer_flops,
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu_flops,
        "_grouped_mm": _grouped_mm_flops,
    }
    return {getattr(aten, name): f for name, f in table.items() if hasattr(aten, name)}


__all__ += ["attention_flop_formulas"]


def count(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """Count the parameters and the forward FLOPs of ``model`` on ``example_inputs``.

    Parameters shared between modules (tied embeddings, a module called twice) count once; buffers
    (BatchNorm running statistics, position ids) are not parameters and do not count. FLOPs come
    from one forward pass under ``torch.no_grad()`` in the model's current train/eval mode, counted
    by ``FlopCounterMode`` as ``2 * MACs`` of matmuls and convolutions (see the module docstring).
    Fused attention kernels (the eval fast paths of ``nn.MultiheadAttention`` and
    ``nn.TransformerEncoderLayer``, the CPU flash kernel of ``F.scaled_dot_product_attention``) count
    the matmuls they perform: see :func:`attention_flop_formulas`.

    Args:
        model: Any ``nn.Module``; it is not modified (its parameters' ``requires_grad`` flags are
            cleared during the pass and restored after it).
        example_inputs: A tensor (``model(x)``), a tuple (``model(*x)``) or a dict of keyword
            arguments (``model(**x)``).

    Returns:
        ``{"params": int, "flops": int}``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> count(nn.Linear(4, 3), torch.zeros(2, 4))
        {'params': 15, 'flops': 48}
    """
    params, counter = counted(model, example_inputs, who="count()")
    return {"params": params, "flops": int(counter.get_total_flops())}


def counted(model: nn.Module, example_inputs: Any, who: str = "count()") -> tuple[int, FlopCounterMode]:
    """The parameter count of ``model`` and the ``FlopCounterMode`` of one forward on ``example_inputs``.

    :func:`count` reads the total from the counter; :func:`torchpare.prune.plan_cost.count_by_module`
    reads its per-module counts (``counter.get_flop_counts()``) from the same single pass.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> params, counter = counted(nn.Linear(4, 3), torch.zeros(2, 4))
        >>> params, counter.get_total_flops()
        (15, 48)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who}: model must be an nn.Module, got {type(model).__name__}.")
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False, custom_mapping=attention_flop_formulas())
    # FlopCounterMode's module tracker hooks module inputs and outputs that require grad; on
    # DeBERTa-v2 (its layer norm is handed the relative-position table itself) a tensor requiring grad
    # without a grad_fn reaches the hook under no_grad, which fails ("Expected gradient function to be
    # set"). The count needs no gradients: the parameters are frozen for the pass and restored after.
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with torch.no_grad(), counter:
            call_model(model, example_inputs)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return int(params), counter


def module_channels(module: nn.Module) -> tuple[int, int] | None:
    """``(in_channels, out_channels)`` read from a layer's weight shape (``None`` for weightless ones).

    Example:
        >>> module_channels(nn.Conv2d(3, 8, 3)), module_channels(nn.BatchNorm2d(8))
        ((3, 8), (8, 8))
    """
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.modules.conv._ConvNd) and isinstance(weight, torch.Tensor):
        if module.transposed:
            return int(weight.shape[0]), int(weight.shape[1]) * module.groups
        return int(weight.shape[1]) * module.groups, int(weight.shape[0])
    if isinstance(module, nn.modules.batchnorm._NormBase):
        n = module.running_mean.shape[0] if weight is None else weight.shape[0]  # type: ignore[union-attr]
        return int(n), int(n)
    if not isinstance(weight, torch.Tensor):
        return None
    if isinstance(module, nn.Embedding):  # (vocabulary, width)
        return int(weight.shape[0]), int(weight.shape[1])
    if type(module).__name__ == "Conv1D" and weight.ndim == 2:  # transformers' GPT-2 layer: (in, out)
        return int(weight.shape[0]), int(weight.shape[1])
    if weight.ndim >= 2:
        return int(weight.shape[1]), int(weight.shape[0])
    return int(weight.shape[0]), int(weight.shape[0])


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the ``meta`` device (no data copied).

    The structure (modules, attributes, configs, the pruning record) is deep-copied; every parameter
    and buffer is replaced by an empty ``meta`` tensor of the same shape, dtype and ``requires_grad``,
    so the copy costs a few kilobytes whatever the model's size. Tied tensors stay tied. Meant for
    shape work: counting FLOPs/parameters of a candidate pruning plan, tracing, trial surgery.

    Args:
        model: Any ``nn.Module`` (on any device, the ``meta`` device included); it is not modified.

    Returns:
        The meta copy.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        >>> shadow = meta_copy(net)
        >>> shadow[0].weight.device.type, shadow[1].running_mean.shape, net[0].weight.device.type
        ('meta', torch.Size([8]), 'cpu')
    """
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in memo:
            continue
        empty = torch.empty_like(t, device="meta")
        is_param = isinstance(t, nn.Parameter)
        memo[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if is_param else empty
    return copy.deepcopy(model, memo)


def meta_inputs(example_inputs: Any) -> Any:
    """``example_inputs`` with every tensor (in tuples, lists and dicts) replaced by a ``meta`` tensor.

    Example:
        >>> meta_inputs({"x": torch.zeros(2, 3), "n": 4})["x"].device.type
        'meta'
    """
    if isinstance(example_inputs, torch.Tensor):
        return torch.empty_like(example_inputs, device="meta")
    if isinstance(example_inputs, Mapping):  # a plain dict: prune() and count() call model(**inputs)
        return {k: meta_inputs(v) for k, v in example_inputs.items()}
    if isinstance(example_inputs, (tuple, list)):
        return type(example_inputs)(meta_inputs(v) for v in example_inputs)
    return example_inputs


def on_meta(model: nn.Module) -> bool:
    """Whether any parameter or buffer of ``model`` lives on the ``meta`` device (no data to read).

    Example:
        >>> on_meta(nn.Linear(2, 2)), on_meta(nn.Linear(2, 2, device="meta"))
        (False, True)
    """
    return any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))


__all__ += ["meta_copy", "meta_inputs", "on_meta"]
