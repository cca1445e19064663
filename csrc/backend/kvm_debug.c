/*
 * kvm_debug.c - a debugger's registers, breakpoints, watchpoints and single-step on the KVM backend
 * (core/debug.h), through KVM_SET_GUEST_DEBUG (Documentation/virt/kvm/api.rst, 4.59; arm64 uapi
 * asm/kvm.h):
 *  - software breakpoints (gdb Z0): BRK #0 written into guest RAM with KVM_GUESTDBG_USE_SW_BP, which
 *    makes every BRK exit to us (ESR EC 0x3c) with the PC at the BRK. The replaced instruction is kept
 *    and written back on removal (unless the guest overwrote the BRK meanwhile); the debugger's reads
 *    show it (mem_shadow). The guest's own reads of its text do see the BRK.
 *  - hardware breakpoints and watchpoints (Z1..Z4): KVM_GUESTDBG_USE_HW with the debug registers in
 *    struct kvm_guest_debug_arch (DBGBCR/DBGBVR, DBGWCR/DBGWVR: Arm ARM D13.3), as many as
 *    KVM_CAP_GUEST_DEBUG_HW_BPS/WPS say; EC 0x30/0x31 and 0x34/0x35 (FAR_EL2 in debug.arch.far).
 *  - single-step: KVM_GUESTDBG_SINGLESTEP, EC 0x32/0x33 after one instruction.
 * Everything here runs with the vCPU out of KVM_RUN (the debugger holds the VM: core/gdbstub.c), on the
 * server thread; KVM serialises vCPU ioctls itself.
 */
#include "../core/vm.h"

#if VMM_HAVE_KVM

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../arm/arm.h"
#include "../core/debug.h"
#include "kvm.h"

#define KVM_MAX_SWBP 64
#define BRK0 0xd4200000u /* BRK #0 (C6.2.40) */

struct kvm_swbp {
    uint64_t gpa;
    uint32_t orig; /* the instruction the BRK replaced */
};

struct kvm_dbg_vm {
    struct kvm_swbp bp[KVM_MAX_SWBP];
    unsigned nbp;
};

struct kvm_dbg_vcpu {
    struct vmm_debug_point points[KVM_ARM_MAX_DBG_REGS * 2];
    unsigned npoints;  /* the hardware ones (for naming a hit) */
    uint64_t held_cnt; /* the virtual counter where the debugger stopped it (clock_hold) */
    bool cnt_saved;
};

static int one_reg(struct kvm_vcpu_state *ks, uint64_t id, void *val, bool set)
{
    struct kvm_one_reg r = { .id = id, .addr = (uint64_t)(uintptr_t)val };
    int rc;
    do
        rc = ioctl(ks->fd, set ? KVM_SET_ONE_REG : KVM_GET_ONE_REG, &r);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? VMM_EBACKEND : 0;
}

/* KVM_REG_ARM_CORE registers are named by their offset in struct kvm_regs, in 32-bit words. */
static uint64_t core_id(size_t off, uint64_t size)
{
    return KVM_REG_ARM64 | size | KVM_REG_ARM_CORE | (off / sizeof(uint32_t));
}

#define CORE(field, size) core_id(offsetof(struct kvm_regs, field), size)

/* The current SP: SP_EL1 in EL1h (PSTATE.M = 0b0101), else SP_EL0. */
static uint64_t sp_id(struct kvm_vcpu_state *ks)
{
    uint64_t pstate = 0;
    one_reg(ks, CORE(regs.pstate, KVM_REG_SIZE_U64), &pstate, false);
    return (pstate & 0xf) == 0x5 ? CORE(sp_el1, KVM_REG_SIZE_U64) : CORE(regs.sp, KVM_REG_SIZE_U64);
}

