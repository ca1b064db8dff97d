"""Training: the shared loop, optimizer and schedule, checkpoints, and the stages that use them."""
