"""Test-time compute on top of a noise source: best-of-N and ReNO-style refinement (`search`) and
their torch-free options (`options`)."""
