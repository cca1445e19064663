/* soft.c - the software backend: Unicorn (QEMU TCG) as the vCPU, our models around it. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <unicorn/unicorn.h>

#include "../core/irq.h"
#include "../core/run.h"
#include "../arm/arm.h"
#include "../arm/gic.h"
#include "../arm/timer.h"
#include "../core/irqchip.h"
#include "../core/layout.h"
#include "soft.h"

/*
 * Unicorn never delivers synchronous exceptions: SVC, undefined
 * instructions, aborts and so on reach UC_HOOK_INTR with PC at the right
 * return address and the syndrome only in QEMU's CPU state. We read the
 * syndrome out of a saved context (soft_calib.c finds where) and perform the
 * AArch64 exception entry ourselves (soft_exc.c). HVC, MRS/MSR of registers
 * we emulate and semihosting are served inline from the hook: leaving
 * uc_emu_start costs far more than the call itself.
 */

/* QEMU's exception numbers (target/arm/cpu.h) as UC_HOOK_INTR reports them */
enum {
    EXCP_UDEF = 1,
    EXCP_SWI = 2,
    EXCP_PREFETCH_ABORT = 3,
    EXCP_DATA_ABORT = 4,
    EXCP_BKPT = 7,
    EXCP_HVC = 11,
    EXCP_SMC = 13,
};

#define INSN_WFI 0xd503207fu
#define INSN_HLT_SEMIHOST 0xd45e0000u /* hlt #0xf000 */

/* The X-register enum is not contiguous: X29 and X30 sit elsewhere. */
int vmm__soft_xreg(unsigned n)
{
    return n <= 28 ? UC_ARM64_REG_X0 + (int)n : n == 29 ? UC_ARM64_REG_X29 : UC_ARM64_REG_X30;
}

uint64_t vmm__soft_cp_read(uc_engine *uc, uint32_t id)
{
    uc_arm64_cp_reg c = { .op0 = SYSREG_OP0(id),
                          .op1 = SYSREG_OP1(id),
                          .crn = SYSREG_CRN(id),
                          .crm = SYSREG_CRM(id),
                          .op2 = SYSREG_OP2(id) };
    uc_reg_read(uc, UC_ARM64_REG_CP_REG, &c);
    return c.val;
}

int vmm__soft_cp_write(uc_engine *uc, uint32_t id, uint64_t val)
{
    uc_arm64_cp_reg c = { .op0 = SYSREG_OP0(id),
                          .op1 = SYSREG_OP1(id),
                          .crn = SYSREG_CRN(id),
                          .crm = SYSREG_CRM(id),
                          .op2 = SYSREG_OP2(id),
                          .val = val };
    return uc_reg_write(uc, UC_ARM64_REG_CP_REG, &c) == UC_ERR_OK ? 0 : VMM_EBACKEND;
}

/* Stop uc_emu_start from inside a hook, on the vCPU's own thread. */
void vmm__soft_stop(struct soft_vcpu *sv)
{
    sv->stopped = true;
    uc_emu_stop(sv->uc);
}

static void set_exit(struct soft_vcpu *sv, enum vmm_exit_kind kind, int status)
{
    sv->exit->kind = kind;
    sv->exit->status = status;
    vmm__soft_stop(sv);
}

static int read_virt(struct vmm_vcpu *vcpu, uint64_t va, void *buf, size_t len)
{
    struct soft_vcpu *sv = vcpu->bstate;
    return uc_vmem_read(sv->uc, va, UC_PROT_READ, buf, len) == UC_ERR_OK ? 0 : VMM_ERANGE;
}

/* A firmware call that ends the run (or this vCPU) leaves uc_emu_start. */
static void apply_call_exit(struct soft_vcpu *sv, enum vmm_exit_kind kind, int status)
{
    if (kind != VMM_EXIT_NONE)
        set_exit(sv, kind, status);
}

/* Make HCR_EL2.VI follow the GIC's line for this vCPU; QEMU then takes the IRQ when PSTATE.I allows. */
static void apply_virq(struct soft_vcpu *sv)
{
    bool want = atomic_load(&sv->vcpu->irq);
    if (want != sv->virq) {
        sv->virq = want;
        if (sv->set_virq) /* a CP_REG write: register lookup, hcr_write, hflags rebuild (a fifth of SGI+IAR+EOI) */
            sv->set_virq(sv->uc, want);
        else
            vmm__soft_cp_write(sv->uc, REG_HCR_EL2, HCR_BASE | (want ? HCR_VI : 0));
    }
}

