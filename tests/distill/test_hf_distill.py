"""Distillation between Hugging Face models (random init from small configs, offline)."""

from __future__ import annotations

import pytest
import torch

from torchpare.distill.algorithms import SingleTeacherDistill
from torchpare.distill.losses import KLDivergence

transformers = pytest.importorskip("transformers")


def bert(hidden: int, layers: int):
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=16,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(hidden + layers)
    return transformers.BertForSequenceClassification(config)


def kd(source: str, data_idx=None):
    side = {"recorder": "logits", **({"data_idx": data_idx} if data_idx is not None else {})}
    return {
        "student_recorders": {"logits": {"type": "ModuleOutputs", "source": source}},
        "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": source}},
        "distill_losses": {"kl": {"type": "KLDivergence", "tau": 2}},
        "loss_forward_mappings": {
            "kl": {"preds_S": {"from_student": True, **side}, "preds_T": {"from_student": False, **side}}
        },
    }


def batch(with_labels: bool = True):
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(1, 64, (4, 8), generator=gen),
        "attention_mask": torch.ones(4, 8, dtype=torch.long),
    }
    if with_labels:
        inputs["labels"] = torch.tensor([0, 1, 2, 1])
    return inputs


@pytest.mark.parametrize(
    ("source", "data_idx"),
    [("classifier", None), ("", "logits")],
    ids=["classifier-module", "model-output-field"],
)
def test_bert_teacher_to_smaller_bert_student_with_hf_student_loss(source, data_idx):
    teacher, student = bert(32, 2), bert(16, 1)
    algo = SingleTeacherDistill(student, teacher, kd(source, data_idx))
    algo.train()
    inputs = batch()
    losses = algo.loss(inputs)  # labels are inside inputs: the student's own HF loss is used
    assert set(losses) == {"student.loss", "distill.loss_kl"}
    with torch.no_grad():
        s_out, t_out = student(**inputs), teacher(**inputs)
    torch.testing.assert_close(losses["student.loss"].detach(), s_out.loss)
    torch.testing.assert_close(
        losses["distill.loss_kl"].detach(), KLDivergence(tau=2)(s_out.logits, t_out.logits)
    )
    algo.total_loss(losses).backward()
    assert student.classifier.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_bert_distillation_without_labels_trains_on_the_distill_loss_only():
    teacher, student = bert(32, 2), bert(16, 1)
    algo = SingleTeacherDistill(student, teacher, kd("classifier"))
    inputs = batch(with_labels=False)
    opt = torch.optim.Adam(algo.trainable_parameters(), lr=1e-2)
    values = []
    for _ in range(8):
        opt.zero_grad()
        losses = algo.loss(inputs)
        assert set(losses) == {"distill.loss_kl"}
        algo.total_loss(losses).backward()
        opt.step()
        values.append(losses["distill.loss_kl"].item())
    assert values[-1] < values[0]
