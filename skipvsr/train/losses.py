"""Training losses of SkipVSR (paper Sec. 3.3-3.5).

``L = L_rec + lambda1 * L_mask + lambda2 * L_error``

* :func:`charbonnier` - reconstruction ``L_rec`` (Eq. 12).
* :func:`mask_loss` - regression of the confidence estimator onto ``S~ = 1 - tanh(theta * d)``
  (Eq. 7-8).
* :func:`feature_alignment_loss` - temporal feature alignment ``L_error``: attention-map
  distillation of the student's trunk features onto the frozen teacher's (Eq. 10-11).
"""

from __future__ import annotations

import torch

MAPPINGS = ("sum", "sum2", "max")


def charbonnier(sr: torch.Tensor, hr: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``L_rec = mean( sqrt((SR - HR)^2 + eps^2) )`` over every element.

    The paper's OCR gives ``eps = 1e-8`` without saying whether it is squared; BasicSR's
    Charbonnier (the loss the official BasicVSR was trained with) adds ``1e-12`` under the
    root, i.e. ``eps = 1e-6`` here. Any ``eps`` this small only keeps the gradient finite at 0.

    Args:
        sr, hr: same shape, e.g. ``(B, T, 3, 4H, 4W)`` float in [0, 1].

    Returns:
        scalar float tensor.
    """
    return torch.sqrt((sr - hr).pow(2) + eps * eps).mean()


def redundancy_target(d: torch.Tensor, theta: float) -> torch.Tensor:
    """``S~ = 1 - tanh(theta * d)`` in (0, 1]: 1 where the features already equal the target
    layer's (``d`` = per-patch RMS feature distance, ``>= 0``)."""
    return 1.0 - torch.tanh(theta * d)


def mask_loss(
    scores: list[tuple[int, int, torch.Tensor, torch.Tensor]], theta: float
) -> torch.Tensor:
    """``L_mask = mean_decisions mean_patches (S - S~)^2`` with ``S~ = 1 - tanh(theta * d)``.

    Args:
        scores: the routers' logs (``VSROutput.scores[branch]``, branches concatenated): tuples
            ``(frame, m, S, d)`` with ``S`` ``(B, nH, nW)`` the estimator's score (with grad)
            and ``d`` ``(B, nH, nW)`` the RMS distance of the student's features before block
            ``m`` to the teacher's at the target depth (no grad).
        theta: slope of the ``tanh``; larger values make ``S~`` fall faster with ``d``.

    Returns:
        scalar; zero (without grad) when nothing was logged.
    """
    if not scores:
        return torch.zeros(())
    terms = [(s - redundancy_target(d.detach(), theta)).pow(2).mean() for _, _, s, d in scores]
    return torch.stack(terms).mean()


def attention_map(h: torch.Tensor, mapping: str = "sum2") -> torch.Tensor:
    """Spatial attention map of features ``h`` ``(B, C, H, W)``, flattened and L2-normalised.

    ``sum``: ``F(h) = sum_c |h_c|``; ``sum2``: ``F(h) = sum_c |h_c|^2``;
    ``max``: ``F(h) = max_c |h_c|^2``. Returns ``q = vec(F(h)) / ||vec(F(h))||_2``, ``(B, H*W)``.
    """
    if mapping == "sum":
        a = h.abs().sum(1)
    elif mapping == "sum2":
        a = h.pow(2).sum(1)
    elif mapping == "max":
        a = h.pow(2).amax(1)
    else:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    a = a.flatten(1)
    return a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)


def feature_alignment_loss(
    student: dict[int, list[torch.Tensor]],
    teacher: dict[int, list[torch.Tensor]],
    depths: tuple[int, ...],
    mapping: str = "sum2",
) -> torch.Tensor:
    """``L_error = 1/T sum_t mean_{depths, batch} || q(H_t^S) - q(H_t^T) ||_2`` (Eq. 11).

    ``q`` is :func:`attention_map`; as in attention transfer the distance is the (unsquared)
    L2 norm of the difference of the normalised maps, so each term lies in [0, 2].

    Args:
        student, teacher: ``features[branch]`` of one branch: ``{depth: [frame (B, C, H, W)]}``.
        depths: the aligned depths (every ``interval`` blocks).
        mapping: ``sum``, ``sum2`` (default, the paper's choice) or ``max``.

    Returns:
        scalar; zero when ``depths`` is empty.
    """
    terms = []
    for m in depths:
        for hs, ht in zip(student[m], teacher[m], strict=True):
            diff = attention_map(hs, mapping) - attention_map(ht.detach(), mapping)
            terms.append(diff.norm(dim=1).mean())
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).mean()