static void do_hvc(struct soft_vcpu *sv)
{
    static const int regs[4] = { UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2, UC_ARM64_REG_X3 };
    uint64_t x[4];
    void *ptrs[4] = { &x[0], &x[1], &x[2], &x[3] };

    /* the function ID, then only the arguments that call reads (none for unknown IDs) */
    x[0] = soft__reg(sv->uc, UC_ARM64_REG_X0);
    x[1] = x[2] = x[3] = 0;
    unsigned nargs = vmm__psci_nargs((uint32_t)x[0]);
    if (nargs)
        uc_reg_read_batch(sv->uc, (int *)regs + 1, ptrs + 1, (int)nargs);
    uint64_t in[4] = { x[0], x[1], x[2], x[3] };
    enum vmm_exit_kind kind = vmm__psci_call(sv->vcpu, x);
    /* write back what the call changed: x0 alone for almost every call */
    unsigned n = 4;
    while (n > 1 && x[n - 1] == in[n - 1])
        n--;
    uc_reg_write_batch(sv->uc, (int *)regs, ptrs, (int)n);
    apply_call_exit(sv, kind, 0);
}

/*
 * The patched engine's in-block HVC/SMC (uc_vmmpy_call_hook): the same call as do_hvc, with x0-x3 handed
 * over by the engine, which writes them back and goes on after the call; the block ends there, so a call
 * that ends the run (CPU_OFF, CPU_SUSPEND, SYSTEM_OFF/RESET) stops at the next block's start, PC past the
 * call, as the exception path's stop did. Leaving cpu_exec for the exception was half an HVC's time.
 */
static uint32_t on_call(uc_engine *uc, uint32_t excp, uint64_t *x, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    (void)uc;
    (void)excp; /* HVC and SMC alike, as on_intr serves them */
    apply_call_exit(sv, vmm__psci_call(sv->vcpu, x), 0);
    return 1;
}

/* An UNDEF from an MRS/MSR (op0 = 2 or 3): serve it if the core emulates the register. */
static bool do_sysreg(struct soft_vcpu *sv, uint32_t insn, uint64_t pc)
{
    uint32_t id =
        SYSREG(2 + ((insn >> 19) & 1), (insn >> 16) & 7, (insn >> 12) & 15, (insn >> 8) & 15, (insn >> 5) & 7);
    bool is_read = (insn >> 21) & 1;
    unsigned rt = insn & 31;
    uint64_t val = 0;

    if (((soft__reg(sv->uc, UC_ARM64_REG_PSTATE) >> 2) & 3) == 0)
        return false; /* none of ours is accessible from EL0 */
    if (!is_read && rt != 31)
        val = soft__reg(sv->uc, vmm__soft_xreg(rt));
    if (vmm__sysreg_access(sv->vcpu, id, is_read, &val))
        return false;
    if (is_read && rt != 31)
        soft__set_reg(sv->uc, vmm__soft_xreg(rt), val);
    /* a PC write restarts translation here, so state changes take effect at once */
    soft__set_reg(sv->uc, UC_ARM64_REG_PC, pc + 4);
    vmm__soft_step_done(sv, pc + 4);
    return true;
}

static bool do_semihost(struct soft_vcpu *sv, uint64_t pc)
{
    struct vmm_semihost_env env = { .vcpu = sv->vcpu, .read_mem = read_virt };
    uint64_t ret;
    int status = 0;

    enum vmm_exit_kind kind =
        vmm__semihost_call(&env, soft__reg(sv->uc, UC_ARM64_REG_X0), soft__reg(sv->uc, UC_ARM64_REG_X1), &ret, &status);
    soft__set_reg(sv->uc, UC_ARM64_REG_X0, ret);
    soft__set_reg(sv->uc, UC_ARM64_REG_PC, pc + 4);
    vmm__soft_step_done(sv, pc + 4);
    apply_call_exit(sv, kind, status);
    return true;
}

