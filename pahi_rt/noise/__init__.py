"""Noise heads for the sampler's seam (noise = mu + sigma * eps): HI (`head.GlobalPrior`) and
PAHI (`head.NoiseHead`), their checkpoints, training, scorers and evaluation."""
