"""Start the processes of a distributed test (:mod:`tests.distributed.worker`) as ``torchrun`` would, and collect them."""

import json
import os
import socket
import subprocess
import sys
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TIMEOUT = 240
"""Seconds a test's processes may take together (a hang fails the test instead of CI)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(task: dict, out: str, world_size: int = 2, timeout: float = TIMEOUT) -> List[subprocess.CompletedProcess]:
    """
    Run the worker ``task`` on ``world_size`` processes (1: without the
    distributed environment, the one-process reference), each with one
    thread, writing to ``out``; returns their completed processes, rank order.
    """
    os.makedirs(out, exist_ok=True)
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "PYPROBVAE_DISTRIBUTED_TIMEOUT": "60"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        base.pop(name, None)
    port = _free_port()
    processes = []
    for rank in range(world_size):
        env = dict(base)
        if world_size > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tests.distributed.worker", json.dumps(task), out],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    done = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    finally:
        for process in processes:
            process.kill()
    return done
