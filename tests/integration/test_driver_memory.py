"""integration/driver/memory.py: the peak memory of one phase, not of the process's whole life."""
import sys

import numpy as np
import pytest

from integration.driver.memory import PeakMemory

MIB = 1024 * 1024


def touch(mib):
    block = np.ones(mib * MIB, dtype=np.uint8)  # written, so resident
    return int(block[::4096].sum())


def test_peak_covers_an_allocation_made_inside_the_phase():
    with PeakMemory("cpu") as base:
        pass
    with PeakMemory("cpu") as peak:
        touch(300)
    assert peak.kind == "rss"
    assert peak.mib >= base.mib + 250


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-phase peaks need /proc/self/clear_refs")
def test_each_phase_starts_from_its_own_baseline():
    with PeakMemory("cpu") as big:
        touch(300)
    with PeakMemory("cpu") as small:
        touch(10)
    assert not small.since_start
    assert small.mib < big.mib - 200
