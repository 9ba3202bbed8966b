"""FRPO's gradient against the reference's loss written from its definition (training/frpo_trainer.py at 56fa171,
`_compute_loss` with loss_type frpo, as safety_training.sh runs it: --jackknife --baseline, TRL 0.20's advantages
r - mean(r) with scale_rewards False), independently of this project's advantage code: per-token ratios, the
sequence token-mean, groups by the rounded mean prompt token id, the log of the group mean (plug-in or jackknife),
the offset, max(lambda, 1), and the world-size scaling with detached remote losses. The project's side is TRL's
`grpo` loss aggregation with frpo_advantages per group, as defenses/trl_adapter.py sets them."""
import numpy as np
import pytest
import torch

from frpo_bench.defenses.frpo_math import frpo_advantages

EPS = 0.2  # TRL's epsilon (both sides)


def reference_loss(logps, mask, prompt_ids, rewards, lam, jackknife, ranks=1, rank=0):
    """The reference's FRPO loss on one rank of `ranks` (its slice of the batch carries the gradient)."""
    b_global = logps.shape[0]
    local = slice(rank * b_global // ranks, (rank + 1) * b_global // ranks)
    hashes = ((prompt_ids * (prompt_ids > 0)).sum(-1).double() / (prompt_ids > 0).sum(-1)).round().long()
    groups = hashes.unique(return_inverse=True)[1]
    centred = rewards.clone()
    for g in groups.unique():
        centred[groups == g] -= rewards[groups == g].mean()  # TRL 0.20: advantages = r - group mean
    weight = torch.exp(-centred / lam)
    ratio = torch.exp(logps - logps.detach())
    per_token = torch.minimum(ratio * weight[:, None], ratio.clamp(1 - EPS, 1 + EPS) * weight[:, None])
    tokens = mask.sum(-1)
    seq = (per_token * mask).sum(-1) / tokens
    aux = (torch.minimum(ratio, ratio.clamp(1 - EPS, 1 + EPS)) * mask).sum(-1) / tokens
    keep = torch.zeros(b_global, dtype=torch.bool)
    keep[local] = True
    seq = torch.where(keep, seq, seq.detach())  # all_gather: the remote ranks' losses are constants here
    aux = torch.where(keep, aux, aux.detach())
    terms, offsets = [], []
    for g in groups.unique():
        members = seq[groups == g]
        n = members.numel()
        mean = members.mean()
        if jackknife:
            leave_one_out = (members.sum() - members) / (n - 1)
            terms.append(n * torch.log(mean) - (n - 1) * torch.log(leave_one_out).mean())
        else:
            terms.append(torch.log(mean))
        offsets.append(aux[groups == g].mean())
    objective = torch.stack(terms).mean() - torch.stack(offsets).mean()  # --baseline: the grouped offset
    scale_to_grpo = b_global / (b_global // ranks)
    return max(lam, 1.0) * scale_to_grpo * objective


def project_loss(logps, mask, rewards, lam, jackknife, group_size):
    """TRL's grpo aggregation (per-sequence token mean, batch mean) with FRPO's advantages per group by position."""
    advantages = np.concatenate([frpo_advantages(g, lam, jackknife)
                                 for g in rewards.numpy().reshape(-1, group_size)])
    a = torch.tensor(advantages)[:, None]
    ratio = torch.exp(logps - logps.detach())
    per_token = -torch.minimum(ratio * a, ratio.clamp(1 - EPS, 1 + EPS) * a)
    return ((per_token * mask).sum(-1) / mask.sum(-1)).mean()


def batch(groups=3, group_size=4, length=7, seed=0):
    rng = torch.Generator().manual_seed(seed)
    b = groups * group_size
    logps = (-torch.rand(b, length, generator=rng, dtype=torch.float64) * 3).requires_grad_(True)
    lengths = torch.randint(2, length + 1, (b,), generator=rng)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).double()
    prompts = torch.stack([torch.full((5,), 100 + 37 * g) for g in range(groups)]).repeat_interleave(group_size, 0)
    rewards = torch.rand(b, generator=rng, dtype=torch.float64)
    return logps, mask, prompts, rewards


@pytest.mark.parametrize("jackknife", [True, False])
@pytest.mark.parametrize("lam", [0.1, 0.5, 1.0, 5.0])
def test_the_projects_gradient_is_the_references(jackknife, lam):
    logps, mask, prompts, rewards = batch(seed=int(lam * 10) + jackknife)
    (ours,) = torch.autograd.grad(project_loss(logps, mask, rewards, lam, jackknife, 4), logps)
    (theirs,) = torch.autograd.grad(reference_loss(logps, mask, prompts, rewards, lam, jackknife), logps)
    assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    assert ours.abs().max() > 1e-3  # a gradient that moves the policy


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_references_world_size_scaling_gives_the_one_process_gradient(ranks):
    """Each rank scales its loss by B_global / B_local and DDP averages the ranks' gradients: the sum is the
    one-process gradient (and so the project's, which TRL averages the same way)."""
    logps, mask, prompts, rewards = batch(groups=3, group_size=4, seed=7)
    (whole,) = torch.autograd.grad(reference_loss(logps, mask, prompts, rewards, 1.0, True), logps)
    averaged = sum(torch.autograd.grad(reference_loss(logps, mask, prompts, rewards, 1.0, True, ranks, r), logps)[0]
                   for r in range(ranks)) / ranks
    assert torch.allclose(averaged, whole, rtol=1e-9, atol=1e-12)


def test_the_reference_merges_groups_whose_prompts_share_a_rounded_mean_token_id():
    """Where the two differ: the reference groups by a hash, so two prompts with the same rounded mean token id
    form one group of 8 (the project groups by position, as TRL samples them)."""
    logps, mask, prompts, rewards = batch(groups=2, group_size=4, seed=3)
    prompts[4:] = torch.tensor([137, 136, 138, 137, 137])  # another prompt, the same rounded mean as group 1's 137
    prompts[:4] = torch.full((5,), 137)
    (ours,) = torch.autograd.grad(project_loss(logps, mask, rewards, 1.0, True, 4), logps)
    (merged,) = torch.autograd.grad(reference_loss(logps, mask, prompts, rewards, 1.0, True), logps)
    (as_eight,) = torch.autograd.grad(project_loss(logps, mask, rewards, 1.0, True, 8), logps)
    assert not torch.allclose(ours, merged) and torch.allclose(merged, as_eight, rtol=1e-9, atol=1e-12)
