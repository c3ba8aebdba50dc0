"""Each loss against an independent reference (numpy / explicit loops), hand-checked values and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from torchpare.distill.losses import (
    ABLoss,
    ATLoss,
    ChannelWiseDivergence,
    CRDLoss,
    DISTLoss,
    DKDLoss,
    FBKDLoss,
    FTLoss,
    KLDivergence,
    L1Loss,
    L2Loss,
    LossShapeError,
    MGDLoss,
    MSELoss,
    OFDLoss,
    PKDLoss,
    RKDAngle,
    RKDDistance,
    WSLDLoss,
)
from torchpare.distill.losses.dkd import dkd_parts
from torchpare.distill.losses.mgd import random_mask
from torchpare.registry import LOSSES

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _close(actual: torch.Tensor, expected: float) -> None:
    assert actual.item() == pytest.approx(float(expected), rel=TOL["rtol"], abs=TOL["atol"])


logit_arrays = arrays(np.float64, (3, 5), elements=st.floats(-8, 8, allow_nan=False, width=32))


# -- KLDivergence -----------------------------------------------------------------------------------
def test_kl_divergence_matches_hand_value_with_temperature():
    # tau = 2: p_S = softmax([0, 0]) = [1/2, 1/2], p_T = softmax([0, ln 3]) = [1/4, 3/4].
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[0.0, 2 * math.log(3.0)]])
    expected = 4 * (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5))
    _close(KLDivergence(tau=2.0)(s, t), expected)


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
def test_kl_divergence_matches_numpy_loops(reduction):
    s, t, tau = torch.randn(4, 6), torch.randn(4, 6), 3.0
    p_s, p_t = _softmax(_np(s) / tau), _softmax(_np(t) / tau)
    terms = [[p_t[i, c] * math.log(p_t[i, c] / p_s[i, c]) for c in range(6)] for i in range(4)]
    total = sum(map(sum, terms))
    expected = {"batchmean": total / 4, "sum": total, "mean": total / 24}[reduction]
    _close(KLDivergence(tau=tau, reduction=reduction, loss_weight=0.5)(s, t), 0.5 * tau**2 * expected)


def test_kl_divergence_none_reduction_keeps_elementwise_shape():
    assert KLDivergence(reduction="none")(torch.randn(2, 5), torch.randn(2, 5)).shape == (2, 5)


@settings(max_examples=25, deadline=None)
@given(s=logit_arrays, t=logit_arrays, tau=st.floats(0.5, 8.0))
def test_kl_divergence_is_nonnegative_and_zero_for_equal_logits(s, t, tau):
    loss = KLDivergence(tau=tau)
    assert loss(torch.from_numpy(s), torch.from_numpy(t)).item() >= -1e-9
    assert abs(loss(torch.from_numpy(s), torch.from_numpy(s)).item()) < 1e-9


def test_kl_divergence_rejects_bad_tau_and_reduction():
    with pytest.raises(ValueError, match="KLDivergence: tau"):
        KLDivergence(tau=0.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        KLDivergence(reduction="avg")


def test_kd_and_kl_aliases_build_kl_divergence():
    assert type(LOSSES.build({"type": "KD", "tau": 4.0})) is KLDivergence
    assert LOSSES.get("KL") is KLDivergence


# -- DKD --------------------------------------------------------------------------------------------
def _dkd_reference(s, t, y, alpha, beta, tau):
    """mdistiller's formula, in numpy: binary [p_t, 1 - p_t] KL + KL over non-target classes."""
    p_s, p_t = _softmax(s / tau), _softmax(t / tau)
    total = 0.0
    for i, yi in enumerate(y):
        b_s = np.array([p_s[i, yi], 1 - p_s[i, yi]])
        b_t = np.array([p_t[i, yi], 1 - p_t[i, yi]])
        tckd = np.sum(b_t * np.log(b_t / b_s))
        others = [c for c in range(s.shape[1]) if c != yi]
        q_s = _softmax(s[i, others] / tau)
        q_t = _softmax(t[i, others] / tau)
        nckd = np.sum(q_t * np.log(q_t / q_s))
        total += alpha * tckd + beta * nckd
    return tau**2 * total / len(y)


