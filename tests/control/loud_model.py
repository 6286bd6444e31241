"""Model factories that misbehave: one prints secrets the way careless user code does
(tests/control/test_safety.py), one kills the job runner that runs it (test_runner.py)."""

from __future__ import annotations

from tengine.models.gpt import GPT

PRINTED = ("abc123wandbkey", "xyz789hftoken")


def loud_gpt(vocab_size: int, max_seq_len: int) -> GPT:
    print(f"WANDB_API_KEY={PRINTED[0]}", flush=True)
    print(f"relaunch with: tengine-helper --hf-token {PRINTED[1]}", flush=True)
    return GPT(vocab_size, 32, 1, 2, max_seq_len=max_seq_len)


def runner_killer(vocab_size: int, max_seq_len: int) -> GPT:
    """A model whose building SIGKILLs the process that runs the job (`tengine train`'s parent:
    the job runner), as a node's OOM killer would (tests/control/test_runner.py)."""
    import os
    import signal

    os.kill(os.getppid(), signal.SIGKILL)
    return GPT(vocab_size, 32, 1, 2, max_seq_len=max_seq_len)