/* The KVM register id behind a debugger register number, and its size in bytes (0: none). */
static unsigned reg_id(struct kvm_vcpu_state *ks, unsigned regno, uint64_t *id)
{
    if (regno <= 30)
        *id = CORE(regs.regs[regno], KVM_REG_SIZE_U64);
    else if (regno == VMM_DBG_REG_SP)
        *id = sp_id(ks);
    else if (regno == VMM_DBG_REG_PC)
        *id = CORE(regs.pc, KVM_REG_SIZE_U64);
    else if (regno == VMM_DBG_REG_PSTATE)
        *id = CORE(regs.pstate, KVM_REG_SIZE_U64);
    else if (regno >= VMM_DBG_REG_V0 && regno < VMM_DBG_REG_V0 + 32)
        *id = CORE(fp_regs.vregs[regno - VMM_DBG_REG_V0], KVM_REG_SIZE_U128);
    else if (regno == VMM_DBG_REG_FPSR)
        *id = CORE(fp_regs.fpsr, KVM_REG_SIZE_U32);
    else if (regno == VMM_DBG_REG_FPCR)
        *id = CORE(fp_regs.fpcr, KVM_REG_SIZE_U32);
    else
        return 0;
    return vmm__dbg_reg_size(regno);
}

static int kvm_reg_read(struct vmm_vcpu *vcpu, unsigned regno, uint8_t *buf, unsigned size)
{
    uint8_t v[16] = { 0 };
    uint64_t id;
    unsigned n = reg_id(vcpu->bstate, regno, &id);

    if (!n || size != n)
        return VMM_EINVAL;
    if (one_reg(vcpu->bstate, id, v, false)) /* PSTATE is 64-bit in KVM: its low 4 bytes are gdb's cpsr */
        return VMM_EBACKEND;
    memcpy(buf, v, n);
    return 0;
}

static int kvm_reg_write(struct vmm_vcpu *vcpu, unsigned regno, const uint8_t *buf, unsigned size)
{
    uint8_t v[16] = { 0 };
    uint64_t id;
    unsigned n = reg_id(vcpu->bstate, regno, &id);

    if (!n || size != n)
        return VMM_EINVAL;
    if (regno == VMM_DBG_REG_PSTATE && one_reg(vcpu->bstate, id, v, false)) /* keep bits 63:32 */
        return VMM_EBACKEND;
    memcpy(v, buf, n);
    return one_reg(vcpu->bstate, id, v, true);
}

/* gdb's system registers (SYSREG ids): the banked ones KVM keeps among the core registers, else ARM64_SYS_REG. */
static uint64_t sysreg_kvm_id(uint32_t id)
{
    if (id == SYSREG(3, 0, 4, 1, 0))
        return CORE(regs.sp, KVM_REG_SIZE_U64);
    if (id == SYSREG(3, 4, 4, 1, 0))
        return CORE(sp_el1, KVM_REG_SIZE_U64);
    if (id == SYSREG(3, 0, 4, 0, 1))
        return CORE(elr_el1, KVM_REG_SIZE_U64);
    if (id == SYSREG(3, 0, 4, 0, 0))
        return CORE(spsr[KVM_SPSR_EL1], KVM_REG_SIZE_U64);
    return ARM64_SYS_REG(SYSREG_OP0(id), SYSREG_OP1(id), SYSREG_CRN(id), SYSREG_CRM(id), SYSREG_OP2(id));
}

static int kvm_sysreg_read(struct vmm_vcpu *vcpu, uint32_t id, uint64_t *val)
{
    return one_reg(vcpu->bstate, sysreg_kvm_id(id), val, false);
}

static int kvm_sysreg_write(struct vmm_vcpu *vcpu, uint32_t id, uint64_t val)
{
    return one_reg(vcpu->bstate, sysreg_kvm_id(id), &val, true);
}

/* ---- software breakpoints: BRK #0 in guest RAM, shared by every vCPU ---- */

static void write_insn(struct vmm_vm *vm, uint64_t gpa, uint32_t insn)
{
    uint8_t *p = vmm__gpa_ptr(vm, gpa, 4);
    if (!p)
        return;
    memcpy(p, &insn, 4);
    __builtin___clear_cache((char *)p, (char *)p + 4); /* the guest fetches it through the same caches */
}

static bool wanted(const uint64_t *gpas, unsigned n, uint64_t gpa)
{
    for (unsigned i = 0; i < n; i++)
        if (gpas[i] == gpa)
            return true;
    return false;
}

