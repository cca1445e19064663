"""Networking: virtio-net NICs on user networking (libslirp), a host tap interface, or an in-process switch.

``Machine(net=...)`` takes one NIC spec or a list of them (docs/devices.md#network):

- ``"user"``: NAT through libslirp (guest 10.0.2.15 by DHCP, host 10.0.2.2, DNS 10.0.2.3);
  ``hostfwd=["tcp:127.0.0.1:8080-:80", ...]`` forwards host ports into the guest (the first user card's);
- ``"tap=NAME"``: the existing host tap interface NAME;
- a :class:`Network`: a port on an in-process L2 switch that VMs of this process share.

``net_capture=PATH`` writes the NIC's frames to a pcap file (one NIC; with several, a list of paths or
None), ``mac="52:54:00:..."`` sets its MAC (a list for several NICs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

from vmmpy import errors
from vmmpy._ffi import ffi, lib


class Network:
    """An in-process Ethernet switch (a learning bridge) between the VMs of this process.

    >>> net = vmmpy.Network(capture="switch.pcap")
    >>> a = vmmpy.Machine(kernel, net=net); b = vmmpy.Machine(kernel, net=net)

    Each VM's NIC on it gets a distinct default MAC (52:54:00:12:35:<port>, in the order they were
    plugged in). ``capture`` writes every frame the switch forwards to a pcap file.
    """

    def __init__(self, capture: str | os.PathLike | None = None):
        out = ffi.new("vmm_net_switch **")
        err = ffi.new("char[]", 512)
        path = ffi.new("char[]", os.fsencode(capture)) if capture is not None else ffi.NULL
        rc = lib.vmm_net_switch_create(out, path, err, 512)
        if rc < 0:
            name = ffi.string(lib.vmm_err_name(rc)).decode()
            raise errors.BY_NAME.get(name, errors.VmmError)(ffi.string(err).decode(), rc, name)
        self._sw = ffi.gc(out[0], lib.vmm_net_switch_release)
        self.capture = capture

    @property
    def forwarded(self) -> int:
        """Frames the switch has taken from its ports."""
        n = ffi.new("uint64_t *")
        lib.vmm_net_switch_counts(self._sw, n, ffi.NULL)
        return int(n[0])

    @property
    def capture_dropped(self) -> int:
        """Frames missing from the capture file (it reached its size limit, or a write failed)."""
        n = ffi.new("uint64_t *")
        lib.vmm_net_switch_counts(self._sw, ffi.NULL, n)
        return int(n[0])


NetSpec = Union[str, Network]


@dataclass(frozen=True)
class NetStats:
    """A NIC's counters (``Machine.net_stats(nic)``)."""

    tx_frames: int
    tx_bytes: int
    rx_frames: int
    rx_bytes: int
    tx_dropped: int
    tx_malformed: int
    rx_dropped: int
    rx_queued: int
    capture_dropped: int
    link_up: bool
    mac: str


def _invalid(msg: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(msg, lib.VMM_EINVAL, "VMM_EINVAL")


def parse_mac(mac: str) -> bytes:
    parts = mac.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != 6 or len(raw) != 6 or any(len(p) != 2 for p in parts):
        raise _invalid(f"MAC {mac!r}: expected six hex bytes like 52:54:00:12:34:56")
    return raw


def _per_nic(value, n: int, what: str) -> list:
    if isinstance(value, list):
        if len(value) != n:
            raise _invalid(f"{what}: {len(value)} given for {n} network cards")
        return value
    if value is not None and n != 1:
        raise _invalid(f"{what}: give a list of {n} (one per network card)")
    return [value] * n


def add_nets(m, net: NetSpec | list[NetSpec] | None, hostfwd, capture, mac) -> None:
    """Add the NICs of ``Machine(net=..., hostfwd=..., net_capture=..., mac=...)`` to machine m."""
    specs = [] if net is None else list(net) if isinstance(net, list) else [net]
    if not specs:
        if hostfwd or capture or mac:
            raise _invalid("hostfwd, net_capture and mac need a network card (net=...)")
        return
    captures = _per_nic(capture, len(specs), "net_capture")
    macs = _per_nic(mac, len(specs), "mac")
    rules = [hostfwd] if isinstance(hostfwd, str) else list(hostfwd or [])
    if rules and not any(s == "user" for s in specs):
        raise _invalid("hostfwd needs user networking (net='user')")
    first_user = True
    for spec, cap, mac_ in zip(specs, captures, macs):
        cfg = ffi.new("struct vmm_net_config *")
        cfg.size = ffi.sizeof("struct vmm_net_config")
        keep = []
        if isinstance(spec, Network):
            cfg.backend = lib.VMM_NET_SWITCH
            cfg.sw = spec._sw
        elif spec == "user":
            cfg.backend = lib.VMM_NET_USER
            mine = rules if first_user else []  # the forwards belong to the first user card
            first_user = False
            keep = [ffi.new("char[]", r.encode()) for r in mine]
            arr = ffi.new("char *[]", keep)
            keep.append(arr)
            cfg.hostfwd, cfg.nhostfwd = arr, len(mine)
        elif isinstance(spec, str) and spec.startswith(("tap=", "tap:")) and len(spec) > 4:
            cfg.backend = lib.VMM_NET_TAP
            keep.append(ffi.new("char[]", spec[4:].encode()))
            cfg.tap = keep[-1]
        else:
            raise _invalid(f"network {spec!r}: expected 'user', 'tap=NAME' or a vmmpy.Network")
        if cap is not None:
            keep.append(ffi.new("char[]", os.fsencode(cap)))
            cfg.capture = keep[-1]
        if mac_ is not None:
            keep.append(ffi.new("uint8_t[6]", parse_mac(mac_)))
            cfg.mac = keep[-1]
        m._checked(lib.vmm_add_net, cfg)


def net_stats(m, nic: int = 0) -> NetStats:
    st = ffi.new("struct vmm_net_stats *")
    st.size = ffi.sizeof("struct vmm_net_stats")
    m._checked(lib.vmm_net_stats, nic, st)
    fields = {f: int(getattr(st, f)) for f, _ in ffi.typeof("struct vmm_net_stats").fields if f not in ("size", "mac")}
    fields["link_up"] = bool(fields["link_up"])
    return NetStats(**fields, mac=":".join(f"{b:02x}" for b in bytes(st.mac)))
