"""Adapters between a teacher layer and its channel-pruned copy in the student.

A pruned student's conv/linear outputs have fewer channels than the teacher's. An adapter is a
trainable 1x1 convolution (or linear layer) between the two widths, initialised from the channels the
student kept, so that before any training it is an exact selection (teacher -> student) or embedding
(student -> teacher). The kept channels are found by matching the student's kernels to the teacher's
(:func:`match_channels`): exactly when the student is an untouched pruned copy, by nearest kernels
otherwise (with a warning).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ChannelMatch",
    "match_channels",
    "conv2d_adapter",
    "inverted_conv2d_adapter",
    "linear_adapter",
    "inverted_linear_adapter",
]

EXACT_ATOL = 1e-6
_MAX_ALTERNATIONS = 8
_CHAMFER_ROWS = 64  # student rows used to guess the kept input channels; enough, and bounds the cost


@dataclass(frozen=True)
class ChannelMatch:
    """Which teacher channels a student layer corresponds to.

    Attributes:
        out_index: ``out_index[i]`` = teacher output channel of student output channel ``i``.
        in_index: ``in_index[i]`` = teacher input channel (per group) of student input channel ``i``.
        max_abs_diff: ``max |student_weight - teacher_weight[out_index][:, in_index]|``.
        exact: ``max_abs_diff <= 1e-6``: the student is an untouched pruned copy of the teacher.
    """

    out_index: tuple[int, ...]
    in_index: tuple[int, ...]
    max_abs_diff: float
    exact: bool


def _assign(cost: torch.Tensor) -> torch.Tensor:
    """One-to-one assignment of rows to columns (rows <= columns) minimising the summed cost."""
    cost = cost.detach().double().cpu()
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn; greedy is the fallback
        return _greedy_assign(cost)
    rows, cols = linear_sum_assignment(cost.numpy())
    out = torch.empty(cost.shape[0], dtype=torch.long)
    out[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return out


def _greedy_assign(cost: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(cost.flatten())
    n_rows, n_cols = cost.shape
    out = torch.full((n_rows,), -1, dtype=torch.long)
    used = torch.zeros(n_cols, dtype=torch.bool)
    left = n_rows
    for flat in order.tolist():
        r, c = divmod(flat, n_cols)
        if out[r] < 0 and not used[c]:
            out[r], used[c] = c, True
            left -= 1
            if left == 0:
                break
    return out


def _exact_votes(teacher: torch.Tensor, student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Find (out, in) indices by looking each student weight up among the teacher's (majority vote).

    A pruned copy's weights are the teacher's, bit for bit, so each student value pins its teacher
    position; repeated values (zeros) only add noise that the majority outvotes. None if unclear.
    """
    t_flat = teacher.flatten()
    t_sorted, t_order = torch.sort(t_flat)
    s_flat = student.flatten()
    pos = torch.searchsorted(t_sorted, s_flat).clamp(max=t_flat.numel() - 1)
    left = (pos - 1).clamp(min=0)
    use_left = (s_flat - t_sorted[left]).abs() < (s_flat - t_sorted[pos]).abs()
    pos = torch.where(use_left, left, pos)
    hit = (s_flat - t_sorted[pos]).abs() <= EXACT_ATOL
    t_idx = t_order[pos]
    (t_out, t_in, t_k), (s_out, s_in, s_k) = (
        torch.unravel_index(t_idx, teacher.shape),
        torch.unravel_index(torch.arange(s_flat.numel(), device=s_flat.device), student.shape),
    )
    hit &= t_k == s_k  # same position inside the kernel
    result = []
    for s_axis, t_axis, n_s, n_t in (
        (s_out, t_out, student.shape[0], teacher.shape[0]),
        (s_in, t_in, student.shape[1], teacher.shape[1]),
    ):
        keys, counts = torch.unique(s_axis[hit] * n_t + t_axis[hit], return_counts=True)
        if keys.numel() == 0:
            return None
        s_of, t_of = keys // n_t, keys % n_t
        top = torch.zeros(n_s, dtype=counts.dtype, device=keys.device).scatter_reduce(0, s_of, counts, "amax")
        winner = counts == top[s_of]  # ties go to the lowest teacher index
        best = torch.full((n_s,), n_t, dtype=torch.long, device=keys.device)
        best = best.scatter_reduce(0, s_of[winner], t_of[winner], "amin")
        best[best == n_t] = -1
        if (best < 0).any() or best.unique().numel() != n_s:
            return None
        result.append(best)
    return result[0], result[1]


def _max_diff(t: torch.Tensor, s: torch.Tensor, out_idx: torch.Tensor, in_idx: torch.Tensor) -> float:
    diff = (s - t[out_idx][:, in_idx]).abs()
    return float(diff.max()) if diff.numel() else 0.0


