"""Tests of loss_rl.training."""
