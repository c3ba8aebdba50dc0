"""Model input/output, written once for ``distill`` and ``engine``: call a model on a batch, read its
logits, the supervised cross-entropy on them, and load a state-dict file into it.

The rules, in one place:

* **Calling** (:func:`call_model`): a tensor is passed as the one argument (``model(x)``); a tuple or a
  list is unpacked into positional arguments (``model(*x)``); a mapping into keyword arguments
  (``model(**x)``, e.g. a Hugging Face batch), unless the model takes the mapping itself as its one
  input (:func:`takes_mapping`: a ``SentenceTransformer``'s ``forward(features)``); then ``model(dict(x))``
  (a copy: such a model may write its outputs into the mapping, and a batch often goes to two models).
  Anything else is passed as is.
* **Logits** (:func:`logits_of`): the output itself if it is a tensor, else ``output["logits"]`` /
  ``output.logits`` (Hugging Face ``ModelOutput``), else the first item of a tuple/list when it is a
  tensor; anything else raises ``TypeError``.
* **Unlabelled samples** (:func:`masked_cross_entropy`): a negative class target (``-100``, the
  PyTorch/Hugging Face convention, or any other value ``< 0``) marks a sample without a label; it is
  left out of the mean. A batch with no labelled sample gives a zero that still depends on the logits.
* **State-dict files** (:func:`load_state_dict_file`): ``torch.load(..., weights_only=True)`` or
  ``.safetensors``; a wrapper dict (``{"state_dict": ...}``, ``{"model": ...}``) and the ``module.``
  prefix of ``DistributedDataParallel`` are removed; shapes are compared before anything is copied;
  a file that does not fill every parameter/buffer (or brings unknown ones) is an error naming the
  first missing and unexpected keys, unless ``strict=False``.

This module stands on the ground floor beside :mod:`torchpare.registry`: it imports only torch.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "UNLABELLED",
    "StateDictFileError",
    "call_model",
    "takes_mapping",
    "logits_of",
    "masked_cross_entropy",
    "read_state_dict_file",
    "load_state_dict_file",
]

#: The target of an unlabelled sample written by torchpare (any negative target counts as unlabelled).
UNLABELLED = -100


class StateDictFileError(ValueError):
    """A state-dict file is unreadable, not a state dict, or does not fit the model."""


@functools.lru_cache(maxsize=256)
def _one_input(forward: Any, keys: tuple[str, ...], bound: bool) -> bool:
    try:
        params = dict(inspect.signature(forward).parameters)
    except (TypeError, ValueError):  # builtins without a signature: keywords, as before
        return False
    if bound and params:  # the function of a bound method: drop ``self``
        params.pop(next(iter(params)))
    named = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if all(k in named for k in keys):
        return False
    required = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.default is p.empty]
    return len(required) == 1 and required[0].name not in keys


def takes_mapping(model: Any, inputs: Any) -> bool:
    """Whether ``model`` takes the mapping ``inputs`` as its one positional input rather than as keywords.

    True when ``inputs`` is a mapping, some key is not a named parameter of the model's ``forward``, and
    ``forward`` has exactly one required positional parameter, which no key names: a
    ``SentenceTransformer`` (``forward(input, **kwargs)``) given a tokenizer's dict. A Hugging Face model
    (``forward(input_ids=None, attention_mask=None, ...)``) takes the same dict as keywords.

    Example:
        >>> import torch
        >>> class Features(torch.nn.Module):
        ...     def forward(self, features, **kwargs):
        ...         return features["input_ids"] * 2
        >>> takes_mapping(Features(), {"input_ids": 1}), takes_mapping(lambda input_ids: 0, {"input_ids": 1})
        (True, False)
        >>> call_model(Features(), {"input_ids": torch.tensor(3)}).item()
        6
    """
    if not isinstance(inputs, Mapping):
        return False
    forward = getattr(model, "forward", model) if isinstance(model, nn.Module) else model
    func = getattr(forward, "__func__", None)  # a bound method: its function (cached per class)
    keys = tuple(str(k) for k in inputs)
    try:
        return _one_input(func or forward, keys, func is not None)
    except TypeError:  # an unhashable callable
        return _one_input.__wrapped__(func or forward, keys, func is not None)


def call_model(model: Any, inputs: Any) -> Any:
    """Call ``model`` on a batch's inputs: tensor ``model(x)``, tuple/list ``model(*x)``, mapping ``model(**x)``
    (or ``model(x)`` when the model takes the mapping as its one input, see :func:`takes_mapping`).

    Example:
        >>> import torch
        >>> call_model(torch.add, (torch.tensor(1), torch.tensor(2))).item()
        3
        >>> call_model(lambda a, b=0: a + b, {"a": 1, "b": 2})
        3
        >>> call_model(torch.nn.Identity(), torch.ones(2)).shape
        torch.Size([2])
    """
    if isinstance(inputs, Mapping):
        # a shallow copy: a SentenceTransformer adds its outputs to the dict it is given, and a batch is
        # often given to two models (student and teacher)
        return model(dict(inputs)) if takes_mapping(model, inputs) else model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output (see the module docstring for the rule).

    Raises:
        TypeError: no logits tensor in ``output`` (the message names its type).

    Example:
        >>> import torch
        >>> logits_of((torch.zeros(2, 3), "aux")).shape, logits_of({"logits": torch.ones(1)}).item()
        (torch.Size([2, 3]), 1.0)
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output:
        value = output["logits"]
    elif hasattr(output, "logits"):
        value = output.logits
    elif isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        value = output[0]
    else:
        value = None
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"logits_of(): cannot find logits in a model output of type {type(output).__name__}; return a "
            f"tensor, a tuple whose first item is the logits, or an object/dict with 'logits', or pass a "
            f"student_loss / loss_fn that reads your output."
        )
    return value


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the labelled samples; targets ``< 0`` (e.g. ``-100``) are unlabelled.

    Sequence logits ``(N, L, C)`` against targets ``(N, L)`` are flattened. Floating-point targets of
    the logits' shape are class probabilities (soft labels) and are used as they are.

    Example:
        >>> import torch
        >>> float(masked_cross_entropy(torch.zeros(2, 4), torch.tensor([-100, -1])))
        0.0
        >>> round(float(masked_cross_entropy(torch.zeros(2, 4), torch.tensor([3, -100]))), 4)
        1.3863
    """
    if targets.is_floating_point() and targets.shape == logits.shape:
        return F.cross_entropy(logits, targets)
    if logits.dim() > 2:  # sequence logits (N, L, C) against (N, L) targets
        logits = logits.flatten(0, -2)
        targets = targets.flatten()
    labelled = targets >= 0
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    if not bool(labelled.all()):
        targets = torch.where(labelled, targets, torch.full_like(targets, UNLABELLED))
    return F.cross_entropy(logits, targets, ignore_index=UNLABELLED)


