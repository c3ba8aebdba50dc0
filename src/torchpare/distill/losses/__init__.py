"""Distillation losses, one paper per file: a functional core beside a thin ``nn.Module``.

Every class is registered in ``LOSSES`` (see ``docs/losses.md`` for names, aliases and forward
arguments). Forward argument names are fixed: logit losses ``forward(preds_S, preds_T)``, feature
losses ``forward(s_feature, t_feature)``; DKD/WSLD add ``gt_labels``, CRD ``idx, contrast_idx``.
"""

from torchpare.distill.losses._checks import LossShapeError
from torchpare.distill.losses.ab import ABLoss
from torchpare.distill.losses.at import ATLoss
from torchpare.distill.losses.crd import CRDLoss
from torchpare.distill.losses.cwd import ChannelWiseDivergence
from torchpare.distill.losses.dist import DISTLoss
from torchpare.distill.losses.dkd import DKDLoss
from torchpare.distill.losses.fbkd import FBKDLoss
from torchpare.distill.losses.ft import FTLoss
from torchpare.distill.losses.kl_divergence import KLDivergence
from torchpare.distill.losses.l1_loss import L1Loss
from torchpare.distill.losses.l2_loss import L2Loss, MSELoss
from torchpare.distill.losses.mgd import MGDLoss
from torchpare.distill.losses.ofd import OFDLoss
from torchpare.distill.losses.pkd import PKDLoss
from torchpare.distill.losses.rkd import RKDAngle, RKDDistance
from torchpare.distill.losses.wsld import WSLDLoss

__all__ = [
    "ABLoss",
    "ATLoss",
    "CRDLoss",
    "ChannelWiseDivergence",
    "DISTLoss",
    "DKDLoss",
    "FBKDLoss",
    "FTLoss",
    "KLDivergence",
    "L1Loss",
    "L2Loss",
    "LossShapeError",
    "MGDLoss",
    "MSELoss",
    "OFDLoss",
    "PKDLoss",
    "RKDAngle",
    "RKDDistance",
    "WSLDLoss",
]
