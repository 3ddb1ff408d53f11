"""The CLI's CPU thread policy: passive OpenMP waiting by default, set before torch loads."""
from __future__ import annotations

import subprocess
import sys

from pahi_rt.threads import apply_thread_policy


def test_default_is_passive_waiting():
    env = {}
    assert apply_thread_policy(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_user_choices_are_kept():
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(chosen, OMP_NUM_THREADS="1")
        assert apply_thread_policy(env) == {}
        assert env == dict(chosen, OMP_NUM_THREADS="1")


PROBE = r"""
import os, sys

class Watch:  # records the environment at the moment torch is first imported
    seen = None
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and Watch.seen is None:
            Watch.seen = os.environ.get("OMP_WAIT_POLICY")
        return None

sys.meta_path.insert(0, Watch())
from pahi_rt.cli import command
assert "torch" not in sys.modules, "importing the CLI must not load torch"

@command
def verb():
    import torch  # noqa: F401

verb()
print(Watch.seen)
"""


def test_cli_sets_the_policy_before_torch_loads():
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PASSIVE"
