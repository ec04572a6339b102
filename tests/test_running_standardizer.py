"""RunningStandardizer: the projection heads' centring, which takes the shared direction out of pooled features
without making an embedding depend on its batch-mates."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from custom.networks.projection import ProjectionHead
from custom.networks.running_standardizer import RunningStandardizer


def _shared_direction_features(count: int, dim: int = 64, spread: float = 0.02, seed: int = 0) -> torch.Tensor:
    """Rows that all point the same way, as a backbone's pooled features do at initialisation."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(dim, generator=generator) * 3 + 1
    return common + spread * torch.randn(count, dim, generator=generator)


def _mean_off_diagonal_cosine(x: torch.Tensor) -> float:
    x = F.normalize(x, dim=-1)
    c = x @ x.T
    n = c.shape[0]
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))


def test_projection_head_spreads_features_that_point_the_same_way():
    torch.manual_seed(0)
    earlier, features = _shared_direction_features(32).split(16)
    assert _mean_off_diagonal_cosine(features) > 0.99
    head = ProjectionHead(64, 32).train()
    with torch.no_grad():
        unstandardised = F.normalize(head.layers(features), dim=-1)  # the head as it was before the standardiser
        head(earlier)  # one earlier training batch of the same kind gives the statistics
        embeddings = head(features)
    assert _mean_off_diagonal_cosine(unstandardised) > 0.95
    assert _mean_off_diagonal_cosine(embeddings) < 0.5


def test_an_output_does_not_depend_on_its_batch_mates_from_the_first_batch_on():
    torch.manual_seed(0)
    standardizer = RunningStandardizer(8).train()
    for step in range(3):
        row = torch.randn(1, 8) * 2 + 5
        state = {k: v.clone() for k, v in standardizer.state_dict().items()}
        alone = standardizer(row)
        standardizer.load_state_dict(state)
        with_others = standardizer(torch.cat([row, 100 * torch.randn(3, 8)]))[:1]
        torch.testing.assert_close(alone, with_others, msg=f"step {step}")


def test_statistics_are_those_of_earlier_batches_and_eval_uses_them_without_updating():
    torch.manual_seed(0)
    standardizer = RunningStandardizer(4).train()
    first = torch.randn(32, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0]) + 7
    # nothing seen yet: mean 0, variance 1 (plus eps)
    torch.testing.assert_close(standardizer(first), first / (1 + standardizer.eps) ** 0.5)
    second = torch.randn(32, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0]) + 7
    out = standardizer(second)  # standardised with the first batch's statistics
    expected = (second - first.mean(0)) / (first.var(0, unbiased=False) + standardizer.eps).sqrt()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(standardizer.running_mean, torch.cat([first, second]).mean(0))  # a plain average
    standardizer.eval()
    before = {k: v.clone() for k, v in standardizer.state_dict().items()}
    standardizer(second)
    assert all(torch.equal(before[k], v) for k, v in standardizer.state_dict().items())  # eval never updates


def test_a_batch_of_one_trains_and_keeps_the_variance():
    standardizer = RunningStandardizer(3).train()
    standardizer(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    var = standardizer.running_var.clone()
    out = standardizer(torch.tensor([[2.0, 2.0, 2.0]]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(standardizer.running_var, var)
    assert int(standardizer.batches_seen) == 2