static void on_intr(uc_engine *uc, uint32_t intno, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    uint64_t pc;
    uint32_t insn;

    if (intno == EXCP_HVC || intno == EXCP_SMC) { /* the hot path: PC already points past the call */
        do_hvc(sv);
        return;
    }
    pc = soft__reg(uc, UC_ARM64_REG_PC);
    switch (intno) {
    case EXCP_UDEF: /* or a software step completing (EC 0x32/0x33): nothing to emulate then */
        if (!vmm__soft_udef_is_step(sv) && uc_vmem_read(uc, pc, UC_PROT_EXEC, &insn, 4) == UC_ERR_OK) {
            if ((insn & 0xffd00000u) == 0xd5100000u && do_sysreg(sv, insn, pc))
                return;
            if (insn == INSN_HLT_SEMIHOST && do_semihost(sv, pc))
                return;
        }
        vmm__soft_deliver_sync(sv, pc);
        return;
    case EXCP_SWI:
    case EXCP_PREFETCH_ABORT:
    case EXCP_DATA_ABORT:
    case EXCP_BKPT:
        vmm__soft_deliver_sync(sv, pc);
        return;
    }
    vmm__set_error(sv->vcpu->vm, VMM_EBACKEND, "vCPU %u: unexpected exception %u at pc 0x%" PRIx64, sv->vcpu->id, intno,
                   pc);
    set_exit(sv, VMM_EXIT_HOST_ERROR, 0);
}

/*
 * The fast engine's block hook, there only while a PMU overflow that interrupts is due: it ends the
 * run at insn_limit. Unicorn calls it before the engine's own block-start check, which counts the
 * block only if it goes on: the engine's count so far is every block before this one.
 */
static void on_block_limit(struct soft_vcpu *sv)
{
    uint64_t n = sv->engine_insns;

    sv->fast->insns(sv->uc, &n);
    if (sv->vcpu->insns + (n - sv->engine_insns) >= sv->vcpu->insn_limit)
        vmm__soft_stop(sv);
}

static void on_block(uc_engine *uc, uint64_t addr, uint32_t size, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    struct vmm_vcpu *vcpu = sv->vcpu;
    (void)uc;
    (void)addr;
    if (sv->fast) {
        on_block_limit(sv);
        return;
    }
    /* a stop requested here takes effect before this block executes: it is counted when it runs */
    if (atomic_load_explicit(&sv->kick, memory_order_relaxed) || vcpu->insns >= vcpu->insn_limit || sv->yield_req) {
        vmm__soft_stop(sv);
        return;
    }
    /*
     * A block that waits for another vCPU ends the turn (pause-loop exiting),
     * but not the first block of a turn: the wait loop must re-read what it
     * waits for once the others have run.
     */
    if (vcpu->vm->ncpus > 1 && !sv->threaded && !sv->first_block) {
        bool poll = false;
        if (!vcpu->vm->deterministic) {
            if (sv->poll.tracking)
                poll = vmm__soft_poll_follow(sv, addr, size);
            else if (((vcpu->insns + (size >> 2)) ^ vcpu->insns) >> POLL_SAMPLE_SHIFT)
                vmm__soft_poll_sample(&sv->poll, addr, size);
        }
        if ((poll || vmm__soft_block_spins(sv, addr, size)) && vmm__others_runnable(vcpu)) {
            vmm__count(vcpu->vm, &vcpu->vm->stats.spin_yields);
            vcpu->yielded = true;
            vmm__soft_stop(sv);
            return;
        }
    }
    sv->first_block = false;
    vmm__add_own(&vcpu->insns, size >> 2); /* vmm_get_stats reads it from another thread */
}

/* Accesses outside RAM and the device window (e.g. above RAM): a synchronous external abort. */
static bool on_unmapped(uc_engine *uc, uc_mem_type type, uint64_t addr, int size, int64_t value, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    (void)uc;
    (void)value;
    sv->fault.pending = true;
    sv->fault.addr = addr;
    sv->fault.fetch = type == UC_MEM_FETCH_UNMAPPED;
    sv->fault.write = type == UC_MEM_WRITE_UNMAPPED;
    vmm__guest_error(sv->vcpu->vm, "soft", "vCPU %u: %d-byte %s at unmapped address 0x%" PRIx64, sv->vcpu->id, size,
                     sv->fault.fetch   ? "instruction fetch"
                     : sv->fault.write ? "write"
                                       : "read",
                     addr);
    return false;
}