def test_dkd_matches_numpy_reference():
    s, t, y = torch.randn(5, 7), torch.randn(5, 7), torch.tensor([0, 3, 6, 2, 2])
    expected = _dkd_reference(_np(s), _np(t), y.tolist(), alpha=1.5, beta=6.0, tau=3.0)
    _close(DKDLoss(tau=3.0, alpha=1.5, beta=6.0)(s, t, y), expected)


@settings(max_examples=25, deadline=None)
@given(
    s=logit_arrays,
    t=logit_arrays,
    tau=st.floats(1.0, 6.0),
    y=st.lists(st.integers(0, 4), min_size=3, max_size=3),
)
def test_dkd_parts_satisfy_paper_identity_kd_equals_tckd_plus_weighted_nckd(s, t, tau, y):
    s_t, t_t, labels = torch.from_numpy(s), torch.from_numpy(t), torch.tensor(y)
    tckd, nckd = dkd_parts(s_t, t_t, labels, tau)
    kd = tau**2 * F.kl_div(F.log_softmax(s_t / tau, 1), F.softmax(t_t / tau, 1), reduction="none").sum(1)
    p_target = F.softmax(t_t / tau, 1).gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(tckd + (1 - p_target) * nckd, kd, rtol=1e-6, atol=1e-8)


def test_dkd_rejects_labels_of_wrong_shape_or_range():
    s = torch.randn(3, 4)
    with pytest.raises(LossShapeError, match=r"DKDLoss: gt_labels has shape \(2,\)"):
        DKDLoss()(s, s, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"gt_labels must lie in \[0, 4\)"):
        DKDLoss()(s, s, torch.tensor([0, 1, 4]))
    with pytest.raises(TypeError, match="integer class indices"):
        DKDLoss()(s, s, torch.tensor([0.0, 1.0, 2.0]))


# -- DIST -------------------------------------------------------------------------------------------
def test_dist_matches_numpy_pearson_reference():
    s, t, tau = torch.randn(6, 5), torch.randn(6, 5), 2.0
    y_s, y_t = _softmax(_np(s) / tau), _softmax(_np(t) / tau)
    inter = 1 - np.mean([np.corrcoef(y_s[i], y_t[i])[0, 1] for i in range(6)])
    intra = 1 - np.mean([np.corrcoef(y_s[:, c], y_t[:, c])[0, 1] for c in range(5)])
    _close(DISTLoss(beta=2.0, gamma=0.5, tau=tau)(s, t), tau**2 * (2.0 * inter + 0.5 * intra))


def test_dist_is_zero_for_equal_logits_and_needs_two_samples():
    z = torch.randn(4, 6)
    assert abs(DISTLoss()(z, z).item()) < 1e-5
    with pytest.raises(LossShapeError, match=r"DISTLoss: preds_S has shape \(1, 6\)"):
        DISTLoss()(z[:1], z[:1])


# -- WSLD -------------------------------------------------------------------------------------------
def test_wsld_matches_numpy_reference():
    s, t, y, tau = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([1, 0, 4, 2]), 2.0
    ns, nt = _np(s), _np(t)
    total = 0.0
    for i, yi in enumerate(y.tolist()):
        soft_ce = -np.sum(_softmax(nt[i] / tau) * np.log(_softmax(ns[i] / tau)))
        ce_s, ce_t = -np.log(_softmax(ns[i])[yi]), -np.log(_softmax(nt[i])[yi])
        total += (1 - np.exp(-max(ce_s / (ce_t + 1e-7), 0.0))) * soft_ce
    _close(WSLDLoss(tau=tau)(s, t, y), tau**2 * total / 4)


