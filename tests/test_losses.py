"""TCL and TIR against hand-built cases."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from custom.losses.tcl import TextInformedContrastiveLoss
from custom.losses.tir import MaskedRestorationLoss


def _clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    logits = logit_scale.exp() * image @ text.T
    labels = torch.arange(len(image))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def test_tcl_equals_clip_loss_for_one_crop_without_soft_negatives():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(6, 16), dim=-1), F.normalize(torch.randn(6, 16), dim=-1)
    logit_scale = torch.tensor(2.3)
    loss = TextInformedContrastiveLoss("none")(image, text, torch.arange(6), logit_scale)
    assert torch.allclose(loss, _clip_loss(image, text, logit_scale), atol=1e-6)


def test_tcl_all_crops_of_a_volume_are_positives():
    text = torch.eye(3)
    crops_aligned = torch.eye(3).repeat_interleave(2, dim=0)  # two crops per volume, each on its own report
    crops_swapped = crops_aligned[[0, 2, 1, 3, 4, 5]]  # second crop of volume 0 points at report 1
    image_to_text = torch.arange(3).repeat_interleave(2)
    loss = TextInformedContrastiveLoss("none")
    scale = torch.tensor(3.0)
    assert loss(crops_aligned, text, image_to_text, scale) < loss(crops_swapped, text, image_to_text, scale)


def _grad_towards_other_report(mode: str) -> float:
    """d loss / d <image_0, text_1> direction for two studies with the *same* report text features."""
    torch.manual_seed(1)
    image = F.normalize(torch.randn(3, 8), dim=-1).requires_grad_(True)
    text = torch.eye(3, 8)  # orthonormal reports, so the gradient's component along text_1 is read off cleanly
    report_features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # reports 0 and 1 identical
    loss = TextInformedContrastiveLoss(mode)(image, text, torch.arange(3), torch.tensor(2.0), report_features)
    loss.backward()
    return float(image.grad[0] @ text[1])


def test_identical_reports_are_not_pushed_apart():
    # gradient descent moves image_0 along -grad: a positive dot product pushes it away from text_1
    assert _grad_towards_other_report("none") > 0
    assert _grad_towards_other_report("threshold") < 0
    assert _grad_towards_other_report("soft") < 0


def test_tcl_threshold_affinity_matrix():
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    affinity = TextInformedContrastiveLoss("threshold", similarity_threshold=0.9).report_affinity(features, 3, "cpu")
    assert torch.equal(affinity, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


def test_tir_is_zero_for_perfect_restoration_and_counts_masked_voxels_only_when_asked():
    target = torch.rand(2, 1, 8, 8, 8)
    mask = torch.zeros_like(target, dtype=torch.bool)
    mask[..., :4] = True
    assert MaskedRestorationLoss(0.1)(target.clone(), target, mask) == 0
    wrong_outside = torch.where(mask, target, target + 1.0)
    assert MaskedRestorationLoss(0.0)(wrong_outside, target, mask) == 0
    assert torch.isclose(MaskedRestorationLoss(0.1)(wrong_outside, target, mask), torch.tensor(0.1))
    wrong_inside = torch.where(mask, target + 0.5, target)
    assert torch.isclose(MaskedRestorationLoss(0.0)(wrong_inside, target, mask), torch.tensor(0.5))
