"""Scripts run in subprocesses (they set XLA flags before JAX loads): not collected."""

collect_ignore = ["blocks_check.py", "checkpoint_check.py", "distributed_check.py",
                  "multiprocess_check.py"]