def test_wsld_weight_carries_no_gradient_into_student():
    s = torch.randn(3, 4, requires_grad=True)
    t, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    WSLDLoss(tau=1.0)(s, t, y).backward()
    with torch.no_grad():
        w = 1 - torch.exp(
            -(F.cross_entropy(s, y, reduction="none") / (F.cross_entropy(t, y, reduction="none") + 1e-7))
        )
    expected = (w[:, None] * (F.softmax(s, 1) - F.softmax(t, 1))) / 3
    torch.testing.assert_close(s.grad, expected.detach(), **TOL)


# -- ChannelWiseDivergence ----------------------------------------------------------------------------
def test_cwd_matches_per_channel_numpy_loops():
    s, t, tau = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), 4.0
    total = 0.0
    for n in range(2):
        for c in range(3):
            p_s = _softmax(_np(s[n, c]).ravel() / tau)
            p_t = _softmax(_np(t[n, c]).ravel() / tau)
            total += np.sum(p_t * np.log(p_t / p_s))
    _close(ChannelWiseDivergence(tau=tau)(s, t), tau**2 * total / 6)


def test_cwd_alias_and_rejects_two_dim_inputs():
    assert LOSSES.get("CWD") is ChannelWiseDivergence
    with pytest.raises(LossShapeError, match="ChannelWiseDivergence: s_feature must be"):
        ChannelWiseDivergence()(torch.randn(2, 3), torch.randn(2, 3))


# -- AT / FT / AB / OFD ------------------------------------------------------------------------------
def test_at_matches_numpy_reference_with_different_channels():
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)

    def att(x):
        a = (np.abs(x) ** 2).mean(1).reshape(x.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    _close(ATLoss()(s, t), np.mean((att(_np(s)) - att(_np(t))) ** 2))


def test_ft_matches_numpy_reference():
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    fs, ft = _np(s).reshape(2, -1), _np(t).reshape(2, -1)
    fs = fs / np.linalg.norm(fs, axis=1, keepdims=True)
    ft = ft / np.linalg.norm(ft, axis=1, keepdims=True)
    _close(FTLoss()(s, t), np.mean(np.abs(fs - ft)))


def test_ab_matches_elementwise_loop():
    s, t, m = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2), 0.7
    total = 0.0
    for a, b in zip(s.flatten().tolist(), t.flatten().tolist()):
        if b <= 0 and a > -m:
            total += (a + m) ** 2
        elif b > 0 and a <= m:
            total += (a - m) ** 2
    _close(ABLoss(margin=m)(s, t), total / 2 / 1000 * 3)


def test_ab_is_zero_when_student_is_past_the_margin_on_the_teacher_side():
    t = torch.tensor([[1.0, -1.0]])
    assert ABLoss()(torch.tensor([[1.5, -2.0]]), t).item() == 0.0


def test_ofd_skips_positions_where_student_is_below_a_negative_teacher():
    s = torch.tensor([[[[-3.0]], [[1.0]], [[-0.5]]]])
    t = torch.tensor([[[[-1.0]], [[0.0]], [[-1.0]]]])
    # channel 0: s < t < 0 -> skipped; channel 1: s > t -> 1; channel 2: s > t -> 0.25
    _close(OFDLoss(mul_factor=1.0)(s, t), 1.25)


def test_ofd_matches_numpy_reference():
    s, t = torch.randn(3, 2, 3, 3), torch.randn(3, 2, 3, 3)
    ns, nt = _np(s), _np(t)
    mask = (ns > nt) | (nt > 0)
    _close(OFDLoss()(s, t), np.sum((ns - nt) ** 2 * mask) / 3 / 1000)


# -- RKD --------------------------------------------------------------------------------------------
def _huber(a, b):
    d = np.abs(a - b)
    return np.mean(np.where(d < 1, 0.5 * d**2, d - 0.5))


def test_rkd_distance_matches_explicit_pair_loops():
    s, t = torch.randn(5, 3), torch.randn(5, 4)

    def psi(e):
        n = len(e)
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(n)] for i in range(n)])
        return d / d[~np.eye(n, dtype=bool)].mean()

    _close(RKDDistance()(s, t), _huber(psi(_np(s)), psi(_np(t))))