/* Plant exactly the breakpoints at `gpas`: the others get their instruction back. */
static int sync_swbps(struct vmm_vm *vm, const uint64_t *gpas, unsigned n)
{
    struct kvm_vm_state *k = vm->bstate;
    struct kvm_dbg_vm *d = k->dbg;

    if (!d && !n)
        return 0;
    if (!d && !(d = k->dbg = calloc(1, sizeof *d)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory");
    for (unsigned i = 0; i < d->nbp;) {
        if (wanted(gpas, n, d->bp[i].gpa)) {
            i++;
            continue;
        }
        uint32_t now;
        memcpy(&now, vmm__gpa_ptr(vm, d->bp[i].gpa, 4), 4);
        if (now == BRK0) /* the guest did not overwrite it meanwhile: restore exactly */
            write_insn(vm, d->bp[i].gpa, d->bp[i].orig);
        d->bp[i] = d->bp[--d->nbp];
    }
    for (unsigned j = 0; j < n; j++) {
        bool have = false;
        for (unsigned i = 0; i < d->nbp && !have; i++)
            have = d->bp[i].gpa == gpas[j];
        if (have || wanted(gpas, j, gpas[j]))
            continue;
        if (d->nbp >= KVM_MAX_SWBP)
            return vmm__set_error(vm, VMM_ERANGE, "at most %d software breakpoints", KVM_MAX_SWBP);
        uint8_t *p = vmm__gpa_ptr(vm, gpas[j], 4);
        if (!p)
            return vmm__set_error(vm, VMM_ERANGE, "breakpoint at 0x%llx: not guest RAM", (unsigned long long)gpas[j]);
        d->bp[d->nbp].gpa = gpas[j];
        memcpy(&d->bp[d->nbp].orig, p, 4);
        d->nbp++;
        write_insn(vm, gpas[j], BRK0);
    }
    return 0;
}

/* The debugger reads RAM: the replaced instructions, not the BRKs; it writes: the BRKs stay, over the new bytes. */
static void kvm_mem_shadow(struct vmm_vm *vm, uint64_t gpa, uint8_t *buf, size_t len, bool write)
{
    struct kvm_vm_state *k = vm->bstate;
    struct kvm_dbg_vm *d = k->dbg;

    for (unsigned i = 0; d && i < d->nbp; i++) {
        uint64_t b = d->bp[i].gpa;
        for (unsigned j = 0; j < 4; j++) {
            if (b + j < gpa || b + j >= gpa + len)
                continue;
            uint8_t *orig = (uint8_t *)&d->bp[i].orig + j;
            if (write)
                *orig = buf[b + j - gpa];
            else
                buf[b + j - gpa] = *orig;
        }
        if (write && b + 4 > gpa && b < gpa + len)
            write_insn(vm, b, BRK0);
    }
}

/* ---- hardware breakpoints and watchpoints: the debug registers KVM loads while the guest runs ---- */

static int hw_slots(struct vmm_vm *vm, long cap)
{
    struct kvm_vm_state *k = vm->bstate;
    int n = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, cap);
    return n < 0 ? 0 : n > KVM_ARM_MAX_DBG_REGS ? KVM_ARM_MAX_DBG_REGS : n;
}

/* DBGWCR/DBGWVR for [addr, addr + len) (D13.3.11): a byte mask within a doubleword, or a power-of-2 mask. */
static int watch_regs(const struct vmm_debug_point *p, __u64 *wcr, __u64 *wvr)
{
    uint64_t lsc = p->type == VMM_DBG_WATCH_READ ? 1 : p->type == VMM_DBG_WATCH_WRITE ? 2 : 3;
    uint64_t off = p->addr & 7;

    *wcr = 1 | 3u << 1 | lsc << 3; /* E, PAC = EL1 and EL0, LSC */
    if (p->len >= 1 && off + p->len <= 8) {
        *wcr |= ((1ull << p->len) - 1) << (5 + off);
        *wvr = p->addr & ~7ull;
        return 0;
    }
    if (p->len >= 8 && !(p->len & (p->len - 1)) && !(p->addr & (p->len - 1)) && p->len <= (1ull << 31)) {
        *wcr |= 0xffull << 5 | (uint64_t)__builtin_ctzll(p->len) << 24; /* BAS all, MASK = log2(len) */
        *wvr = p->addr;
        return 0;
    }
    return VMM_ERANGE;
}

static int kvm_set_debug(struct vmm_vcpu *vcpu, const struct vmm_debug_cfg *cfg)
{
    struct vmm_vm *vm = vcpu->vm;
    struct kvm_vcpu_state *ks = vcpu->bstate;
    struct kvm_guest_debug dbg;
    uint64_t gpas[KVM_MAX_SWBP];
    unsigned nsw = 0, nbp = 0, nwp = 0;
    int maxbp = hw_slots(vm, KVM_CAP_GUEST_DEBUG_HW_BPS), maxwp = hw_slots(vm, KVM_CAP_GUEST_DEBUG_HW_WPS);
    struct vmm_s1_regs r;
    int rc = 0;

    if (!ks->dbg && !(ks->dbg = calloc(1, sizeof *ks->dbg)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory");
    memset(&dbg, 0, sizeof dbg);
    ks->dbg->npoints = 0;
    for (unsigned i = 0; i < cfg->npoints && !rc; i++) {
        const struct vmm_debug_point *p = &cfg->points[i];
        if (p->type == VMM_DBG_BREAK) {
            /* through this vCPU's translation (all vCPUs of a kernel share its text mapping) */
            if (vcpu->id)
                continue; /* vCPU 0 plants them for all */
            if (kvm_sysreg_read(vcpu, SYSREG(3, 0, 1, 0, 0), &r.sctlr) ||
                kvm_sysreg_read(vcpu, SYSREG(3, 0, 2, 0, 2), &r.tcr) ||
                kvm_sysreg_read(vcpu, SYSREG(3, 0, 2, 0, 0), &r.ttbr0) ||
                kvm_sysreg_read(vcpu, SYSREG(3, 0, 2, 0, 1), &r.ttbr1))
                rc = vmm__set_error(vm, VMM_EBACKEND, "cannot read vCPU 0's translation registers");
            else if (nsw >= KVM_MAX_SWBP)
                rc = vmm__set_error(vm, VMM_ERANGE, "at most %d software breakpoints", KVM_MAX_SWBP);
            else if (vmm__s1_translate(vm, &r, p->addr, &gpas[nsw]))
                rc = vmm__set_error(vm, VMM_ERANGE, "breakpoint at 0x%llx: no translation on vCPU 0",
                                    (unsigned long long)p->addr);
            else
                nsw++;
        } else if (p->type == VMM_DBG_HBREAK) {
            if ((int)nbp >= maxbp)
                rc = vmm__set_error(vm, VMM_ERANGE, "KVM offers %d hardware breakpoints", maxbp);
            else { /* E, PMC = EL1 and EL0, BAS = 0b1111 (A64) */
                dbg.arch.dbg_bcr[nbp] = 1 | 3u << 1 | 0xfu << 5;
                dbg.arch.dbg_bvr[nbp++] = p->addr & ~3ull;
                ks->dbg->points[ks->dbg->npoints++] = *p;
            }
        } else if ((int)nwp >= maxwp) {
            rc = vmm__set_error(vm, VMM_ERANGE, "KVM offers %d hardware watchpoints", maxwp);
        } else if (watch_regs(p, &dbg.arch.dbg_wcr[nwp], &dbg.arch.dbg_wvr[nwp])) {
            rc = vmm__set_error(vm, VMM_ERANGE,
                                "a watchpoint of %llu bytes at 0x%llx: the debug registers take up to 8 "
                                "bytes within a doubleword, or an aligned power of 2",
                                (unsigned long long)p->len, (unsigned long long)p->addr);
        } else {
            nwp++;
            ks->dbg->points[ks->dbg->npoints++] = *p;
        }
    }
    if (!rc && !vcpu->id)
        rc = sync_swbps(vm, gpas, nsw);
    if (rc)
        return rc;
    struct kvm_dbg_vm *dv = ((struct kvm_vm_state *)vm->bstate)->dbg;
    if (dv && dv->nbp)
        dbg.control |= KVM_GUESTDBG_USE_SW_BP;
    if (nbp || nwp)
        dbg.control |= KVM_GUESTDBG_USE_HW;
    if (cfg->step)
        dbg.control |= KVM_GUESTDBG_SINGLESTEP;
    if (dbg.control)
        dbg.control |= KVM_GUESTDBG_ENABLE;
    int e;
    do
        e = ioctl(ks->fd, KVM_SET_GUEST_DEBUG, &dbg);
    while (e < 0 && errno == EINTR);
    if (e < 0)
        return vmm__set_error(vm, VMM_EBACKEND, "KVM_SET_GUEST_DEBUG on vCPU %u: %s", vcpu->id, strerror(errno));
    return 0;
}

/* KVM_EXIT_DEBUG: the syndrome names what stopped the vCPU (D17.2.37 ESR_ELx.EC). */
void vmm__kvm_debug_exit(struct vmm_vcpu *vcpu, struct vmm_exit *exit)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    unsigned ec = ks->run->debug.arch.hsr >> 26;
    uint64_t far = ks->run->debug.arch.far;
    uint64_t pc = 0;

    one_reg(ks, CORE(regs.pc, KVM_REG_SIZE_U64), &pc, false);
    exit->kind = VMM_EXIT_DEBUG;
    exit->debug.point = -1; /* a finished step (EC 0x32/0x33), or a guest's own BRK */
    exit->debug.addr = 0;
    if (ec == 0x3c) {
        exit->debug.point = VMM_DBG_BREAK;
        exit->debug.addr = pc;
    } else if (ec == 0x30 || ec == 0x31) {
        exit->debug.point = VMM_DBG_HBREAK;
        exit->debug.addr = pc;
    } else if ((ec == 0x34 || ec == 0x35) && ks->dbg) {
        /* FAR is the accessed address (possibly below the watched range, an access that straddles it) */
        for (unsigned i = 0; i < ks->dbg->npoints; i++) {
            const struct vmm_debug_point *p = &ks->dbg->points[i];
            if (p->type >= VMM_DBG_WATCH_WRITE && far < p->addr + p->len && far + 8 > p->addr) {
                exit->debug.point = p->type;
                exit->debug.addr = p->addr;
                break;
            }
        }
    }
}

/* The debugger holds the VM: the virtual counter stands still (KVM_REG_ARM_TIMER_CNT sets CNTVOFF). */
static void kvm_clock_hold(struct vmm_vcpu *vcpu, bool hold)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;

    if (!ks->dbg && !(ks->dbg = calloc(1, sizeof *ks->dbg)))
        return;
    if (hold)
        ks->dbg->cnt_saved = !one_reg(ks, KVM_REG_ARM_TIMER_CNT, &ks->dbg->held_cnt, false);
    else if (ks->dbg->cnt_saved) {
        one_reg(ks, KVM_REG_ARM_TIMER_CNT, &ks->dbg->held_cnt, true);
        ks->dbg->cnt_saved = false;
    }
}

/* KVM powers vCPUs on and off (PSCI in the kernel): its MP state says which. */
static bool kvm_powered(struct vmm_vcpu *vcpu)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    struct kvm_mp_state mp = { 0 };
    return ioctl(ks->fd, KVM_GET_MP_STATE, &mp) == 0 && mp.mp_state != KVM_MP_STATE_STOPPED;
}

static void kvm_mem_changed(struct vmm_vcpu *vcpu)
{
    (void)vcpu; /* KVM executes guest RAM itself: nothing translated to drop */
}

const struct vmm_debug_ops vmm__kvm_debug_ops = {
    .reg_read = kvm_reg_read,
    .reg_write = kvm_reg_write,
    .sysreg_read = kvm_sysreg_read,
    .sysreg_write = kvm_sysreg_write,
    .set_debug = kvm_set_debug,
    .mem_changed = kvm_mem_changed,
    .clock_hold = kvm_clock_hold,
    .mem_shadow = kvm_mem_shadow,
    .powered = kvm_powered,
};

#endif /* VMM_HAVE_KVM */