static uint64_t mmio_read(uc_engine *uc, uint64_t off, unsigned size, void *opaque)
{
    (void)uc;
    return vmm__region_read(opaque, off, size);
}

static void mmio_write(uc_engine *uc, uint64_t off, unsigned size, uint64_t val, void *opaque)
{
    (void)uc;
    vmm__region_write(opaque, off, size, val);
}

/* ---- ops ---- */

static int soft_probe(char *why, size_t len)
{
    unsigned major, minor;
    uc_version(&major, &minor);
    if (major < 2 || (major == 2 && minor < 1)) {
        snprintf(why, len, "Unicorn %u.%u is too old (need 2.1 or newer)", major, minor);
        return VMM_ENOBACKEND;
    }
    if (!uc_arch_supported(UC_ARCH_ARM64)) {
        snprintf(why, len, "this Unicorn was built without aarch64 support");
        return VMM_ENOBACKEND;
    }
    return 0;
}

static int soft_vm_init(struct vmm_vm *vm)
{
    struct soft_vm *s = calloc(1, sizeof *s);
    int rc;

    if (!s)
        return vmm__set_error(vm, VMM_ENOMEM, "soft: out of memory");
    /* unclaimed parts of the device window answer RAZ/WI, like any bus with nothing on it */
    rc = vmm__bus_gaps(vm, s->gaps, SOFT_MAX_GAPS);
    if (rc < 0) {
        free(s);
        return vmm__set_error(vm, VMM_ENOMEM, "soft: too many holes in the device window");
    }
    s->ngaps = (unsigned)rc;
    pthread_mutex_init(&s->bc_lock, NULL);
    pthread_cond_init(&s->bc_cond, NULL);
    vm->bstate = s;
    return 0;
}

static void soft_vm_fini(struct vmm_vm *vm)
{
    struct soft_vm *s = vm->bstate;

    if (s) {
        pthread_mutex_destroy(&s->bc_lock);
        pthread_cond_destroy(&s->bc_cond);
    }
    free(vm->bstate);
    vm->bstate = NULL;
}

static int cpu_model(const char *name)
{
#define UC_MODEL(name, compatible, soft) UC_CPU_ARM64_##soft,
    static const int uc_models[] = { VMM__CPU_MODELS(UC_MODEL) };
#undef UC_MODEL
    int i = vmm__cpu_model_find(name);
    return uc_models[i < 0 ? 0 : i];
}

static int map_region(struct soft_vcpu *sv, struct vmm_region *r)
{
    uc_err e = uc_mmio_map(sv->uc, r->base, r->size, mmio_read, r, mmio_write, r);
    if (e)
        return vmm__set_error(r->vm, VMM_EBACKEND, "soft: mapping %s at 0x%" PRIx64 ": %s", r->name, r->base,
                              uc_strerror(e));
    return 0;
}

/*
 * Each engine's translation buffer. Unicorn's default reserves 1 GiB of address space per engine (a
 * 1-vCPU 256 MiB VM mapped 1393 MiB; an 8-vCPU one 9.3 GiB), which made a dozen VMs in one process
 * fail under an address-space limit, and Unicorn exits the process when that mmap fails. With 64 MiB
 * the same VM maps 433 MiB, and Debian's boot to /init on 2 vCPUs took no longer (26.5-30.4 s against
 * 28.3-35.6 s with the default, on a busy host); a full buffer only costs a retranslation.
 */
#define SOFT_TCG_BUFFER (128u << 20)

/*
 * What the patched engine (soft_engine.c) takes over. The block hook exists for kicks, instruction
 * counting and, on SMP with one thread, the round-robin slice and the spin and polling detectors.
 * On one vCPU (or a thread per vCPU) in real time the engine's safe kick and its own count do the
 * first two, so there is no hook. Deterministic mode keeps the hook and the PC write after a hooked
 * register (finish_lacked) on both engines: its instruction counts, hence its output, stay the same.
 */
