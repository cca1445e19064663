/*
 * hvf.c - the Hypervisor.framework backend (macOS on Apple Silicon).
 *
 * The framework runs the vCPUs and their virtual timers; our GICv3 model, the EL1 physical timer
 * (arm/timer.c) and PSCI (arm/psci.c) stay ours (capabilities: VCPU_THREADS and HOST_CPU only).
 * Each vCPU is owned by a host thread of this file's (the framework binds a vCPU to the thread that
 * created it; the core's run loop starts new threads for every run): vcpu_run hands the owner the
 * run and waits. The owner runs the vCPU with hv_vcpu_run() and serves the exits that need no wait
 * inline (MMIO, trapped system registers, PSCI calls, the timer: hvf_exits.c), returning to the loop
 * for WFI, power events, errors and kicks (hv_vcpus_exit). Interrupts go in with
 * hv_vcpu_set_pending_interrupt() before every run.
 *
 * Only the documented C API is used. On Linux the same file builds against the simulator in
 * csrc/backend/hvfsim/ (its Hypervisor.h and mach/mach_time.h), so the suite runs it; on macOS
 * against the framework. Nothing here knows which.
 */
#include "../core/vm.h"

#if VMM_HAVE_HVF

#include <inttypes.h>
#include <mach/mach_time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../arm/arm.h"
#include "../core/irqchip.h"
#include "../core/layout.h"
#include "hvf.h"

static __thread struct hvf_vcpu *tls_owned; /* the vCPU this thread owns, on its owner thread */

uint64_t vmm__hvf_ticks_to_ns(const struct hvf_vm *hv, uint64_t ticks)
{
    return (uint64_t)((unsigned __int128)ticks * hv->tb_numer / hv->tb_denom);
}

uint64_t vmm__hvf_ns_to_ticks(const struct hvf_vm *hv, uint64_t ns)
{
    return (uint64_t)((unsigned __int128)ns * hv->tb_denom / hv->tb_numer);
}

static const char *hv_strerror(hv_return_t r)
{
    switch (r) {
    case HV_SUCCESS:
        return "success";
    case HV_BUSY:
        return "busy (Hypervisor.framework allows one VM per process)";
    case HV_BAD_ARGUMENT:
        return "bad argument";
    case HV_NO_RESOURCES:
        return "no resources";
    case HV_NO_DEVICE:
        return "no device";
    case HV_DENIED:
        return "denied (is the process signed with the com.apple.security.hypervisor entitlement? "
               "see `python -m vmmpy sign-python`)";
    case HV_UNSUPPORTED:
        return "unsupported";
    default:
        return "error";
    }
}

/* ---- the owner thread ---- */

