"""Multi-task MDP pieces: descriptors with landmarks, task switching, per-task batching."""

from __future__ import annotations

import numpy as np
import pytest

from loss_rl.descriptors import (
    LANDMARK_SCALE,
    LANDMARK_SLOTS,
    N_FEATURES,
    landmark_losses,
    landmark_values,
    task_descriptor,
)
from loss_rl.envs import (
    BatchedLossVecEnv,
    EnvConfig,
    LossDesignEnv,
    TaskBinding,
    TaskSchedule,
    TaskSwitcher,
)
from loss_rl.envs.testing import CheapEvaluator
from loss_rl.expr import TaskKind
from loss_rl.presets import load_suite

CFG = {"space": "parametric", "max_steps": 3, "min_steps": 3, "start": ["ce"],
       "task_features": [0.0] * N_FEATURES}  # fmt: skip


def test_landmarks_are_scaled_gaps_to_ce_and_count_as_evaluations() -> None:
    ev = CheapEvaluator(noise=0.4)
    values = landmark_values(ev, TaskKind.CLASSIFICATION)
    trained = ev.n_trainings
    assert trained >= 2  # the landmarks are real evaluations of the run
    ref = ev.reference_score
    direct = [r.score for r in ev.evaluate(landmark_losses(TaskKind.CLASSIFICATION))]
    assert values == pytest.approx([LANDMARK_SCALE * (s - ref) for s in direct], abs=1e-6)
    assert ev.n_trainings == trained  # a later proposal of a landmark is a cache hit


def test_descriptor_of_a_real_task_holds_meta_features_and_landmarks() -> None:
    preset = load_suite("tiny").task("wine_sym30")
    base = task_descriptor(preset.task)
    assert len(base) == N_FEATURES
    assert base[0] == pytest.approx(0.3)  # 3 classes / 10
    assert [base[i] for i in LANDMARK_SLOTS] == [0.0, 0.0]
    ev = CheapEvaluator()
    full = task_descriptor(preset.task, evaluator=ev)
    assert full[:6] == base[:6]
    assert any(full[i] != 0.0 for i in LANDMARK_SLOTS)


def test_schedule_runs_every_task_once_per_round() -> None:
    tasks = [TaskBinding(n, CheapEvaluator(), (0.0,) * N_FEATURES) for n in "abc"]
    sched = TaskSchedule(tasks, seed=3)
    names = [sched.task_for(k).name for k in range(9)]
    for r in range(3):
        assert sorted(names[3 * r : 3 * r + 3]) == ["a", "b", "c"]
    assert TaskSchedule(tasks, seed=3).task_for(4).name == names[4]  # seeded


def test_switcher_binds_evaluator_run_and_features_per_episode() -> None:
    evs = [CheapEvaluator(noise=0.0), CheapEvaluator(noise=0.4)]
    feats = [(1.0,) + (0.0,) * (N_FEATURES - 1), (2.0,) + (0.0,) * (N_FEATURES - 1)]
    tasks = [TaskBinding(f"t{i}", evs[i], feats[i]) for i in range(2)]
    sched = TaskSchedule(tasks, seed=0)
    cfg = EnvConfig.from_dict(CFG)
    envs = [TaskSwitcher(LossDesignEnv(cfg, evaluator=evs[0]), sched) for _ in range(3)]
    vec = BatchedLossVecEnv(envs, multi_task=True)
    vec.seed(0)
    obs = vec.reset()
    first = sched.task_for(0)
    # Every env runs episode 0 on the same task and shows its descriptor.
    assert np.allclose(obs[:, -N_FEATURES], first.features[0])
    assert all(u.evaluator is first.evaluator and u.run is first.run for u in vec.units)
    calls_before = [len(e.calls) for e in evs]
    for _ in range(3):  # one full episode: one evaluator call per step, for the bound task only
        masks = vec.get_action_masks()
        actions = [int(np.flatnonzero(m[1:])[0]) + 1 for m in masks]
        obs, _, dones, infos = vec.step(np.array(actions))
    assert all(dones)
    assert {i["task"] for i in infos} == {first.name}
    other = next(t for t in tasks if t is not first)
    assert len(first.evaluator.calls) - calls_before[evs.index(first.evaluator)] == 3
    # After the auto-reset every env is on the other task (each task once per round).
    assert all(u.evaluator is other.evaluator for u in vec.units)
    assert np.allclose(obs[:, -N_FEATURES], other.features[0])
    assert first.run.n_steps == 9 and other.run.n_steps == 0


def test_step_groups_candidates_by_evaluator() -> None:
    evs = [CheapEvaluator(), CheapEvaluator()]
    cfg = EnvConfig.from_dict(CFG)
    envs = [LossDesignEnv(cfg, evaluator=evs[i % 2]) for i in range(4)]
    vec = BatchedLossVecEnv(envs, multi_task=True)
    vec.reset()
    before = [len(e.calls) for e in evs]
    masks = vec.get_action_masks()
    vec.step(np.array([int(np.flatnonzero(m[1:])[0]) + 1 for m in masks]))
    assert [len(e.calls) - b for e, b in zip(evs, before, strict=True)] == [1, 1]
    assert evs[0].calls[-1] == 2 and evs[1].calls[-1] == 2
