"""Differentiable preference scorers (PickScore, ImageReward, HPS v2.1, module:factory), their
`--scorer` syntax and CLIP preprocessing. Used by training, test-time compute and evaluation."""