def read_state_dict_file(
    path: str | Path, where: str, unwrap: Sequence[str] = ("state_dict", "model"), hint: str = ""
) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (``weights_only=True``, or ``.safetensors``), unwrapped.

    Args:
        path: The file.
        where: Start of every message (who asks, and for which argument).
        unwrap: Keys of a wrapper dict holding the state dict (first found wins, nested wrappers too).
        hint: Appended to the "not a state dict" message (what to give instead).

    Returns:
        Name -> tensor, with a ``module.`` prefix on every key (``DistributedDataParallel``) kept; see
        :func:`load_state_dict_file` for its removal.

    Raises:
        FileNotFoundError: no file at ``path``.
        StateDictFileError: (a ValueError) not loadable with ``weights_only=True`` or not a mapping of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no checkpoint file at '{path}'.")
    hint = hint or "give a file written by torch.save(model.state_dict(), path) or safetensors"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and safetensors errors all mean "not a state dict"
        # torch's weights_only message advises weights_only=False (unsafe); keep only its actual cause
        text = str(exc).split("WeightsUnpickler error:", 1)[-1]
        cause = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
        cause = cause.replace("weights_only=False", "an unsafe load")
        raise StateDictFileError(
            f"{where}: '{path}' is not a torch state dict ({type(exc).__name__}: {cause[:200]}); {hint}."
        ) from None
    unwrapped = True
    while unwrapped and isinstance(state, Mapping):
        unwrapped = False
        for key in unwrap:
            if isinstance(state.get(key), Mapping):
                state, unwrapped = state[key], True
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StateDictFileError(
            f"{where}: '{path}' is not a torch state dict (it holds a {type(state).__name__}"
            f"{' with non-tensor values' if isinstance(state, Mapping) else ''}); {hint}."
        )
    return dict(state)


