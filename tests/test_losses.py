"""TCL and TIR against hand-built cases."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from custom.losses.report_affinity import ReportAffinity
from custom.losses.tcl import TextInformedContrastiveLoss
from custom.losses.tir import MaskedRestorationLoss


def _tcl(source: str) -> TextInformedContrastiveLoss:
    return TextInformedContrastiveLoss(ReportAffinity(source))


def _clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    logits = logit_scale * image @ text.T
    labels = torch.arange(len(image))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def test_tcl_equals_clip_loss_for_one_crop_without_soft_negatives():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(6, 16), dim=-1), F.normalize(torch.randn(6, 16), dim=-1)
    logit_scale = torch.tensor(2.3).exp()
    out = _tcl("none")(image, text, torch.arange(6), logit_scale)
    assert torch.allclose(out["loss"], _clip_loss(image, text, logit_scale), atol=1e-6)
    assert out["logit_scale"] == float(logit_scale) and out["positive_fraction"] == 0.0


def test_tcl_all_crops_of_a_volume_are_positives():
    text = torch.eye(3)
    crops_aligned = torch.eye(3).repeat_interleave(2, dim=0)  # two crops per volume, each on its own report
    crops_swapped = crops_aligned[[0, 2, 1, 3, 4, 5]]  # second crop of volume 0 points at report 1
    image_to_text = torch.arange(3).repeat_interleave(2)
    loss = _tcl("none")
    scale = torch.tensor(3.0).exp()
    aligned, swapped = (loss(crops, text, image_to_text, scale)["loss"] for crops in (crops_aligned, crops_swapped))
    assert aligned < swapped


def _grad_towards_other_report(source: str) -> float:
    """d loss / d <image_0, text_1> direction for two studies with the *same* findings (label vectors 0 and 1 equal)."""
    torch.manual_seed(1)
    image = F.normalize(torch.randn(3, 8), dim=-1).requires_grad_(True)
    text = torch.eye(3, 8)  # orthonormal reports, so the gradient's component along text_1 is read off cleanly
    label_vectors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    inputs = {"label_vector": label_vectors} if source != "none" else {}
    loss = _tcl(source)(image, text, torch.arange(3), torch.tensor(2.0).exp(), **inputs)["loss"]
    loss.backward()
    return float(image.grad[0] @ text[1])


def test_reports_with_the_same_findings_are_not_pushed_apart():
    # gradient descent moves image_0 along -grad: a positive dot product pushes it away from text_1
    assert _grad_towards_other_report("none") > 0
    assert _grad_towards_other_report("labels") < 0
    assert _grad_towards_other_report("label_overlap") < 0


def test_label_affinities_and_the_positive_fraction():
    labels = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    exact = ReportAffinity("labels")(labels, 4, "cpu")
    assert torch.equal(exact, torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    overlap = ReportAffinity("label_overlap")(labels, 4, "cpu")
    assert torch.allclose(overlap[2, 3], torch.tensor(0.5)) and overlap[0, 1] == 1 and overlap[0, 2] == 0
    loss = _tcl("labels")
    assert loss.required_batch_keys == ("label_vector",)
    out = loss(
        F.normalize(torch.randn(4, 8), dim=-1),
        F.normalize(torch.randn(4, 8), dim=-1),
        torch.arange(4),
        torch.tensor(1.0).exp(),
        label_vector=labels,
    )
    assert abs(out["positive_fraction"] - 2 / 12) < 1e-6  # the pair (0, 1), both ways, of 4 * 3 ordered pairs


def test_all_positive_batch_is_flagged_by_the_fraction():
    out = _tcl("labels")(
        F.normalize(torch.randn(4, 8), dim=-1),
        F.normalize(torch.randn(4, 8), dim=-1),
        torch.arange(4),
        torch.tensor(1.0).exp(),
        label_vector=torch.zeros(4, 3),
    )
    assert out["positive_fraction"] == 1.0


def test_tcl_logits_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    image = F.normalize(torch.randn(8, 64), dim=-1)
    text = F.normalize(torch.randn(4, 64), dim=-1)
    loss = _tcl("none")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = loss.logits(image, text, torch.tensor(4.6).exp())
        value = loss(image, text, torch.arange(4).repeat_interleave(2), torch.tensor(4.6).exp())["loss"]
        reference_bf16 = image @ text.T  # what a matmul under autocast returns
    assert reference_bf16.dtype == torch.bfloat16  # the premise: autocast matmuls are bfloat16
    assert logits.dtype == torch.float32 and value.dtype == torch.float32
    assert torch.allclose(logits, math.exp(4.6) * image @ text.T, atol=1e-4)


def test_embeddings_reach_tcl_logits_in_float32_under_bf16_autocast():
    from custom.networks.image_head import ImageEmbeddingHead
    from custom.networks.projection import ProjectionHead

    torch.manual_seed(0)
    # eval mode: the heads' running standardisers keep their statistics, so every call computes the same function
    image_head, text_head = ImageEmbeddingHead(96, 64).eval(), ProjectionHead(48, 64).eval()
    tokens, pooled = torch.randn(8, 27, 96), torch.randn(4, 48)  # a 3^3 bottleneck grid; 4 pooled reports
    loss, scale = _tcl("none"), torch.tensor(100.0)  # the largest scale TCL allows
    reference = loss.logits(image_head(tokens), text_head(pooled), scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image, text = image_head(tokens), text_head(pooled)
        logits = loss.logits(image, text, scale)
        bf16_projection = F.normalize(text_head.layers(pooled), dim=-1)  # the head's layers as autocast runs them
    assert image.dtype == torch.float32 and text.dtype == torch.float32
    error = float((logits - reference).abs().max())
    bf16_error = float((loss.logits(image, bf16_projection, scale) - reference).abs().max())
    print(f"\nlogit error at scale 100 under bf16 autocast: {error:.2e} (bf16 text projection: {bf16_error:.3f})")
    assert bf16_projection.dtype == torch.bfloat16 and bf16_error > 1e-2  # the premise: bf16 embeddings are coarse
    assert error < 1e-4


def test_one_report_without_ddp_gives_zero_tcl_and_a_warning_once(caplog):
    torch.manual_seed(0)
    loss = _tcl("none")
    image, text = F.normalize(torch.randn(1, 8), dim=-1), F.normalize(torch.randn(1, 8), dim=-1)
    with caplog.at_level("WARNING", logger="custom.losses.tcl"):
        values = [float(loss(image, text, torch.zeros(1, dtype=torch.long), torch.tensor(7.0))["loss"]) for _ in "ab"]
    assert values == [0.0, 0.0]  # K = 1: the only report is the only target, whatever the embeddings
    warnings = [r.message for r in caplog.records if "global batch has 1 report" in r.message]
    assert len(warnings) == 1 and "batch_size 1" in warnings[0] and "no negative" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="custom.losses.tcl"):
        _tcl("none")(F.normalize(torch.randn(2, 8), dim=-1), F.normalize(torch.randn(2, 8), dim=-1),
                     torch.arange(2), torch.tensor(7.0))  # fmt: skip
    assert not caplog.records  # two reports: a real contrastive batch, no warning


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
