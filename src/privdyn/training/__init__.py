"""The train stage: batched model groups, optimizers and schedules, DP-SGD and the checkpoint signals."""
