"""Write pruned sizes back into a Hugging Face ``model.config``: :func:`sync_hf_config`.

The attention rules (``hf_attention.py``) keep every module's own attributes right while pruning;
this is the model-level step after it, for the shared config that ``save_pretrained`` writes.
It needs no ``transformers`` import: it reads modules and config attributes only.
"""

from __future__ import annotations

from torch import nn

__all__ = ["sync_hf_config"]


def sync_hf_config(model: nn.Module) -> list[str]:
    """Write uniform pruned sizes back into a Hugging Face ``model.config`` where it can express them.

    Head pruning leaves the per-module attributes right but the shared config stale. When every
    ``q_proj``/``k_proj`` attention module (LLaMA-style) keeps the same number of query and kv heads,
    ``num_attention_heads``, ``num_key_value_heads``, an explicit ``head_dim`` and ``hidden_size``
    (the input embedding width) are updated; when
    every gated MLP (``gate_proj``/``up_proj``/``down_proj``) keeps the same width,
    ``intermediate_size`` is. Per-layer differences (global pruning) cannot be expressed and are left
    alone, as are layouts whose config derives the head size from the hidden size (BERT, ViT, GPT-2).

    Args:
        model: A (pruned) model; models without a ``config`` are ignored.

    Returns:
        The names of the config fields changed.

    Example:
        >>> sync_hf_config(nn.Linear(2, 2))  # no config: nothing to do
        []
    """
    config = getattr(model, "config", None)
    if config is None:
        return []
    heads: set[tuple[int, int, int]] = set()
    widths: set[int] = set()
    for module in model.modules():
        names = dict(module.named_children())
        head_dim = getattr(module, "head_dim", None)
        if {"q_proj", "k_proj"} <= set(names) and isinstance(head_dim, int):
            q, k = names["q_proj"], names["k_proj"]
            if isinstance(q, nn.Linear) and isinstance(k, nn.Linear):
                heads.add((q.out_features // head_dim, k.out_features // head_dim, head_dim))
        if {"gate_proj", "up_proj", "down_proj"} <= set(names) and isinstance(names["up_proj"], nn.Linear):
            widths.add(names["up_proj"].out_features)
    changed = []
    if len(heads) == 1 and hasattr(config, "num_key_value_heads"):
        n_q, n_kv, head_dim = heads.pop()
        updates = {"num_attention_heads": n_q, "num_key_value_heads": n_kv, "head_dim": head_dim}
        # The residual stream is one group, so a pruned hidden size is uniform by nature; these
        # configs read head_dim explicitly, so hidden_size no longer fixes the head size.
        get_embeddings = getattr(model, "get_input_embeddings", None)
        embeddings = get_embeddings() if callable(get_embeddings) else None
        if isinstance(embeddings, nn.Embedding):
            updates["hidden_size"] = embeddings.embedding_dim
        for field_name, value in updates.items():
            if getattr(config, field_name, None) != value:
                setattr(config, field_name, value)
                changed.append(field_name)
    if len(widths) == 1 and isinstance(getattr(config, "intermediate_size", None), int):
        width = widths.pop()
        if config.intermediate_size != width:
            config.intermediate_size = width
            changed.append("intermediate_size")
    return changed
