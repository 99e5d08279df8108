"""The progress bar's host side, driven by calling its callback directly (no compilation)."""

import ersde_jax._progress as progress


def test_a_run_after_an_aborted_one_starts_a_fresh_bar():
    total = 7
    for step in range(3):  # a run aborted after 3 of its 7 steps
        progress._tick(step, total)
    stale = progress._runs[total].bar
    assert stale.n == 3
    progress._tick(0, total)
    fresh = progress._runs[total].bar
    assert fresh is not stale and stale.disable and fresh.n == 1  # the stale bar is closed
    for step in range(1, total):
        progress._tick(step, total)
    assert fresh.n == total and total not in progress._runs


def test_devices_out_of_step_share_one_bar_and_a_rerun_gets_a_new_one():
    """Under shard_map each of 3 devices reports every step, far out of step with the others."""
    total, callers = 9, 3
    order = [(0, step) for step in range(total)]  # device 0 finishes before the others start
    order += [(caller, step) for step in range(total) for caller in (2, 1)]
    bars, shown = set(), []
    for caller, step in order:
        progress._tick(step, total, caller, callers)
        if total in progress._runs:
            bars.add(id(progress._runs[total].bar))
            shown.append(progress._runs[total].bar.n)
    assert len(bars) == 1 and shown == sorted(shown) and total not in progress._runs
    # A second run aborted after device 0's first step: its next run starts a new bar.
    progress._tick(0, total, 1, callers)
    progress._tick(0, total, 0, callers)
    progress._tick(1, total, 0, callers)
    aborted = progress._runs[total].bar
    progress._tick(0, total, 0, callers)
    fresh = progress._runs[total].bar
    assert fresh is not aborted and aborted.disable
    for caller, step in [(0, step) for step in range(1, total)] + order[total:]:
        progress._tick(step, total, caller, callers)
        run = progress._runs.get(total)
        assert run is None or run.bar is fresh
    assert fresh.n == total and total not in progress._runs
