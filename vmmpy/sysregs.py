"""System register encodings (op0, op1, CRn, CRm, op2) for the registers libvmm traps.

``encode("ICC_IAR1_EL1")`` gives the id that ``Machine.sysreg_read`` takes; names are those of the
Arm ARM. ``encode`` also accepts the generic ``S3_0_C12_C12_0`` spelling.
"""

from __future__ import annotations

import re

_REGS: dict[str, tuple[int, int, int, int, int]] = {
    # GIC CPU interface (IHI0069 §12.2)
    "ICC_PMR_EL1": (3, 0, 4, 6, 0),
    "ICC_IAR0_EL1": (3, 0, 12, 8, 0),
    "ICC_EOIR0_EL1": (3, 0, 12, 8, 1),
    "ICC_HPPIR0_EL1": (3, 0, 12, 8, 2),
    "ICC_BPR0_EL1": (3, 0, 12, 8, 3),
    "ICC_AP0R0_EL1": (3, 0, 12, 8, 4),
    "ICC_AP1R0_EL1": (3, 0, 12, 9, 0),
    "ICC_DIR_EL1": (3, 0, 12, 11, 1),
    "ICC_RPR_EL1": (3, 0, 12, 11, 3),
    "ICC_SGI1R_EL1": (3, 0, 12, 11, 5),
    "ICC_ASGI1R_EL1": (3, 0, 12, 11, 6),
    "ICC_SGI0R_EL1": (3, 0, 12, 11, 7),
    "ICC_IAR1_EL1": (3, 0, 12, 12, 0),
    "ICC_EOIR1_EL1": (3, 0, 12, 12, 1),
    "ICC_HPPIR1_EL1": (3, 0, 12, 12, 2),
    "ICC_BPR1_EL1": (3, 0, 12, 12, 3),
    "ICC_CTLR_EL1": (3, 0, 12, 12, 4),
    "ICC_SRE_EL1": (3, 0, 12, 12, 5),
    "ICC_IGRPEN0_EL1": (3, 0, 12, 12, 6),
    "ICC_IGRPEN1_EL1": (3, 0, 12, 12, 7),
    # generic timer (Arm ARM D11)
    "CNTFRQ_EL0": (3, 3, 14, 0, 0),
    "CNTPCT_EL0": (3, 3, 14, 0, 1),
    "CNTVCT_EL0": (3, 3, 14, 0, 2),
    "CNTP_TVAL_EL0": (3, 3, 14, 2, 0),
    "CNTP_CTL_EL0": (3, 3, 14, 2, 1),
    "CNTP_CVAL_EL0": (3, 3, 14, 2, 2),
    "CNTV_TVAL_EL0": (3, 3, 14, 3, 0),
    "CNTV_CTL_EL0": (3, 3, 14, 3, 1),
    "CNTV_CVAL_EL0": (3, 3, 14, 3, 2),
}


def encode(name: str | int) -> int:
    """The libvmm id of a system register: op0<<14 | op1<<11 | CRn<<7 | CRm<<3 | op2."""
    if isinstance(name, int):
        return name
    key = name.upper()
    if key in _REGS:
        op0, op1, crn, crm, op2 = _REGS[key]
    else:
        m = re.fullmatch(r"S(\d)_(\d)_C(\d+)_C(\d+)_(\d)", key)
        if not m:
            raise ValueError(f"unknown system register {name!r}")
        op0, op1, crn, crm, op2 = (int(g) for g in m.groups())
    return (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2


NAMES = tuple(_REGS)