def test_rkd_angle_matches_explicit_triplet_loops():
    s, t = torch.randn(4, 3), torch.randn(4, 6)

    def angles(e):
        n, out = len(e), []
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    u, v = e[i] - e[j], e[k] - e[j]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    out.append(0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv)))
        return np.array(out)

    _close(RKDAngle()(s, t), _huber(angles(_np(s)), angles(_np(t))))


def test_rkd_losses_are_invariant_to_scaling_the_teacher_embedding():
    s, t = torch.randn(6, 3), torch.randn(6, 5)
    for loss in (RKDDistance(), RKDAngle()):
        torch.testing.assert_close(loss(s, 7 * t), loss(s, t), **TOL)


# -- PKD --------------------------------------------------------------------------------------------
def test_pkd_equals_scaled_one_minus_pearson_per_channel():
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ns = _np(s).transpose(1, 0, 2, 3).reshape(3, -1)
    nt = _np(t).transpose(1, 0, 2, 3).reshape(3, -1)
    n = ns.shape[1]
    expected = np.mean([(n - 1) / n * (1 - np.corrcoef(ns[c], nt[c])[0, 1]) for c in range(3)])
    assert PKDLoss()(s, t).item() == pytest.approx(expected, rel=1e-4)


def test_pkd_sums_over_feature_levels_and_resizes_student():
    s = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    t = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)]
    loss = PKDLoss()
    expected = loss(F.interpolate(s[0], size=(4, 4), mode="bilinear"), t[0]) + loss(s[1], t[1])
    torch.testing.assert_close(loss(s, t), expected)


def test_pkd_rejects_different_level_counts():
    with pytest.raises(LossShapeError, match="PKDLoss: s_feature has 2 levels but t_feature has 1"):
        PKDLoss()([torch.randn(1, 2, 2, 2)] * 2, [torch.randn(1, 2, 2, 2)])


# -- MGD --------------------------------------------------------------------------------------------
def test_mgd_without_generator_is_scaled_sum_of_squares_per_sample():
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    _close(MGDLoss(alpha_mgd=0.5)(s, t), 0.5 * np.sum((_np(s) - _np(t)) ** 2) / 2)


def test_mgd_with_zero_masking_matches_explicit_align_and_generation():
    loss = MGDLoss(3, 5, alpha_mgd=1.0, lambda_mgd=0.0)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    a = F.conv2d(s, loss.align.weight, loss.align.bias)
    g1, g2 = loss.generation[0], loss.generation[2]
    gen = F.conv2d(F.relu(F.conv2d(a, g1.weight, g1.bias, padding=1)), g2.weight, g2.bias, padding=1)
    expected = ((gen - t) ** 2).sum() / 2
    torch.testing.assert_close(loss(s, t), expected, **TOL)


def test_mgd_random_mask_drops_the_requested_fraction():
    mask = random_mask(torch.zeros(50, 4, 20, 20), lambda_mgd=0.65)
    assert mask.shape == (50, 1, 20, 20)
    assert abs(1 - mask.mean().item() - 0.65) < 0.02
    channel_mask = random_mask(torch.zeros(8, 16, 3, 3), 0.5, mask_on_channel=True)
    assert channel_mask.shape == (8, 16, 1, 1)


