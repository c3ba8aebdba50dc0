"""OFDDistiller: a ConfigurableDistiller that sets OFD teacher margins from the teacher's BatchNorms."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from torchpare._utils import get_submodule
from torchpare.distill.connectors import OFDTeacherConnector
from torchpare.distill.distiller import ConfigurableDistiller
from torchpare.registry import DISTILLERS

__all__ = ["OFDDistiller"]


def _bn_of(module: nn.Module, where: str) -> _BatchNorm:
    if isinstance(module, _BatchNorm):
        return module
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        raise TypeError(
            f"{where}: the recorded teacher module is a {type(module).__name__} without a BatchNorm; "
            f"OFD needs the teacher's pre-ReLU BN output: record the BN module itself (e.g. 'layer2.bn')."
        )
    return bns[-1]  # the last BN of a block is the one right before its output activation


@DISTILLERS.register(aliases=("OFD",))
class OFDDistiller(ConfigurableDistiller):
    """The OFD recipe (Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019).

    Same arguments as :class:`ConfigurableDistiller`. :meth:`prepare_from_teacher` additionally
    initialises every :class:`~torchpare.distill.connectors.OFDTeacherConnector` used on the teacher
    side from the BatchNorm of the recorded teacher module: the module itself when it is a BN (record
    the pre-ReLU BN output, e.g. ``"layer2.bn"``), else the last BN inside it.

    Raises:
        TypeError: (in ``prepare_from_teacher``) the recorded teacher module has no BatchNorm.

    Example:
        >>> from torchpare.zoo import DigitsCNN
        >>> d = OFDDistiller(
        ...     teacher_recorders={"t": {"type": "ModuleOutputs", "source": "layer2.bn"}},
        ...     student_recorders={"s": {"type": "ModuleOutputs", "source": "layer2.bn"}},
        ...     connectors={"tc": {"type": "OFDTeacherConnector"}},
        ...     distill_losses={"ofd": {"type": "OFDLoss"}},
        ...     loss_forward_mappings={"ofd": {
        ...         "s_feature": {"from_student": True, "recorder": "s"},
        ...         "t_feature": {"from_student": False, "recorder": "t", "connector": "tc"}}})
        >>> teacher = DigitsCNN(width=4)
        >>> d.prepare_from_student(DigitsCNN(width=4)); d.prepare_from_teacher(teacher)
        >>> d.connectors["tc"].margin.shape
        torch.Size([1, 16, 1, 1])
    """

    def prepare_from_teacher(self, teacher: nn.Module) -> None:
        """Attach the teacher recorders and set the OFD teacher connectors' margins from BN statistics."""
        super().prepare_from_teacher(teacher)
        done: set[str] = set()
        for loss_name, args in self.loss_forward_mappings.items():
            for arg, src in args.items():
                name = src.get("connector")
                if "from_data" in src or src["from_student"] or name is None or name in done:
                    continue
                connector = self.connectors[name]
                if not isinstance(connector, OFDTeacherConnector):
                    continue
                where = f"OFDDistiller: loss {loss_name!r} argument {arg!r} (connector {name!r})"
                source = self.teacher_recorders.get_recorder(src["recorder"]).source
                module = get_submodule(teacher, source, who=where)
                connector.init_margin_from_bn(_bn_of(module, where))
                done.add(name)