static void engine_options(struct soft_vcpu *sv)
{
    const struct soft_engine *en = vmm__soft_engine();
    struct vmm_vm *vm = sv->vcpu->vm;

    /* the same register writes as uc_reg_write, at the same point: deterministic output is unchanged */
    sv->sys_result = en->sys_result;
    sv->sys_el = en->sys_el;
    sv->set_virq = en->virq; /* the same bit written, as cheaply as the engine allows */
    /* no hook call for the system registers we never handle: nothing the guest sees changes, in any mode */
    if (en->sys_filter)
        en->sys_filter(sv->uc, vmm__soft_sys_wanted, sv);
    if (!en->patched || vm->deterministic)
        return;
    /*
     * SMP on one thread keeps the wheel's behaviour throughout: with ICC accesses going on in the
     * block, 2 of 9 loaded runs of two 2-vCPU Linux tests hung with every vCPU idle (not understood
     * yet); none of 6 on the wheel's engine, none of 9 with this.
     */
    if (vm->ncpus > 1 && !sv->threaded)
        return;
    sv->fast = en;
    en->insns(sv->uc, &sv->engine_insns);
    sv->sys_continue = en->sys_continue(sv->uc, true) == UC_ERR_OK;
    if (en->call_hook)
        en->call_hook(sv->uc, on_call, sv);
    /*
     * The counter as vmm__clock_ns computes it in real time, read by the engine from the same two
     * words at each access: the MRS hook, its dispatch and the register write were ~7 ns of a 32 ns read (25.9 ns now).
     * Such a read is not counted in stats.sysreg_exits (nor is it on KVM, where it does not trap).
     */
    if (en->counter)
        en->counter(sv->uc, (const uint64_t *)&vm->clock_held, &vm->clock_base_ns, TIMER_NS_PER_TICK);
}

static int soft_vcpu_init(struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = vcpu->vm;
    struct soft_vm *s = vm->bstate;
    struct soft_vcpu *sv = calloc(1, sizeof *sv);
    uc_hook h;
    uc_err e;
    int rc = VMM_EBACKEND;

    if (!sv)
        return vmm__set_error(vm, VMM_ENOMEM, "soft: out of memory");
    sv->vcpu = vcpu;
    sv->svm = s;
    sv->threaded = vmm__has_cap(vm->ops, VMM_CAP_VCPU_THREADS);
    sv->parallel = sv->threaded && vm->ncpus > 1;
    vcpu->bstate = sv;
    if (sv->parallel && !vmm__soft_engine()->parallel) {
        vmm__set_error(vm, VMM_EBACKEND,
                       "soft: a thread per vCPU with %u vCPUs needs the patched Unicorn (make unicorn): the wheel's "
                       "engine cannot make the guest's atomics atomic between threads",
                       vm->ncpus);
        goto fail;
    }
    if ((e = uc_open(UC_ARCH_ARM64, UC_MODE_ARM, &sv->uc))) {
        vmm__set_error(vm, VMM_EBACKEND, "soft: uc_open: %s", uc_strerror(e));
        goto fail;
    }
    if ((e = uc_ctl_set_cpu_model(sv->uc, cpu_model(vm->cpu_model)))) {
        vmm__set_error(vm, VMM_EBACKEND, "soft: CPU model %s: %s", vm->cpu_model, uc_strerror(e));
        goto fail;
    }
    if ((e = uc_ctl_set_tcg_buffer_size(sv->uc, SOFT_TCG_BUFFER))) {
        vmm__set_error(vm, VMM_EBACKEND, "soft: TCG buffer: %s", uc_strerror(e));
        goto fail;
    }
    vmm__soft_dbgarch_init(sv);
    /* vCPU 0 finds the syndrome offset before anything is mapped; all engines share the layout */
    if (vcpu->id == 0 && (rc = vmm__soft_calibrate(vm, sv->uc, &s->syndrome_off)))
        goto fail;
    rc = VMM_EBACKEND;
    if ((e = uc_mem_map_ptr(sv->uc, LAYOUT_RAM_BASE, vm->ram_size, UC_PROT_ALL, vm->ram)) ||
        (e = uc_context_alloc(sv->uc, &sv->ctx))) {
        vmm__set_error(vm, VMM_EBACKEND, "soft: engine setup: %s", uc_strerror(e));
        goto fail;
    }
    for (unsigned i = 0; i < vm->nregions; i++)
        if ((rc = map_region(sv, &vm->regions[i])))
            goto fail;
    for (unsigned i = 0; i < s->ngaps; i++)
        if ((rc = map_region(sv, &s->gaps[i])))
            goto fail;
    engine_options(sv);
    if ((e = uc_hook_add(sv->uc, &h, UC_HOOK_INTR, (void *)on_intr, sv, 1, 0)) ||
        (!sv->fast && (e = uc_hook_add(sv->uc, &h, UC_HOOK_BLOCK, (void *)on_block, sv, 1, 0))) ||
        /*
         * Bounded to what lies above RAM (everything below is RAM or the device window, all mapped):
         * a memory hook whose range covers RAM keeps QEMU from ever marking RAM pages dirty, and
         * then every guest store takes the self-modifying-code slow path (3x slower Linux boot).
         */
        (e = uc_hook_add(sv->uc, &h, UC_HOOK_MEM_UNMAPPED, (void *)on_unmapped, sv, LAYOUT_RAM_BASE + vm->ram_size,
                         UINT64_MAX)) ||
        (e = uc_hook_add(sv->uc, &h, UC_HOOK_INSN, (void *)vmm__soft_on_mrs, sv, 1, 0, UC_ARM64_INS_MRS)) ||
        (e = uc_hook_add(sv->uc, &h, UC_HOOK_INSN, (void *)vmm__soft_on_msr, sv, 1, 0, UC_ARM64_INS_MSR)) ||
        (vm->ncpus > 1 &&
         (e = uc_hook_add(sv->uc, &h, UC_HOOK_INSN, (void *)vmm__soft_on_sys, sv, 1, 0, UC_ARM64_INS_SYS)))) {
        vmm__set_error(vm, VMM_EBACKEND, "soft: adding hooks: %s", uc_strerror(e));
        rc = VMM_EBACKEND;
        goto fail;
    }
    return 0;
fail:
    if (sv->ctx)
        uc_context_free(sv->ctx);
    if (sv->uc)
        uc_close(sv->uc);
    free(sv);
    vcpu->bstate = NULL;
    return rc;
}