# -- CRD --------------------------------------------------------------------------------------------
def test_crd_matches_numpy_reference_and_updates_memory_with_momentum():
    torch.manual_seed(0)
    crd = CRDLoss(num_data=10, s_dim=4, t_dim=6, feat_dim=3, nce_k=4, nce_t=0.5, nce_m=0.5)
    s, t, idx = torch.randn(2, 4), torch.randn(2, 6), torch.tensor([1, 7])
    contrast = torch.tensor([[1, 0, 2, 3, 4], [7, 5, 6, 8, 9]])
    mem_s, mem_t = _np(crd.memory_s).copy(), _np(crd.memory_t).copy()

    def embed(x, lin):
        v = _np(x) @ _np(lin.weight).T + _np(lin.bias)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    v_s, v_t = embed(s, crd.embed_s.linear), embed(t, crd.embed_t.linear)
    out_s = np.exp(np.einsum("nkd,nd->nk", mem_t[contrast.numpy()], v_s) / 0.5)
    out_t = np.exp(np.einsum("nkd,nd->nk", mem_s[contrast.numpy()], v_t) / 0.5)
    out_s, out_t = out_s / (out_s.mean() * 10), out_t / (out_t.mean() * 10)

    def nce(x):
        noise = 4 / 10
        return (
            -(
                np.log(x[:, 0] / (x[:, 0] + noise + 1e-7)).sum()
                + np.log(noise / (x[:, 1:] + noise + 1e-7)).sum()
            )
            / 2
        )

    loss = crd(s, t, idx, contrast)
    assert loss.item() == pytest.approx(nce(out_s) + nce(out_t), rel=1e-5)
    row = 0.5 * mem_s[1] + 0.5 * v_s[0]
    np.testing.assert_allclose(_np(crd.memory_s[1]), row / np.linalg.norm(row), rtol=1e-5)
    np.testing.assert_allclose(_np(crd.memory_t[0]), mem_t[0])  # rows outside idx untouched


def test_crd_eval_mode_leaves_memory_unchanged_and_normaliser_is_fixed_once():
    crd = CRDLoss(num_data=8, s_dim=3, t_dim=3, feat_dim=2, nce_k=3)
    crd(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]))
    z = (crd.z_s.item(), crd.z_t.item())
    crd.eval()
    before = crd.memory_s.clone()
    crd(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([2, 3]))
    torch.testing.assert_close(crd.memory_s, before)
    assert (crd.z_s.item(), crd.z_t.item()) == z


def test_crd_heads_and_memory_are_in_state_dict():
    keys = set(CRDLoss(num_data=5, s_dim=2, t_dim=3, feat_dim=2, nce_k=2).state_dict())
    assert {"embed_s.linear.weight", "embed_t.linear.weight", "memory_s", "memory_t", "z_s", "z_t"} <= keys


def test_crd_rejects_bad_indices():
    crd = CRDLoss(num_data=5, s_dim=2, t_dim=2, feat_dim=2, nce_k=2)
    with pytest.raises(LossShapeError, match=r"CRDLoss: idx has shape \(3,\)"):
        crd(torch.randn(2, 2), torch.randn(2, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"idx must lie in \[0, num_data=5\)"):
        crd(torch.randn(2, 2), torch.randn(2, 2), torch.tensor([0, 5]))


# -- FBKD -------------------------------------------------------------------------------------------
def test_fbkd_matches_term_by_term_reference_at_initialisation():
    torch.manual_seed(0)
    loss = FBKDLoss(3, mask_l2_weight=1.0, channel_weight=2.0, spatial_weight=3.0, nonlocal_weight=4.0)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ns, nt = _np(s), _np(t)

    def att(x):
        a = np.abs(x).mean(1).reshape(2, -1)
        return (_softmax(a / 0.5) * 16).reshape(2, 1, 4, 4)

    mask = (att(ns) + att(nt)) / 2
    adapt = np.einsum("oc,nchw->nohw", _np(loss.adaptation.weight)[:, :, 0, 0], ns)
    adapt += _np(loss.adaptation.bias)[None, :, None, None]
    feat = np.sqrt(np.sum((nt - adapt) ** 2 * mask))
    ch = ns.mean((2, 3)) @ _np(loss.channel_adaptation.weight).T + _np(loss.channel_adaptation.bias)
    channel = np.linalg.norm(nt.mean((2, 3)) - ch)
    sp = F.conv2d(
        s.mean(1, keepdim=True), loss.spatial_adaptation.weight, loss.spatial_adaptation.bias, padding=1
    )
    spatial = np.linalg.norm(nt.mean(1, keepdims=True) - _np(sp))
    # Both non-local blocks start as the identity (zero-initialised BN), as in the reference.
    nl = np.einsum("oc,nchw->nohw", _np(loss.non_local_adaptation.weight)[:, :, 0, 0], ns)
    nl += _np(loss.non_local_adaptation.bias)[None, :, None, None]
    relation = np.linalg.norm(nt - nl)
    expected = feat + 2 * channel + 3 * spatial + 4 * relation
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-5)


