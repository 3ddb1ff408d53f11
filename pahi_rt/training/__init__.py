"""Training heads (paper Sec. 3.2): the shared loop and resumable state, PAHI pretraining, the
scorer objective (Eq. 4), the density objectives on feedback (KTO, DPO) and the reward-model
route. Nothing below this package imports it."""