static void soft_vcpu_fini(struct vmm_vcpu *vcpu)
{
    struct soft_vcpu *sv = vcpu->bstate;
    if (!sv)
        return;
    uc_context_free(sv->ctx);
    uc_close(sv->uc);
    vmm__soft_debug_free(sv);
    free(sv);
    vcpu->bstate = NULL;
}

static int soft_vcpu_reset(struct vmm_vcpu *vcpu, uint64_t entry, uint64_t x0)
{
    struct soft_vcpu *sv = vcpu->bstate;
    return vmm__soft_boot_state(sv, entry, x0);
}

static bool stopped_at_wfi(struct soft_vcpu *sv, uint64_t pc)
{
    uint32_t insn;
    return pc >= 4 && uc_vmem_read(sv->uc, pc - 4, UC_PROT_EXEC, &insn, 4) == UC_ERR_OK && insn == INSN_WFI;
}

/*
 * The vCPU executing guest code on this thread (inside uc_emu_start), and
 * with vCPU threads the one this thread runs: GIC reports made here apply
 * without a kick.
 */
static __thread struct soft_vcpu *tls_executing, *tls_owner;
static __thread int tls_parallel = -1; /* what this thread last told the engine (uc_vmmpy_parallel), -1: nothing */

/*
 * The fast engine has no block hook, so nothing checks insn_limit during a run: while a PMU overflow
 * interrupt is due (the only finite limit it sees) the hook is added, and removed after. Translations
 * carry their hooks: each change drops them (a guest that arms the PMU pays a retranslation).
 */
static int fast_block_hook(struct soft_vcpu *sv, bool want)
{
    if (want == (sv->block_hook != 0))
        return 0;
    if (want) {
        if (uc_hook_add(sv->uc, &sv->block_hook, UC_HOOK_BLOCK, (void *)on_block, sv, 1, 0)) {
            sv->block_hook = 0;
            return vmm__set_error(sv->vcpu->vm, VMM_EBACKEND, "soft: cannot add the block hook");
        }
    } else {
        uc_hook_del(sv->uc, sv->block_hook);
        sv->block_hook = 0;
    }
    uc_ctl_flush_tb(sv->uc);
    return 0;
}

