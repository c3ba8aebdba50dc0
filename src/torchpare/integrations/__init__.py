"""Integrations with other training frameworks.

:mod:`torchpare.integrations.hf`: :class:`~torchpare.integrations.hf.DistillationTrainer`, a
``transformers.Trainer`` that adds a :class:`~torchpare.distill.distiller.ConfigurableDistiller` (or the
short :class:`~torchpare.distill.mapping.Mapping` API) to an existing Trainer script.

The sub-modules import their framework on import; this package imports nothing.
"""
