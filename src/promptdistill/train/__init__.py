"""Training: losses, batches with their answer masks, and the loop."""