static void soft_vcpu_run(struct vmm_vcpu *vcpu, struct vmm_exit *exit)
{
    struct soft_vcpu *sv = vcpu->bstate;
    struct vmm_vm *vm = vcpu->vm;
    uc_err e;

    exit->kind = VMM_EXIT_NONE;
    sv->icc = vmm__irqchip_has_sysregs(vm->irqchip);
    vmm__soft_bcast_apply(sv);
    apply_virq(sv);
    if (sv->dbg.dirty && vmm__soft_dbg_apply(sv)) {
        exit->kind = VMM_EXIT_HOST_ERROR;
        return;
    }
    vmm__pmu_sync(vcpu);
    if (atomic_exchange(&sv->kick, 0) || vcpu->insns >= vcpu->insn_limit)
        return;                        /* the loop looks at why we were kicked */
    uint64_t limit = vcpu->insn_limit; /* a PMU overflow that interrupts ends the run early */
    vcpu->insn_limit = vmm__soft_pmu_limit(sv, limit);
    if (sv->fast && fast_block_hook(sv, vcpu->insn_limit != UINT64_MAX)) {
        vcpu->insn_limit = limit;
        exit->kind = VMM_EXIT_HOST_ERROR;
        return;
    }
    sv->exit = exit;
    sv->stopped = false;
    sv->first_block = true;
    sv->yield_req = false;
    tls_executing = sv;
    if (sv->threaded)
        tls_owner = sv;
    if (vmm__soft_engine()->parallel && tls_parallel != (int)sv->parallel) {
        vmm__soft_engine()->parallel(sv->parallel); /* per thread: once, unless it runs the other kind */
        tls_parallel = sv->parallel;
    }
    vmm__soft_bcast_enter(sv);
    e = uc_emu_start(sv->uc, sv->pc, UINT64_MAX & ~3ULL, 0, 0);
    tls_executing = NULL;
    vmm__soft_bcast_leave(sv); /* with a thread per vCPU, waits for what this run broadcast */
    uint64_t ran = vmm__soft_sync_insns(sv);
    vcpu->insn_limit = limit;
    vmm__pmu_sync(vcpu);
    sv->pc = soft__reg(sv->uc, UC_ARM64_REG_PC);
    if (!sv->fault.pending && (e == UC_ERR_READ_UNMAPPED || e == UC_ERR_WRITE_UNMAPPED || e == UC_ERR_FETCH_UNMAPPED)) {
        /* outside the hook's range (the hook sees virtual addresses): same abort, address unknown */
        sv->fault = (typeof(sv->fault)){ .pending = true,
                                         .fetch = e == UC_ERR_FETCH_UNMAPPED,
                                         .write = e == UC_ERR_WRITE_UNMAPPED };
        vmm__guest_error(vm, "soft", "vCPU %u: access to an unmapped address at pc 0x%" PRIx64, vcpu->id, sv->pc);
    }
    if (sv->fault.pending) {
        sv->fault.pending = false;
        vmm__soft_deliver_external_abort(sv);
        return;
    }
    if (e) {
        vmm__set_error(vm, VMM_EBACKEND, "soft: vCPU %u stopped with '%s' at pc 0x%" PRIx64, vcpu->id, uc_strerror(e),
                       sv->pc);
        exit->kind = VMM_EXIT_HOST_ERROR;
        return;
    }
    if (exit->kind != VMM_EXIT_NONE || sv->stopped)
        return;
    /*
     * The patched engine also returns for a kick, at the start of a block: one right after a WFI the
     * guest has left is not a WFI exit, nor is a run that a kick left over from before ended at its
     * first block (no block counted). A WFI and a kick at once count as the kick (a spurious wake-up).
     */
    if (sv->fast && (atomic_load(&sv->kick) || sv->yield_req || !ran))
        return;
    /* Unicorn returns on its own only when the CPU halts: after a WFI */
    if (stopped_at_wfi(sv, sv->pc))
        exit->kind = VMM_EXIT_WFI;
}

/* From any thread: the block hook sees the flag, or without one the patched engine's kick ends the run. */
void vmm__soft_kick(struct soft_vcpu *sv)
{
    atomic_store(&sv->kick, 1);
    if (sv->fast)
        sv->fast->kick(sv->uc);
}

static void soft_kick(struct vmm_vcpu *vcpu)
{
    struct soft_vcpu *sv = vcpu->bstate;
    if (sv)
        vmm__soft_kick(sv);
}

