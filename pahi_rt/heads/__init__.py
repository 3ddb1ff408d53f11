"""Noise heads for the sampler's seam (x_T = mu + sigma * eps): HI (`head.GlobalPrior`) and PAHI
(`head.NoiseHead`), their configuration and checkpoints, and the diffusers drop-in. What export
and runtime import; nothing here imports training, scorers or feedback."""
