"""Tier 1: virtio-rng (virtio 1.2 §5.4), driven over virtio-mmio."""

from __future__ import annotations

import vmmpy
from tests.virtio_driver import ID_ENTROPY, VirtioMMIO, find_devices

RNG_ID = ID_ENTROPY


def test_rng_fills_buffers():
    with vmmpy.Machine(rng=True) as m:
        slots = [s for s, d in find_devices(m) if d == RNG_ID]
        assert len(slots) == 1
        dev = VirtioMMIO(m, slots[0])
        (q,) = dev.init(queues=1)
        seen = set()
        for sizes in ([64], [16, 48], [64]):
            head = q.add([], sizes)
            q.notify()
            assert q.get_used() == [(head, sum(sizes))]
            data = q.chain_data(head)
            assert len(set(data)) > 8  # not constant
            seen.add(data)
        assert len(seen) == 3  # different each time
        # a chain with only readable buffers gets nothing
        head = q.add([b"abc"], [])
        q.notify()
        assert q.get_used() == [(head, 0)]