static void *owner_main(void *arg)
{
    struct hvf_vcpu *h = arg;

    tls_owned = h;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (h->done == h->posted && !h->quit)
            pthread_cond_wait(&h->cond, &h->lock);
        if (h->quit)
            break;
        int (*fn)(struct hvf_vcpu *, void *) = h->call;
        void *fn_arg = h->arg;
        pthread_mutex_unlock(&h->lock);
        int r = fn(h, fn_arg);
        pthread_mutex_lock(&h->lock);
        h->result = r;
        h->done = h->posted;
        pthread_cond_broadcast(&h->cond);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* Run fn on the vCPU's owner thread and wait for its result (at once if this is that thread). One at a time. */
static int on_owner(struct hvf_vcpu *h, int (*fn)(struct hvf_vcpu *, void *), void *arg)
{
    if (tls_owned == h)
        return fn(h, arg);
    pthread_mutex_lock(&h->lock);
    while (h->busy)
        pthread_cond_wait(&h->cond, &h->lock);
    h->busy = true;
    h->call = fn;
    h->arg = arg;
    uint64_t mine = ++h->posted;
    pthread_cond_broadcast(&h->cond);
    while (h->done != mine)
        pthread_cond_wait(&h->cond, &h->lock);
    int r = h->result;
    h->busy = false;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    return r;
}

/* ---- ops ---- */

static int hvf_probe(char *why, size_t len)
{
    uint32_t bits = 0;
    /* succeeds without a VM (and without the entitlement) wherever the framework runs */
    if (hv_vm_config_get_max_ipa_size(&bits) != HV_SUCCESS || !bits) {
        snprintf(why, len, "Hypervisor.framework is not available (macOS 13 or newer on Apple Silicon)");
        return VMM_ENOBACKEND;
    }
    return 0;
}

static int hvf_vm_init(struct vmm_vm *vm)
{
    struct hvf_vm *hv = calloc(1, sizeof *hv);
    mach_timebase_info_data_t tb;
    uint32_t max_bits = 0, bits;
    hv_return_t r;

    if (!hv)
        return vmm__set_error(vm, VMM_ENOMEM, "hvf: out of memory");
    mach_timebase_info(&tb);
    hv->tb_numer = tb.numer ? tb.numer : 1;
    hv->tb_denom = tb.denom ? tb.denom : 1;
    /* the IPA space must reach the end of RAM; above it (and in holes) accesses exit to us */
    uint64_t top = LAYOUT_RAM_BASE + vm->ram_size - 1;
    bits = 64 - (unsigned)__builtin_clzll(top);
    hv_vm_config_get_max_ipa_size(&max_bits);
    if (bits > max_bits) {
        free(hv);
        return vmm__set_error(vm, VMM_ERANGE, "%" PRIu64 " MiB of RAM needs %u-bit guest addresses; this Mac has %u",
                              vm->ram_size >> 20, bits, max_bits);
    }
    hv_vm_config_t config = hv_vm_config_create();
    uint32_t dflt = 0;
    hv_vm_config_get_default_ipa_size(&dflt);
    if (config && bits > dflt)
        hv_vm_config_set_ipa_size(config, bits);
    r = hv_vm_create(config);
    if (config)
        os_release(config);
    if (r != HV_SUCCESS) {
        free(hv);
        return vmm__set_error(vm, r == HV_BUSY ? VMM_EBUSY : VMM_ENOBACKEND, "hvf: hv_vm_create: %s", hv_strerror(r));
    }
    r = hv_vm_map(vm->ram, LAYOUT_RAM_BASE, vm->ram_size, HV_MEMORY_READ | HV_MEMORY_WRITE | HV_MEMORY_EXEC);
    if (r != HV_SUCCESS) {
        hv_vm_destroy();
        free(hv);
        return vmm__set_error(vm, VMM_ENOBACKEND, "hvf: mapping %" PRIu64 " MiB of RAM: %s", vm->ram_size >> 20,
                              hv_strerror(r));
    }
    /* the virtual counter counts from the VM's clock base, as the core's clock does */
    hv->vt_offset = mach_absolute_time() - vmm__hvf_ns_to_ticks(hv, vmm__now_ns() - vm->clock_base_ns);
    vm->bstate = hv;
    return 0;
}

static void hvf_vm_fini(struct vmm_vm *vm)
{
    if (!vm->bstate)
        return;
    hv_vm_unmap(LAYOUT_RAM_BASE, vm->ram_size);
    hv_vm_destroy();
    free(vm->bstate);
    vm->bstate = NULL;
}

#define REG_ID_AA64PFR0 HV_SYS_REG_ID_AA64PFR0_EL1
#define PFR0_GIC_MASK (0xfull << 24)
#define PFR0_GIC_V3 (1ull << 24) /* the system-register CPU interface */

static int create_on_owner(struct hvf_vcpu *h, void *arg)
{
    struct vmm_vcpu *vcpu = h->vcpu;
    struct hvf_vm *hv = vcpu->vm->bstate;
    uint64_t pfr0 = 0;
    hv_return_t r;
    (void)arg;

    r = hv_vcpu_create(&h->id, &h->exit, NULL);
    if (r != HV_SUCCESS)
        return vmm__set_error(vcpu->vm, VMM_ENOBACKEND, "hvf: hv_vcpu_create %u: %s", vcpu->id, hv_strerror(r));
    h->created = true;
    r |= hv_vcpu_set_sys_reg(h->id, HV_SYS_REG_MPIDR_EL1, 0x80000000ull | vcpu->mpidr);
    r |= hv_vcpu_set_vtimer_offset(h->id, hv->vt_offset);
    /* our GIC's CPU interface is system registers, which the framework traps to us */
    r |= hv_vcpu_get_sys_reg(h->id, REG_ID_AA64PFR0, &pfr0);
    if (vmm__irqchip_has_sysregs(vcpu->vm->irqchip))
        r |= hv_vcpu_set_sys_reg(h->id, REG_ID_AA64PFR0, (pfr0 & ~PFR0_GIC_MASK) | PFR0_GIC_V3);
    if (r != HV_SUCCESS)
        return vmm__set_error(vcpu->vm, VMM_ENOBACKEND, "hvf: setting up vCPU %u's registers", vcpu->id);
    return 0;
}

static int destroy_on_owner(struct hvf_vcpu *h, void *arg)
{
    (void)arg;
    if (h->created)
        hv_vcpu_destroy(h->id);
    h->created = false;
    return 0;
}

static void hvf_vcpu_fini(struct vmm_vcpu *vcpu)
{
    struct hvf_vcpu *h = vcpu->bstate;
    if (!h)
        return;
    if (h->started) {
        on_owner(h, destroy_on_owner, NULL);
        pthread_mutex_lock(&h->lock);
        h->quit = true;
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
    }
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
    vcpu->bstate = NULL;
}

static int hvf_vcpu_init(struct vmm_vcpu *vcpu)
{
    struct hvf_vcpu *h = calloc(1, sizeof *h);
    int err;

    if (!h)
        return vmm__set_error(vcpu->vm, VMM_ENOMEM, "hvf: out of memory");
    h->vcpu = vcpu;
    /* the PMU registers trap (MDCR_EL2.TPM): ours, arm/pmu.c, on the VM's clock (hvf_exits.c) */
    vcpu->pmu.host_clock = true;
    vcpu->pmu.n = HVF_PMU_COUNTERS;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    vcpu->bstate = h;
    if ((err = pthread_create(&h->thread, NULL, owner_main, h))) {
        hvf_vcpu_fini(vcpu);
        return vmm__set_error(vcpu->vm, VMM_ENOMEM, "hvf: cannot start vCPU %u's thread: %s", vcpu->id, strerror(err));
    }
    h->started = true;
    int rc = on_owner(h, create_on_owner, NULL);
    if (rc)
        hvf_vcpu_fini(vcpu);
    return rc;
}

struct reset_args {
    uint64_t entry, x0;
};

#define SCTLR_EL1_RESET 0x30d00800ull /* RES1 bits, MMU and caches off (Arm ARM D17.2.118) */

static int reset_on_owner(struct hvf_vcpu *h, void *arg)
{
    const struct reset_args *a = arg;
    hv_return_t r = HV_SUCCESS;

    for (unsigned i = 0; i < 31; i++)
        r |= hv_vcpu_set_reg(h->id, (hv_reg_t)(HV_REG_X0 + i), i == 0 ? a->x0 : 0);
    r |= hv_vcpu_set_reg(h->id, HV_REG_PC, a->entry);
    r |= hv_vcpu_set_reg(h->id, HV_REG_CPSR, 0x3c5); /* EL1h, DAIF masked */
    r |= hv_vcpu_set_sys_reg(h->id, HV_SYS_REG_SCTLR_EL1, SCTLR_EL1_RESET);
    r |= hv_vcpu_set_sys_reg(h->id, HV_SYS_REG_CNTV_CTL_EL0, 0);
    r |= hv_vcpu_set_vtimer_mask(h->id, false);
    h->vt_masked = false;
    h->oslsr = 0;
    if (r != HV_SUCCESS)
        return vmm__set_error(h->vcpu->vm, VMM_EBACKEND, "hvf: cannot set vCPU %u's boot registers", h->vcpu->id);
    return 0;
}

static int hvf_vcpu_reset(struct vmm_vcpu *vcpu, uint64_t entry, uint64_t x0)
{
    struct reset_args a = { entry, x0 };
    return on_owner(vcpu->bstate, reset_on_owner, &a);
}

/*
 * The run, on the owner thread: the framework's exits that need no waiting are served here and the
 * vCPU goes on; the others end the run with a normalized exit.
 */
static int run_on_owner(struct hvf_vcpu *h, void *arg)
{
    struct vmm_exit *exit = arg;
    struct vmm_vcpu *vcpu = h->vcpu;
    hv_return_t r;

    for (;;) {
        if (atomic_exchange(&h->kicked, false))
            return 0; /* the loop looks at why */
        vmm__hvf_vtimer_sync(h);
        hv_vcpu_set_pending_interrupt(h->id, HV_INTERRUPT_TYPE_IRQ, atomic_load(&vcpu->irq));
        r = hv_vcpu_run(h->id);
        if (r != HV_SUCCESS) {
            vmm__set_error(vcpu->vm, VMM_EBACKEND, "hvf: hv_vcpu_run on vCPU %u: %s", vcpu->id, hv_strerror(r));
            exit->kind = VMM_EXIT_HOST_ERROR;
            return 0;
        }
        switch (h->exit->reason) {
        case HV_EXIT_REASON_CANCELED: /* a kick, or an interrupt line that changed: look again */
            continue;
        case HV_EXIT_REASON_VTIMER_ACTIVATED:
            vmm__hvf_vtimer_fired(h);
            continue;
        case HV_EXIT_REASON_EXCEPTION:
            if (vmm__hvf_exception(h, exit))
                return 0;
            continue;
        default:
            vmm__set_error(vcpu->vm, VMM_EBACKEND, "hvf: vCPU %u: exit reason %u", vcpu->id, (unsigned)h->exit->reason);
            exit->kind = VMM_EXIT_HOST_ERROR;
            return 0;
        }
    }
}

static void hvf_vcpu_run(struct vmm_vcpu *vcpu, struct vmm_exit *exit)
{
    exit->kind = VMM_EXIT_NONE;
    (void)on_owner(vcpu->bstate, run_on_owner, exit); /* run_on_owner reports failures as the exit */
}

static void hvf_kick(struct vmm_vcpu *vcpu)
{
    struct hvf_vcpu *h = vcpu->bstate;
    if (!h || !h->created)
        return;
    atomic_store(&h->kicked, true);
    hv_vcpus_exit(&h->id, 1); /* any thread */
}

/*
 * The GIC changed this vCPU's line. On its owner thread (an exit being served) the next run applies
 * it; from elsewhere the vCPU may be inside hv_vcpu_run: make it come out and look.
 */
static void hvf_irq_notify(struct vmm_vcpu *vcpu)
{
    struct hvf_vcpu *h = vcpu->bstate;
    if (!h || !h->created || tls_owned == h)
        return;
    hv_vcpus_exit(&h->id, 1);
}

static int get_pc_on_owner(struct hvf_vcpu *h, void *arg)
{
    return hv_vcpu_get_reg(h->id, HV_REG_PC, arg) == HV_SUCCESS ? 0 : VMM_EBACKEND;
}

static uint64_t hvf_get_pc(struct vmm_vcpu *vcpu)
{
    uint64_t pc = 0;
    if (vcpu->bstate)
        on_owner(vcpu->bstate, get_pc_on_owner, &pc);
    return pc;
}

static uint64_t hvf_mem_overhead(struct vmm_vcpu *vcpu)
{
    return sizeof(struct hvf_vcpu) + (vcpu->id == 0 ? sizeof(struct hvf_vm) : 0);
}

/* Only the framework's own VM in a process: chosen by name on a simulator build (csrc/backend/hvfsim). */
const struct vmm_backend_ops vmm__hvf_backend = {
    .name = "hvf",
    /* threads of our own; the framework's vCPUs are the host's CPU; our GIC, EL1 physical timer, PSCI */
    .caps = VMM_CAP_VCPU_THREADS | VMM_CAP_HOST_CPU,
    .not_auto = VMM_HVF_BY_NAME_ONLY,
    .probe = hvf_probe,
    .vm_init = hvf_vm_init,
    .vm_fini = hvf_vm_fini,
    .vcpu_init = hvf_vcpu_init,
    .vcpu_fini = hvf_vcpu_fini,
    .vcpu_reset = hvf_vcpu_reset,
    .vcpu_run = hvf_vcpu_run,
    .complete_mmio = NULL, /* served on the owner thread */
    .kick = hvf_kick,
    .irq_notify = hvf_irq_notify,
    .get_pc = hvf_get_pc,
    .mem_overhead = hvf_mem_overhead,
};

#endif /* VMM_HAVE_HVF */
