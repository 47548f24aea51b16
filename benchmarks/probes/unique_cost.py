"""Probe: what finding a batch's unique rows costs inside the jitted step vs on the host.

The row-wise training step needs, per step and table, the batch's unique ids and each
example's position among them. This times, for the two tables of the 20M benchmark set
(200k users uniform, 780k items power-law; batch 1,000; 16 steps per jitted call):
- `jnp.unique(size=B, return_inverse=True)` inside a `lax.scan`, as the step did;
- `np.unique(return_inverse=True)` per step on the host, as the input thread first did;
- one packed sort for all 16 steps of a call (``TrainLoop``'s ``_host_unique``, what the
  input thread does now);
and, for scale, the rest of a row-wise step's table work (gather and Adagrad scatter of
1,000 rows per table; sorted ids) in the same kind of scan.

Usage: KERAS_BACKEND=jax python benchmarks/probes/unique_cost.py
Output of the runs quoted in docs/scaling.md: results/probe-unique-cost-20261129.txt
(before the packed sort) and results/probe-unique-cost-20261129b.txt
"""
import time

import numpy as np

B, D, K = 1000, 32, 16
NU, NI = 200_000, 780_000


def main() -> None:
    import jax
    import jax.numpy as jnp
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, NI + 1) ** 0.9
    users = rng.integers(0, NU, (K, B)).astype(np.int32)
    items = rng.choice(NI, (K, B), p=p / p.sum()).astype(np.int32)
    xs = (jnp.asarray(users), jnp.asarray(items))

    def unique_step(c, x):
        for ids, n in ((x[0], NU), (x[1], NI)):
            u, inv = jnp.unique(ids, size=B, fill_value=n, return_inverse=True)
            c = c + u.sum() + inv.sum()
        return c, None
    f_unique = jax.jit(lambda xs: jax.lax.scan(unique_step, jnp.int32(0), xs)[0])

    def table_step(st, x):
        out = []
        for (t, a), ids in ((st[0:2], x[0]), (st[2:4], x[1])):
            idx = jnp.sort(ids)
            g = jnp.ones((B, D))
            aa = jnp.take(a, idx, axis=0, mode="fill", fill_value=0) + g * g
            out += [t.at[idx].add(-0.1 * g / jnp.sqrt(aa), mode="drop"),
                    a.at[idx].set(aa, mode="drop")]
        return tuple(out), None
    f_table = jax.jit(lambda st, xs: jax.lax.scan(table_step, st, xs)[0], donate_argnums=0)
    state = (jnp.zeros((NU, D)), jnp.zeros((NU, D)), jnp.zeros((NI, D)), jnp.zeros((NI, D)))

    def host():
        for ids in (users, items):
            for s in range(K):
                np.unique(ids[s], return_inverse=True)

    def timed(fn, rounds=7, calls=30):
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - t0) / calls / K * 1e6)
        return best

    from twotower.training.loop import _host_unique

    def packed():
        _host_unique(users, NU)
        _host_unique(items, NI)

    f_unique(xs).block_until_ready()
    state = f_table(state, xs)
    jax.block_until_ready(state)

    def table():
        nonlocal state
        state = f_table(state, xs)
        jax.block_until_ready(state)

    rows = [("jnp.unique in the jitted step (two tables)",
             timed(lambda: f_unique(xs).block_until_ready())),
            ("np.unique on the host (two tables)", timed(host)),
            ("one packed sort per call on the host, _host_unique (two tables)",
             timed(packed)),
            ("the step's table work: sort + gather + Adagrad scatter (two tables)",
             timed(table))]
    print("what | µs per step (best of 7 rounds of 30 calls of 16 steps)")
    for name, us in rows:
        print(f"{name} | {us:.1f}")


if __name__ == "__main__":
    main()
