"""Stopped RL and round-based searches resume to the same selection as an uninterrupted run."""

import dataclasses

import numpy as np
import pytest

from jaxsel import agents, proxy
from jaxsel.agents import dqn, ppo
from jaxsel.errors import JaxselError
from jaxsel.checkpoint import CheckpointMismatch
from test_agents import known_truth


@pytest.fixture(scope="module")
def truth():
    x, y, cl, xv, yv = known_truth()
    return proxy.make(x, y, cl, xv, yv, proxy.ProxyConfig(lam=1.0)), cl, y


@pytest.mark.parametrize("method,granularity", [("ppo", "cluster"), ("dqn", "quota")])
def test_resume_reproduces_uninterrupted_run(truth, tmp_path, method, granularity, capsys):
    p, cl, y = truth
    cfg = agents.SelectConfig(method=method, budget=0.25, seed=3, checkpoint_every=2, final="greedy",
                              granularity=granularity, horizon=8,
                              ppo=ppo.PPOConfig(num_envs=8, num_steps=8, total_timesteps=8 * 8 * 8),
                              dqn=dqn.DQNConfig(num_envs=8, total_timesteps=8 * 12, learning_starts=16, batch_size=16))
    whole = agents.select(p, cl, y, cfg, ckpt_dir=tmp_path / "a", progress=False)
    part = agents.select(p, cl, y, cfg, ckpt_dir=tmp_path / "b", progress=False, stop_after=4)  # interrupted part-way
    assert sorted(x.name for x in (tmp_path / "b" / "agent").iterdir()) == [".jaxsel-checkpoints", "4"]  # only the newest step is kept
    assert part.meta["stopped_after"] == 4 and "stopped_after" not in whole.meta  # a partial selection says so
    assert f"{method} stopped after 4 of {8 if method == 'ppo' else 12} updates (stop_after)" in capsys.readouterr().err
    resumed = agents.select(p, cl, y, cfg, ckpt_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.cluster_ids == whole.cluster_ids
    np.testing.assert_array_equal(resumed.indices, whole.indices)
    assert resumed.scores["proxy_accuracy"] == pytest.approx(whole.scores["proxy_accuracy"])


def test_resume_refuses_foreign_checkpoint(truth, tmp_path):
    p, cl, y = truth
    small = dict(ppo=ppo.PPOConfig(num_envs=8, num_steps=8, total_timesteps=256))
    agents.select(p, cl, y, agents.SelectConfig(budget=0.25, **small), ckpt_dir=tmp_path, progress=False)
    with pytest.raises(agents.JaxselError, match=r"written by another run configuration \(it differs in config.budget "
                                                  r"\(0.25 written, 0.3 now\)\); use a new output folder"):
        agents.select(p, cl, y, agents.SelectConfig(budget=0.3, **small), ckpt_dir=tmp_path, resume=True,
                      progress=False)
    # a checkpoint of the early network (PPO's default until 2026-12-05) resumed under the late default
    early = dict(ppo=dataclasses.replace(small["ppo"], network="early"))
    agents.select(p, cl, y, agents.SelectConfig(budget=0.25, **early), ckpt_dir=tmp_path / "e", progress=False)
    with pytest.raises(agents.JaxselError, match=r"differs in config.ppo.network \('early' written, 'late' now\)"):
        agents.select(p, cl, y, agents.SelectConfig(budget=0.25, **small), ckpt_dir=tmp_path / "e", resume=True,
                      progress=False)


@pytest.mark.parametrize("method,extra", [("climb", {"climb_rounds": 3, "granularity": "quota", "horizon": 8}),
                                          ("ppo", {"surrogate_rounds": 3, "warm_start": 64, "surrogate_eval": 8})])
def test_round_based_search_resumes(truth, tmp_path, method, extra, capsys):
    p, cl, y = truth
    cfg = agents.SelectConfig(method=method, budget=0.25, seed=2, ppo=ppo.PPOConfig(num_envs=8, num_steps=8,
                                                                                   total_timesteps=8 * 8 * 6), **extra)
    whole = agents.select(p, cl, y, cfg, ckpt_dir=tmp_path / "a", progress=False)
    assert whole.meta["revision"] == 2  # both changed on 2026-12-06 (agents.revision): selection.json says so
    agents.select(p, cl, y, cfg, ckpt_dir=tmp_path / "b", progress=False, stop_after=1)  # stopped after a round
    assert f"{method} stopped after 1 of 3 rounds (stop_after)" in capsys.readouterr().err
    resumed = agents.select(p, cl, y, cfg, ckpt_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.cluster_ids == whole.cluster_ids
    assert resumed.scores["evaluations"] == whole.scores["evaluations"]
    assert resumed.scores["proxy_accuracy"] == pytest.approx(whole.scores["proxy_accuracy"])


def test_stop_after_needs_a_checkpoint_and_a_count(truth, tmp_path, capsys):
    """Round 28: ``stop_after`` without a ckpt_dir threw the training away, 0 or -1 returned an untrained
    network's rollout under a warning about too few steps, and greedy ignored it in silence."""
    p, cl, y = truth
    cfg = agents.SelectConfig(method="ppo", budget=0.25, ppo=ppo.PPOConfig(num_envs=8, num_steps=8, total_timesteps=512))
    for bad, where in ((2, None), (0, tmp_path / "a"), (-1, tmp_path / "a"), (1.5, tmp_path / "a")):
        with pytest.raises(JaxselError, match="stop_after ends a checkpointed run"):
            agents.select(p, cl, y, cfg, ckpt_dir=where, progress=False, stop_after=bad)
    agents.select(p, cl, y, agents.SelectConfig(method="greedy", budget=0.25), ckpt_dir=tmp_path / "g", progress=False,
                  stop_after=1)
    assert "greedy has no updates or rounds to stop after: stop_after=1 is ignored" in capsys.readouterr().err


def test_resume_refuses_another_methods_checkpoint(truth, tmp_path):
    """Round 34: greedy or climb resumed where a PPO run stopped started afresh and wrote over it
    without a word (they keep no agent checkpoint to compare), as PPO did after climb. A fresh start
    replaces what another method left, so a later resume in that folder resumes its own."""
    p, cl, y = truth
    small = dict(budget=0.25, checkpoint_every=1, climb_rounds=2,
                 ppo=ppo.PPOConfig(num_envs=8, num_steps=8, total_timesteps=8 * 8 * 3))
    sel = lambda method, folder, **kw: agents.select(p, cl, y, agents.SelectConfig(method=method, **small),
                                                     ckpt_dir=tmp_path / folder, progress=False, **kw)
    sel("ppo", "p", stop_after=1)
    for method in ("greedy", "climb"):
        with pytest.raises(CheckpointMismatch, match=rf"differs in config.method \('ppo' written, '{method}' now\)"):
            sel(method, "p", resume=True)
    sel("climb", "c", stop_after=1)
    with pytest.raises(CheckpointMismatch, match=r"search checkpoint .* differs in config.method \('climb' written"):
        sel("ppo", "c", resume=True)
    assert len(sel("ppo", "p", resume=True).indices) == round(0.25 * len(y))  # its own method resumes
    # a fresh start over another method's checkpoint replaces it: climb, then ppo, then greedy, each resumable
    sel("climb", "p", stop_after=1)
    assert not (tmp_path / "p" / "agent").exists()
    sel("climb", "p", resume=True)
    sel("ppo", "p", stop_after=1)
    assert not (tmp_path / "p" / "search.json").exists()
    sel("greedy", "p")
    assert not (tmp_path / "p" / "agent").exists()
    sel("greedy", "p", resume=True)