# -- L1 / L2 / MSE ----------------------------------------------------------------------------------
def test_l1_l2_mse_match_numpy():
    s, t = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    d = _np(s) - _np(t)
    _close(L1Loss()(s, t), np.mean(np.abs(d)))
    _close(L1Loss(reduction="sum")(s, t), np.sum(np.abs(d)))
    _close(MSELoss()(s, t), np.mean(d**2))
    _close(L2Loss()(s, t), np.sum(d**2) / 3)
    _close(L2Loss(div_element=True, dist=True)(s, t), np.sqrt(np.sum(d**2) / d.size))
    fs, ft = _np(s).reshape(3, -1), _np(t).reshape(3, -1)
    fs, ft = fs / np.linalg.norm(fs, axis=1, keepdims=True), ft / np.linalg.norm(ft, axis=1, keepdims=True)
    _close(L2Loss(normalize=True)(s, t), np.sum((fs - ft) ** 2) / 3)


def test_fitnets_alias_is_plain_mse():
    assert LOSSES.get("FitNets") is MSELoss
    assert LOSSES.get("MSE") is MSELoss


def test_loss_rejects_non_tensor_input_with_argument_name():
    with pytest.raises(TypeError, match="MSELoss: t_feature must be a torch.Tensor, got tuple"):
        MSELoss()(torch.randn(2), (torch.randn(2),))


def test_logit_and_crd_losses_stay_finite_under_cpu_autocast_in_bfloat16():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    crd = CRDLoss(num_data=8, s_dim=10, t_dim=10, feat_dim=4, nce_k=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = [
            KLDivergence(tau=4.0)(s.bfloat16(), t.bfloat16()),
            DKDLoss()(s.bfloat16(), t.bfloat16(), torch.arange(4)),
            crd(s.bfloat16(), t.bfloat16(), torch.arange(4)),
        ]
    assert all(torch.isfinite(o) for o in outs)


def test_dkd_on_two_classes_reduces_to_kd_times_alpha():
    # With two classes the non-target distribution has one outcome (NCKD = 0) and b = p, so TCKD = KD.
    s, t, y = torch.randn(6, 2), torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    kd = KLDivergence(tau=3.0)(s, t)
    torch.testing.assert_close(DKDLoss(tau=3.0, alpha=2.0, beta=5.0)(s, t, y), 2.0 * kd, **TOL)


@pytest.mark.parametrize(
    ("loss", "fix"),
    [(MGDLoss(3, 5), "set student_channels=5"), (FBKDLoss(3), "set in_channels=5")],
)
def test_losses_with_own_layers_name_the_channel_argument_to_fix(loss, fix):
    s = t = torch.randn(2, 5, 4, 4)
    with pytest.raises(LossShapeError, match=rf"\(2, 5, 4, 4\).*{fix}"):
        loss(s, t)


@pytest.mark.parametrize(
    ("loss", "shapes", "extra"),
    [
        (KLDivergence(tau=2.0), ((3, 4), (3, 4)), ()),
        (DKDLoss(tau=2.0), ((3, 4), (3, 4)), (torch.tensor([0, 3, 1]),)),
        (ChannelWiseDivergence(tau=2.0), ((2, 2, 3, 3), (2, 2, 3, 3)), ()),
        (RKDDistance(), ((4, 3), (4, 5)), ()),
        (RKDAngle(), ((4, 3), (4, 5)), ()),
        (PKDLoss(), ((2, 2, 3, 3), (2, 2, 3, 3)), ()),
    ],
)
def test_analytic_gradients_match_finite_differences(loss, shapes, extra):
    s = torch.randn(*shapes[0], dtype=torch.float64, requires_grad=True)
    t = torch.randn(*shapes[1], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, *extra), (s,))
