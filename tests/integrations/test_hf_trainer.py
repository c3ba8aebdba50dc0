"""DistillationTrainer: a transformers.Trainer script distils a tiny BERT classifier from a bigger one, offline."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from torchpare.distill.mapping import Mapping  # noqa: E402
from torchpare.integrations.hf import DISTILLER_STATE_NAME, DistillationTrainer  # noqa: E402
from torchpare.prune import prune  # noqa: E402


def _bert(hidden: int, layers: int, heads: int, seed: int) -> Any:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                  intermediate_size=2 * hidden, max_position_embeddings=16, num_labels=3)
    return transformers.BertForSequenceClassification(cfg)


def _data(n: int = 16) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 64, (n, 8), generator=g)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": ids[i, 0] % 3}
            for i in range(n)]


def _args(tmp_path: Any, **kw: Any) -> Any:
    kw = {"max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 2, "save_strategy": "no", **kw}
    return transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, seed=0,
                                          learning_rate=1e-3, **kw)


KD = {  # logits KL (student) <- logits (teacher), through the distiller config
    "student_recorders": {"logits": {"type": "ModuleOutputs", "source": "classifier"}},
    "teacher_recorders": {"logits": {"type": "ModuleOutputs", "source": "classifier"}},
    "distill_losses": {"kd": {"type": "KLDivergence", "tau": 2.0, "loss_weight": 1.0}},
    "loss_forward_mappings": {"kd": {"preds_S": {"from_student": True, "recorder": "logits"},
                                     "preds_T": {"from_student": False, "recorder": "logits"}}},
}


def test_distill_loss_is_logged_next_to_the_task_loss_and_the_teacher_is_unchanged(tmp_path):
    student, teacher = _bert(16, 1, 2, 0), _bert(32, 2, 4, 1)
    teacher.train()  # the trainer puts it in eval mode
    before = copy.deepcopy(teacher.state_dict())
    trainer = DistillationTrainer(model=student, args=_args(tmp_path), train_dataset=_data(), teacher_model=teacher,
                                  distiller=copy.deepcopy(KD))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    for entry in logged:
        assert {"loss_kd", "task_loss", "distill_loss"} <= set(entry)
        assert entry["loss_kd"] > 0 and entry["task_loss"] > 0
        # Trainer's "loss" is the mean total loss: task + distill (rounded in the log)
        assert entry["loss"] == pytest.approx(entry["task_loss"] + entry["distill_loss"], rel=1e-3, abs=1e-3)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_gradient_accumulation_keeps_the_distill_loss_weight(tmp_path):
    student, teacher = _bert(16, 1, 2, 0), _bert(32, 2, 4, 1)
    args = _args(tmp_path, max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=2, logging_steps=2)
    kd = copy.deepcopy(KD)
    kd["distill_losses"]["kd"]["loss_weight"] = 1000.0  # Trainer logs "loss" rounded to 4 decimals
    trainer = DistillationTrainer(model=student, args=args, train_dataset=_data(8), teacher_model=teacher,
                                  distiller=kd, task_loss_weight=0.0)
    trainer.train()
    (entry,) = [h for h in trainer.state.log_history if "loss_kd" in h]
    # Trainer's "loss" sums the returned micro-batch losses per optimiser step: equal to the mean distill loss
    # only when each micro-batch's share is divided by the accumulation steps exactly once
    assert entry["distill_loss"] > 0.05
    assert entry["loss"] == pytest.approx(entry["distill_loss"], rel=0.01)


def test_mapping_payloads_distil_hidden_states_and_logits_under_their_names(tmp_path):
    student, teacher = _bert(16, 1, 2, 0), _bert(32, 2, 4, 1)
    connector = nn.Linear(16, 32)  # student width -> teacher width, trained with the student
    w0 = connector.weight.detach().clone()
    mapping = Mapping(student, teacher).add(
        "bert.encoder.layer.0.output", "bert.encoder.layer.1.output",
        payload={"loss": lambda s, t: nn.functional.mse_loss(connector(s), t), "weight": 0.5, "name": "hidden"})
    mapping.add("classifier", "classifier", payload=nn.MSELoss())
    trainer = DistillationTrainer(model=student, args=_args(tmp_path), train_dataset=_data(), teacher_model=teacher,
                                  mapping=mapping, task_loss_weight=0.0)
    trainer.train()
    last = [h for h in trainer.state.log_history if "loss" in h][-1]
    assert {"loss_hidden", "loss_classifier", "distill_loss"} <= set(last) and "task_loss" not in last
    # the lambda's connector is not a module of the distiller: not trained (documented: pass nn.Modules)
    torch.testing.assert_close(connector.weight, w0)


def test_resume_from_a_saved_checkpoint_continues_to_the_same_weights(tmp_path):
    student, teacher = _bert(16, 1, 2, 0), _bert(32, 2, 4, 1)
    args = _args(tmp_path, save_strategy="steps", save_steps=2)
    first = DistillationTrainer(model=student, args=args, train_dataset=_data(), teacher_model=teacher,
                                distiller=copy.deepcopy(KD))
    first.train()
    ckpt = tmp_path / "checkpoint-2"
    assert (ckpt / "trainer_state.json").is_file()
    student2 = _bert(16, 1, 2, 0)
    trainer = DistillationTrainer(model=student2, args=args, train_dataset=_data(), teacher_model=teacher,
                                  distiller=copy.deepcopy(KD))
    trainer.train(resume_from_checkpoint=str(ckpt))
    assert trainer.state.global_step == 4
    logged = [h for h in trainer.state.log_history if "loss_kd" in h]
    assert [h["step"] for h in logged] == [2, 4]  # step 2 from the checkpoint's history, step 4 trained now
    assert logged[0] == [h for h in first.state.log_history if "loss_kd" in h][0]
    # the resumed run ends where the uninterrupted one did
    for (name, p), q in zip(student.named_parameters(), student2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_a_head_pruned_student_trains_checkpoints_and_resumes(tmp_path):
    student, teacher = _bert(32, 2, 4, 0), _bert(32, 2, 4, 1)
    example = {"input_ids": torch.randint(4, 64, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # head granularity / config widths
        prune(student.bert, example, importance="l1", target_params_ratio=0.7, units=("head",))
    heads = [layer.attention.self.query.out_features for layer in student.bert.encoder.layer]
    assert heads != [32, 32]
    args = _args(tmp_path, save_strategy="steps", save_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        DistillationTrainer(model=student, args=args, train_dataset=_data(), teacher_model=teacher,
                            distiller=copy.deepcopy(KD)).train()
    resumed = copy.deepcopy(student)
    with torch.no_grad():
        for p in resumed.parameters():
            p.zero_()
    trainer = DistillationTrainer(model=resumed, args=args, train_dataset=_data(), teacher_model=teacher,
                                  distiller=copy.deepcopy(KD))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert [layer.attention.self.query.out_features for layer in resumed.bert.encoder.layer] == heads
    for (name, p), q in zip(student.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_trainable_connectors_join_the_optimizer_and_are_saved_and_reloaded(tmp_path):
    cfg = copy.deepcopy(KD)
    cfg["connectors"] = {"proj": nn.Linear(3, 3)}
    cfg["loss_forward_mappings"]["kd"]["preds_S"]["connector"] = "proj"
    student, teacher = _bert(16, 1, 2, 0), _bert(32, 2, 4, 1)
    args = _args(tmp_path, save_strategy="steps", save_steps=4)
    trainer = DistillationTrainer(model=student, args=args, train_dataset=_data(), teacher_model=teacher,
                                  distiller=cfg)
    w0 = trainer.distiller.connectors["proj"].weight.detach().clone()
    trainer.train()
    trained = trainer.distiller.connectors["proj"].weight.detach()
    assert not torch.equal(trained, w0)
    assert (tmp_path / "checkpoint-4" / DISTILLER_STATE_NAME).is_file()
    cfg2 = copy.deepcopy(KD)
    cfg2["connectors"] = {"proj": nn.Linear(3, 3)}
    cfg2["loss_forward_mappings"]["kd"]["preds_S"]["connector"] = "proj"
    other = DistillationTrainer(model=_bert(16, 1, 2, 0), args=args, train_dataset=_data(), teacher_model=teacher,
                                distiller=cfg2)
    other._load_from_checkpoint(str(tmp_path / "checkpoint-4"))
    torch.testing.assert_close(other.distiller.connectors["proj"].weight, trained)


def test_bad_arguments_raise_clear_errors(tmp_path):
    student, teacher = _bert(16, 1, 2, 0), _bert(32, 2, 4, 1)
    with pytest.raises(TypeError, match="exactly one of distiller"):
        DistillationTrainer(model=student, args=_args(tmp_path), teacher_model=teacher)
    with pytest.raises(TypeError, match="built for other models"):
        DistillationTrainer(model=student, args=_args(tmp_path), teacher_model=teacher,
                            mapping=Mapping(teacher, student).add("classifier", "classifier", payload=nn.MSELoss()))
    with pytest.raises(TypeError, match="loss callable"):
        DistillationTrainer(model=student, args=_args(tmp_path), teacher_model=teacher,
                            mapping=Mapping(student, teacher).add("classifier", "classifier", payload=3))
    with pytest.raises(KeyError, match="classifer"):
        Mapping(student, teacher).add("classifer", "classifier")