def _chamfer_in_guess(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Guess the kept input channels without knowing the kept rows.

    Each student column's kernel sums should each lie close to some value of the matching teacher
    column (its rows are a subset of the teacher's): cost(i, j) = mean nearest-value distance.
    """
    s_col = student.sum(-1)[:_CHAMFER_ROWS].T.contiguous()  # (Cs_in, rows)
    t_sorted = torch.sort(teacher.sum(-1).T.contiguous(), dim=1).values  # (Ct_in, Ct_out)
    cost = torch.empty(s_col.shape[0], t_sorted.shape[0], dtype=t_sorted.dtype, device=t_sorted.device)
    last = t_sorted.shape[1] - 1
    for i in range(s_col.shape[0]):
        q = s_col[i].expand(t_sorted.shape[0], -1).contiguous()
        pos = torch.searchsorted(t_sorted, q)
        hi = torch.gather(t_sorted, 1, pos.clamp(max=last))
        lo = torch.gather(t_sorted, 1, (pos - 1).clamp(min=0))
        cost[i] = torch.minimum((q - hi).abs(), (q - lo).abs()).mean(1)
    return _assign(cost)


def match_channels(
    teacher_weight: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_bias: torch.Tensor | None = None,
    student_bias: torch.Tensor | None = None,
) -> ChannelMatch:
    """Match each student output kernel to a distinct teacher kernel (weights ``(out, in, *kernel)``).

    The student may have kept a subset of the output channels and of the input channels (its previous
    layer was pruned too). When the input counts agree they are taken as unpruned. The assignment is
    one-to-one. An exact pruned copy is recognised by value look-up; otherwise input and output
    assignments alternate (minimum squared distance) from a guess of the input subset.

    Args:
        teacher_weight: Teacher weight, ``(out_t, in_t, ...)``.
        student_weight: Student weight, ``(out_s, in_s, ...)`` with the same kernel size,
            ``out_s <= out_t`` and ``in_s <= in_t``.
        teacher_bias: Optional teacher bias, used to match outputs.
        student_bias: Optional student bias.

    Returns:
        A :class:`ChannelMatch`.

    Raises:
        ValueError: kernel sizes differ, or the student is wider than the teacher.

    Example:
        >>> t = torch.randn(6, 4, 3, 3)
        >>> m = match_channels(t, t[[4, 1, 2]][:, [0, 3]])
        >>> m.out_index, m.in_index, m.exact
        ((4, 1, 2), (0, 3), True)
    """
    if teacher_weight.shape[2:] != student_weight.shape[2:] or teacher_weight.dim() != student_weight.dim():
        raise ValueError(
            f"match_channels(): kernel shapes differ: teacher {tuple(teacher_weight.shape)} vs student "
            f"{tuple(student_weight.shape)}."
        )
    for dim, what in ((0, "output"), (1, "input")):
        if student_weight.shape[dim] > teacher_weight.shape[dim]:
            raise ValueError(
                f"match_channels(): the student has more {what} channels ({student_weight.shape[dim]}) than "
                f"the teacher ({teacher_weight.shape[dim]}); it is not a pruned copy. Use a plain trainable "
                f"projection instead."
            )
    t = teacher_weight.detach().float().reshape(teacher_weight.shape[0], teacher_weight.shape[1], -1)
    s = student_weight.detach().to(t).reshape(student_weight.shape[0], student_weight.shape[1], -1)
    use_bias = teacher_bias is not None and student_bias is not None
    same_in = s.shape[1] == t.shape[1]
    found = _exact_votes(t, s)
    if found is not None and _max_diff(t, s, *found) <= EXACT_ATOL:
        out_idx, in_idx = found
    else:
        if same_in:
            in_idx = torch.arange(s.shape[1], device=t.device)
        elif found is not None:
            in_idx = found[1]
        else:
            in_idx = _chamfer_in_guess(t, s).to(t.device)
        out_idx = torch.full((s.shape[0],), -1, dtype=torch.long, device=t.device)
        for _ in range(_MAX_ALTERNATIONS):
            s_rows, t_rows = s.flatten(1), t[:, in_idx].flatten(1)
            if use_bias:
                s_rows = torch.cat([s_rows, student_bias.detach().to(s).unsqueeze(1)], 1)
                t_rows = torch.cat([t_rows, teacher_bias.detach().to(t).unsqueeze(1)], 1)
            new_out = _assign(torch.cdist(s_rows, t_rows).square()).to(t.device)
            new_in = in_idx
            if not same_in:
                s_cols = s.transpose(0, 1).flatten(1)
                t_cols = t[new_out].transpose(0, 1).flatten(1)
                new_in = _assign(torch.cdist(s_cols, t_cols).square()).to(t.device)
            if torch.equal(new_out, out_idx) and torch.equal(new_in, in_idx):
                break
            out_idx, in_idx = new_out, new_in
    max_diff = _max_diff(t, s, out_idx, in_idx)
    if use_bias:
        max_diff = max(
            max_diff, float((student_bias.detach().to(s) - teacher_bias.detach().to(t)[out_idx]).abs().max())
        )
    return ChannelMatch(tuple(out_idx.tolist()), tuple(in_idx.tolist()), max_diff, max_diff <= EXACT_ATOL)


def _describe(module: nn.Module, name: str | None) -> str:
    return f"{name!r} ({module})" if name else str(module)


def _layer_match(
    source: nn.Module,
    target: nn.Module,
    kind: type[nn.Module],
    who: str,
    source_name: str | None,
    target_name: str | None,
) -> ChannelMatch:
    for side, module in (("source", source), ("target", target)):
        if not isinstance(module, kind):
            raise TypeError(f"{who}: {side} must be an nn.{kind.__name__}, got {type(module).__name__}.")
    src, tgt = _describe(source, source_name), _describe(target, target_name)
    if source.weight.shape[2:] != target.weight.shape[2:]:
        raise ValueError(
            f"{who}: kernel shapes differ between source {src} and target {tgt}: "
            f"{tuple(source.weight.shape[2:])} vs {tuple(target.weight.shape[2:])}; an adapter needs the "
            f"target to be a channel-pruned copy of the source."
        )
    try:
        match = match_channels(source.weight, target.weight, source.bias, target.bias)
    except ValueError as exc:
        raise ValueError(f"{who}: source {src}, target {tgt}: {exc}") from None
    if not match.exact:
        warnings.warn(
            f"{who}: target {tgt} is not an exact pruned copy of source {src} (max weight difference "
            f"{match.max_abs_diff:.3g}); matched the nearest kernels one-to-one instead.",
            stacklevel=3,
        )
    return match


def _selection(n_in: int, n_out: int, pairs: list[tuple[int, int]], like: torch.Tensor) -> torch.Tensor:
    weight = torch.zeros(n_out, n_in, device=like.device, dtype=like.dtype)
    for row, col in pairs:
        weight[row, col] = 1.0
    return weight


def _conv1x1(weight: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(
        weight.shape[1], weight.shape[0], kernel_size=1, bias=False, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        conv.weight.copy_(weight[:, :, None, None])
    return conv


def _linear(weight: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
    return linear


def conv2d_adapter(
    *, source: nn.Conv2d, target: nn.Conv2d, source_name: str | None = None, target_name: str | None = None
) -> nn.Conv2d:
    """A trainable 1x1 conv narrowing the teacher's output to the student's: ``adapter(teacher_out)``.

    Use as ``loss = criterion(student_out, adapter(teacher_out))``. The adapter is initialised as the
    selection matrix of the channels the student kept, so before training
    ``adapter(teacher_out) == teacher_out[:, kept]``. Its parameters are NOT part of either model:
    pass ``adapter.parameters()`` to the optimiser.

    Args:
        source: The teacher's conv (``out_channels`` = adapter input channels).
        target: The student's conv, a channel-pruned copy (``out_channels`` = adapter outputs).
        source_name: Optional name of ``source`` for messages.
        target_name: Optional name of ``target`` for messages.

    Returns:
        ``nn.Conv2d(source.out_channels, target.out_channels, 1, bias=False)`` on the source's device/dtype.

    Raises:
        TypeError: a module is not an ``nn.Conv2d``.
        ValueError: kernel shapes differ, or the target is wider than the source (names both).

    Warns:
        UserWarning: no exact match (the student was trained after pruning or is no pruned copy).

    Example:
        >>> teacher = nn.Conv2d(3, 8, 3)
        >>> student = nn.Conv2d(3, 4, 3)
        >>> with torch.no_grad():
        ...     _ = student.weight.copy_(teacher.weight[[0, 2, 5, 7]]), student.bias.copy_(teacher.bias[[0, 2, 5, 7]])
        >>> adapter = conv2d_adapter(source=teacher, target=student)
        >>> x = torch.randn(2, 3, 6, 6)
        >>> torch.allclose(adapter(teacher(x)), student(x), atol=1e-6)
        True
    """
    match = _layer_match(source, target, nn.Conv2d, "conv2d_adapter()", source_name, target_name)
    pairs = list(enumerate(match.out_index))
    return _conv1x1(_selection(source.out_channels, target.out_channels, pairs, source.weight))


def inverted_conv2d_adapter(
    *, source: nn.Conv2d, target: nn.Conv2d, source_name: str | None = None, target_name: str | None = None
) -> nn.Conv2d:
    """A trainable 1x1 conv widening the student's output to the teacher's: ``adapter(student_out)``.

    Use as ``loss = criterion(adapter(student_out), teacher_out)``. Initialised as the embedding of the
    kept channels back into their teacher positions (other channels zero). Pass ``adapter.parameters()``
    to the optimiser.

    Args:
        source: The teacher's conv (``out_channels`` = adapter outputs).
        target: The student's conv, a channel-pruned copy (``out_channels`` = adapter inputs).
        source_name: Optional name of ``source`` for messages.
        target_name: Optional name of ``target`` for messages.

    Returns:
        ``nn.Conv2d(target.out_channels, source.out_channels, 1, bias=False)``.

    Raises:
        TypeError: a module is not an ``nn.Conv2d``.
        ValueError: kernel shapes differ, or the target is wider than the source.

    Example:
        >>> teacher = nn.Conv2d(3, 6, 1)
        >>> student = nn.Conv2d(3, 2, 1)
        >>> with torch.no_grad():
        ...     _ = student.weight.copy_(teacher.weight[[4, 1]]), student.bias.copy_(teacher.bias[[4, 1]])
        >>> adapter = inverted_conv2d_adapter(source=teacher, target=student)
        >>> adapter.weight[:, :, 0, 0].nonzero().tolist()
        [[1, 1], [4, 0]]
    """
    match = _layer_match(source, target, nn.Conv2d, "inverted_conv2d_adapter()", source_name, target_name)
    pairs = [(t, s) for s, t in enumerate(match.out_index)]
    return _conv1x1(_selection(target.out_channels, source.out_channels, pairs, source.weight))


def linear_adapter(
    *, source: nn.Linear, target: nn.Linear, source_name: str | None = None, target_name: str | None = None
) -> nn.Linear:
    """:func:`conv2d_adapter` for ``nn.Linear``: ``nn.Linear(source.out_features, target.out_features)``.

    Use as ``loss = criterion(student_out, adapter(teacher_out))``; works on ``(..., features)`` inputs
    (transformer hidden states). Pass ``adapter.parameters()`` to the optimiser.

    Args:
        source: The teacher's linear layer.
        target: The student's linear layer, a pruned copy.
        source_name: Optional name of ``source`` for messages.
        target_name: Optional name of ``target`` for messages.

    Returns:
        ``nn.Linear(source.out_features, target.out_features, bias=False)`` selecting the kept features.

    Raises:
        TypeError: a module is not an ``nn.Linear``.
        ValueError: the target is wider than the source.

    Example:
        >>> teacher = nn.Linear(5, 6)
        >>> student = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = student.weight.copy_(teacher.weight[[3, 0]][:, [0, 2, 4]]), student.bias.copy_(teacher.bias[[3, 0]])
        >>> linear_adapter(source=teacher, target=student).weight.nonzero().tolist()
        [[0, 3], [1, 0]]
    """
    match = _layer_match(source, target, nn.Linear, "linear_adapter()", source_name, target_name)
    pairs = list(enumerate(match.out_index))
    return _linear(_selection(source.out_features, target.out_features, pairs, source.weight))


def inverted_linear_adapter(
    *, source: nn.Linear, target: nn.Linear, source_name: str | None = None, target_name: str | None = None
) -> nn.Linear:
    """:func:`inverted_conv2d_adapter` for ``nn.Linear``: embeds the student's features into the teacher's.

    Use as ``loss = criterion(adapter(student_out), teacher_out)``. Pass ``adapter.parameters()`` to the
    optimiser.

    Args:
        source: The teacher's linear layer.
        target: The student's linear layer, a pruned copy.
        source_name: Optional name of ``source`` for messages.
        target_name: Optional name of ``target`` for messages.

    Returns:
        ``nn.Linear(target.out_features, source.out_features, bias=False)``.

    Raises:
        TypeError: a module is not an ``nn.Linear``.
        ValueError: the target is wider than the source.

    Example:
        >>> teacher = nn.Linear(4, 3)
        >>> student = nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = student.weight.copy_(teacher.weight[[2]]), student.bias.copy_(teacher.bias[[2]])
        >>> inverted_linear_adapter(source=teacher, target=student).weight.tolist()
        [[0.0], [0.0], [1.0]]
    """
    match = _layer_match(source, target, nn.Linear, "inverted_linear_adapter()", source_name, target_name)
    pairs = [(t, s) for s, t in enumerate(match.out_index)]
    return _linear(_selection(target.out_features, source.out_features, pairs, source.weight))