/*
 * The GIC changed this vCPU's line. On the run thread, inside a hook of this
 * very vCPU, write HCR_EL2.VI now (QEMU takes the IRQ at the next block);
 * a line raised for another vCPU ends the running one's slice so that the
 * target runs soon (IPI latency). From other threads, kick the vCPU: it
 * re-enters with the new line.
 */
static void soft_irq_notify(struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = vcpu->vm;
    struct soft_vcpu *sv = vcpu->bstate;

    if (!sv)
        return;
    if (tls_executing == sv) { /* in one of its hooks (a GIC sysreg, a device write): QEMU takes it at once */
        apply_virq(sv);
        return;
    }
    if (tls_owner == sv)
        return; /* its own thread, between runs (vCPU threads): the next soft_vcpu_run applies it */
    if (!vmm__on_run_thread(vm)) {
        vmm__soft_kick(sv); /* a falling line matters too: no spurious IRQ after it */
        return;
    }
    if (vm->current == vcpu) {
        apply_virq(sv);
    } else if (vm->current && !vm->deterministic && atomic_load(&vcpu->irq)) {
        /*
         * End the running vCPU's slice at its next block, not here: this may
         * be inside an MMIO callback, where uc_emu_stop makes Unicorn resume
         * at the start of the translation block and execute its first
         * instructions twice (seen as memory corruption in SMP Linux).
         */
        struct soft_vcpu *cur = vm->current->bstate;
        if (!cur->yield_req)
            vmm__count(vm, &vm->stats.ipi_yields);
        vmm__soft_end_at_block(cur);
    }
}

static uint64_t soft_get_pc(struct vmm_vcpu *vcpu)
{
    struct soft_vcpu *sv = vcpu->bstate;
    return sv ? sv->pc : 0;
}

static uint64_t soft_mem_overhead(struct vmm_vcpu *vcpu)
{
    struct soft_vcpu *sv = vcpu->bstate;
    return sizeof *sv + (sv ? uc_context_size(sv->uc) : 0);
}

/* The ops both soft backends share: they differ only in how the loop drives them. */
#define SOFT_OPS                                                                                              \
    .probe = soft_probe, .vm_init = soft_vm_init, .vm_fini = soft_vm_fini, .vcpu_init = soft_vcpu_init,       \
    .vcpu_fini = soft_vcpu_fini, .vcpu_reset = soft_vcpu_reset, .vcpu_run = soft_vcpu_run, .kick = soft_kick, \
    .irq_notify = soft_irq_notify, .get_pc = soft_get_pc, .mem_overhead = soft_mem_overhead,                  \
    .vcpu_save = vmm__soft_vcpu_save, .vcpu_load = vmm__soft_vcpu_load, .debug = &vmm__soft_debug_ops

/*
 * "soft" with a thread per vCPU: what a real-time VM of more than one vCPU runs on by default
 * (vm.c, vmm_config.vcpu_threads), when the engine translates for parallel vCPUs (the patched
 * Unicorn's uc_vmmpy_parallel: atomics and exclusives are host atomics). Same name, same
 * snapshots: only the loop that drives the engines differs.
 */
static const struct vmm_backend_ops soft_parallel_backend = {
    .name = "soft",
    .caps = VMM_CAP_VCPU_THREADS,
    .not_auto = true,
    SOFT_OPS,
};

static const struct vmm_backend_ops *soft_threaded_variant(void)
{
    return vmm__soft_engine()->parallel ? &soft_parallel_backend : NULL;
}

const struct vmm_backend_ops vmm__soft_backend = {
    .name = "soft",
    .caps = 0, /* one thread; our GIC, timers and PSCI */
    .threaded_variant = soft_threaded_variant,
    SOFT_OPS,
};

/*
 * A test vehicle, chosen by name only: the same engines driven by the
 * threaded loop (a thread per vCPU) with our GIC, timers and PSCI, the
 * combination a Hypervisor.framework backend needs (VMM_CAP_VCPU_THREADS
 * only), also for one vCPU. With more it needs the patched engine's parallel
 * translation (soft_vcpu_init refuses without it) and broadcasts TLB/IC
 * maintenance synchronously (soft_bcast.c), as "soft" does on SMP.
 */
const struct vmm_backend_ops vmm__soft_threaded_backend = {
    .name = "soft-threaded",
    .caps = VMM_CAP_VCPU_THREADS,
    .not_auto = true,
    SOFT_OPS,
};