def load_state_dict_file(
    model: nn.Module,
    path: str | Path,
    where: str,
    *,
    strict: bool = True,
    unwrap: Sequence[str] = ("state_dict", "model"),
    hint: str = "",
    fix: str = "build the model with the arguments (width, hidden, ...) it was trained with",
) -> dict[str, list[str]]:
    """Load a state-dict file into ``model`` (in place), checking that it fits first.

    Args:
        model: The module to load into.
        path: A ``torch.save`` file (read with ``weights_only=True``) or ``.safetensors``.
        where: Start of every message, e.g. ``"SingleTeacherDistill(teacher_ckpt)"`` or ``"model.checkpoint"``.
        strict: ``True`` (default): every parameter and buffer of ``model`` must be in the file and the
            file must hold nothing else. ``False``: load what matches, warn about the rest.
        unwrap: Keys of a wrapper dict holding the state dict (``()`` accepts bare state dicts only).
        hint: What to give instead, for the "not a state dict" message.
        fix: How to fix a shape or key mismatch, for the messages.

    Returns:
        ``{"missing_keys": [...], "unexpected_keys": [...]}`` (both empty when ``strict``).

    Raises:
        FileNotFoundError: no file at ``path``.
        StateDictFileError: (a ValueError) not a state dict; a tensor's shape differs (the first is named
            with both shapes, and nothing is copied); with ``strict``, missing or unexpected keys (the
            first of each are named).

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save({"state_dict": {"module.weight": torch.ones(4, 2), "module.bias": torch.zeros(4)}},
        ...                f"{tmp}/ddp.pt")
        ...     model = nn.Linear(2, 4)
        ...     load_state_dict_file(model, f"{tmp}/ddp.pt", "demo"), float(model.weight.detach().sum())
        ({'missing_keys': [], 'unexpected_keys': []}, 8.0)
    """
    state = read_state_dict_file(path, where, unwrap=unwrap, hint=hint)
    own = model.state_dict()
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
        state = {k[len(prefix):]: v for k, v in state.items()}
    name = type(model).__name__
    differ = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if differ:
        k = differ[0]
        raise StateDictFileError(
            f"{where}: '{path}' does not fit {name}: {len(differ)} tensor(s) differ in shape, first {k} "
            f"{tuple(state[k].shape)} in the file vs {tuple(own[k].shape)} in the model; {fix}."
        )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if (missing or unexpected) and strict:
        raise StateDictFileError(
            f"{where}: '{path}' does not fill {name}: {len(missing)} missing key(s)"
            f"{' (first ' + ', '.join(missing[:3]) + ')' if missing else ''}, {len(unexpected)} unexpected "
            f"key(s){' (first ' + ', '.join(unexpected[:3]) + ')' if unexpected else ''}; {fix}, or load "
            f"it partially with strict: false."
        )
    result = model.load_state_dict(state, strict=False)
    report = {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys)}
    if report["missing_keys"] or report["unexpected_keys"]:
        warnings.warn(
            f"{where}: loading '{path}' into {name} with strict=False: "
            f"missing keys {report['missing_keys'][:10]}, unexpected keys {report['unexpected_keys'][:10]}"
            f"{' (first 10)' if max(map(len, report.values())) > 10 else ''}; those parameters keep "
            f"their initial values.",
            stacklevel=3,
        )
    return report
