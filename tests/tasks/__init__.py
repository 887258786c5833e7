"""Tests of loss_rl.tasks."""
