"""Worker processes for the reliability suite (run as ``python worker.py MODE JSON``).

Each mode is a small, realistic use of the public API; the parent test
configures dpt through ``DPT_*`` variables and checks the database afterwards.
Workers print one JSON line per fact the parent needs (``{"uuid": ...}``) and
flush it at once, so a parent that kills a worker still sees what it did.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path


def say(**fact: object) -> None:
    sys.stdout.write(json.dumps(fact) + "\n")
    sys.stdout.flush()


def wait_for(gate: str | None) -> None:
    """Block until the file ``gate`` exists, so every worker starts writing at once."""
    if not gate:
        return
    while not os.path.exists(gate):
        time.sleep(0.005)


def overlap(spec: dict) -> None:
    """Invocations reading shared inputs and writing shared and own products, in shuffled order."""
    import dpt_core

    worker = spec["worker"]
    shared_inputs = [Path(p) for p in spec["inputs"]]
    own_dir = Path(spec["own_dir"])
    own_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.get("seed", 0) * 1000 + worker)
    dpt_core.get_tracker().environment()  # captured before the gate: the first writes race
    wait_for(spec.get("gate"))
    for i in range(spec["invocations"]):
        task = f"w{worker}-i{i}"
        with dpt_core.invocation(
            "overlap", task=task, parameters={"worker": worker, "i": i}
        ) as inv:
            inputs = rng.sample(shared_inputs, spec["reads"])
            inv.read(*inputs)
            shared = [f"s3://bucket/shared/out{j}" for j in range(spec["shared_outputs"])]
            rng.shuffle(shared)
            own = own_dir / f"{task}.dat"
            own.write_text(f"{task}\n")
            inv.write(*shared[: spec["writes"]], own)
            say(uuid=inv.uuid, task=task, outputs=spec["writes"] + 1)


def batches(spec: dict) -> None:
    """One invocation writing batch after batch of outputs, until killed."""
    import dpt_core

    size = spec["batch_size"]
    with dpt_core.invocation("batches", task=f"pid{os.getpid()}") as inv:
        say(uuid=inv.uuid)
        inv.read(spec["input"])
        say(read=True)
        for batch in range(spec.get("batches", 10**9)):
            say(batch_start=batch)
            inv.write(*[f"s3://bucket/batch{batch:05d}/item{k:05d}" for k in range(size)])
            say(batch_done=batch)


def one(spec: dict) -> None:
    """One small invocation (read one file, write one product)."""
    import dpt_core

    with dpt_core.invocation(spec.get("job", "one"), parameters=spec.get("parameters")) as inv:
        if spec.get("input"):
            inv.read(spec["input"])
        inv.write(spec["output"])
        say(uuid=inv.uuid)
    say(user_code="went on")


MODES = {"overlap": overlap, "batches": batches, "one": one}

if __name__ == "__main__":
    MODES[sys.argv[1]](json.loads(sys.argv[2]))
