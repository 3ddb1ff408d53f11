"""Test-time compute on top of a noise source: best-of-N and ReNO-style refinement (`search`),
their torch-free options (`options`), and a run's images with their test-time records
(`images`, what `generate --best-of/--refine` writes)."""
