"""Scripts run in subprocesses (they set XLA flags before JAX loads): not collected."""

collect_ignore = ["checkpoint_check.py", "distributed_check.py", "multiprocess_check.py"]
