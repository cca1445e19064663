/*
 * hvfsim.c - a simulator of Hypervisor.framework's C API (Apple Silicon) for Linux, over Unicorn:
 * the VM, its memory map, vCPUs and their registers, the virtual timer's controls. Running a vCPU
 * is hvfsim_run.c. What it does and does not reproduce: README.md here.
 *
 * As on macOS: one VM per process; a vCPU belongs to the thread that created it and every call on
 * it but hv_vcpus_exit() fails from any other thread (HV_BAD_ARGUMENT); guest memory is the
 * caller's, mapped at page-aligned guest-physical addresses below the VM's IPA limit.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hvfsim.h"
#include "mach/mach_time.h"

struct sim_vm hvfsim__vm = { .mu = PTHREAD_MUTEX_INITIALIZER };

struct hv_vm_config_s {
    uint32_t ipa_bits;
};

/* ---- the host clock (mach_time.h) ---- */

uint64_t mach_absolute_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    return ns / SIM_TB_NUMER * SIM_TB_DENOM + ns % SIM_TB_NUMER * SIM_TB_DENOM / SIM_TB_NUMER;
}

kern_return_t mach_timebase_info(mach_timebase_info_t info)
{
    info->numer = SIM_TB_NUMER;
    info->denom = SIM_TB_DENOM;
    return 0;
}

/* ---- the engine lock: a ticket lock, so that a vCPU whose slice ends lets the next one in ---- */

static pthread_mutex_t eng_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t eng_cv = PTHREAD_COND_INITIALIZER;
static uint64_t eng_next, eng_serving;
static atomic_uint_fast64_t eng_waiting;

void hvfsim__lock(void)
{
    pthread_mutex_lock(&eng_mu);
    uint64_t t = eng_next++;
    atomic_fetch_add(&eng_waiting, 1);
    while (eng_serving != t)
        pthread_cond_wait(&eng_cv, &eng_mu);
    atomic_fetch_sub(&eng_waiting, 1);
    pthread_mutex_unlock(&eng_mu);
}

void hvfsim__unlock(void)
{
    pthread_mutex_lock(&eng_mu);
    eng_serving++;
    pthread_cond_broadcast(&eng_cv);
    pthread_mutex_unlock(&eng_mu);
}

bool hvfsim__contended(void)
{
    return atomic_load_explicit(&eng_waiting, memory_order_relaxed) != 0;
}

/* ---- helpers ---- */

int hvfsim__xreg(unsigned n)
{
    return n <= 28 ? UC_ARM64_REG_X0 + (int)n : n == 29 ? UC_ARM64_REG_X29 : UC_ARM64_REG_X30;
}

uint64_t hvfsim__cp_read(uc_engine *uc, uint32_t id)
{
    uc_arm64_cp_reg c = {
        .op0 = (id >> 14) & 3, .op1 = (id >> 11) & 7, .crn = (id >> 7) & 15, .crm = (id >> 3) & 15, .op2 = id & 7
    };
    uc_reg_read(uc, UC_ARM64_REG_CP_REG, &c);
    return c.val;
}

void hvfsim__cp_write(uc_engine *uc, uint32_t id, uint64_t val)
{
    uc_arm64_cp_reg c = { .op0 = (id >> 14) & 3,
                          .op1 = (id >> 11) & 7,
                          .crn = (id >> 7) & 15,
                          .crm = (id >> 3) & 15,
                          .op2 = id & 7,
                          .val = val };
    uc_reg_write(uc, UC_ARM64_REG_CP_REG, &c);
}

uint64_t hvfsim__vcount(struct sim_vcpu *v)
{
    return mach_absolute_time() - v->vt_offset;
}

/* The calling thread's vCPU `id`, or NULL (no such vCPU, or another thread's). */
static struct sim_vcpu *owned(hv_vcpu_t id)
{
    struct sim_vcpu *v = id < SIM_MAX_VCPUS ? hvfsim__vm.vcpus[id] : NULL;
    return v && pthread_equal(v->owner, pthread_self()) ? v : NULL;
}

/* ---- VM configuration ---- */

hv_vm_config_t hv_vm_config_create(void)
{
    hv_vm_config_t c = calloc(1, sizeof *c);
    if (c)
        c->ipa_bits = SIM_DEFAULT_IPA_BITS;
    return c;
}

void os_release(void *object)
{
    free(object);
}

hv_return_t hv_vm_config_get_max_ipa_size(uint32_t *bits)
{
    if (!bits)
        return HV_BAD_ARGUMENT;
    *bits = SIM_MAX_IPA_BITS;
    return HV_SUCCESS;
}

hv_return_t hv_vm_config_get_default_ipa_size(uint32_t *bits)
{
    if (!bits)
        return HV_BAD_ARGUMENT;
    *bits = SIM_DEFAULT_IPA_BITS;
    return HV_SUCCESS;
}

hv_return_t hv_vm_config_set_ipa_size(hv_vm_config_t c, uint32_t bits)
{
    if (!c || bits < 32 || bits > SIM_MAX_IPA_BITS)
        return HV_BAD_ARGUMENT;
    c->ipa_bits = bits;
    return HV_SUCCESS;
}

hv_return_t hv_vm_config_get_ipa_size(hv_vm_config_t c, uint32_t *bits)
{
    if (!c || !bits)
        return HV_BAD_ARGUMENT;
    *bits = c->ipa_bits;
    return HV_SUCCESS;
}

/* ---- the VM ---- */

hv_return_t hv_vm_create(hv_vm_config_t config)
{
    struct sim_vm *vm = &hvfsim__vm;
    hv_return_t r = HV_SUCCESS;

    pthread_mutex_lock(&vm->mu);
    if (vm->created) {
        r = HV_BUSY; /* one VM per process */
    } else {
        vm->created = true;
        vm->ipa_bits = config ? config->ipa_bits : SIM_DEFAULT_IPA_BITS;
        vm->nmaps = 0;
    }
    pthread_mutex_unlock(&vm->mu);
    return r;
}

hv_return_t hv_vm_destroy(void)
{
    struct sim_vm *vm = &hvfsim__vm;
    hv_return_t r = HV_SUCCESS;

    pthread_mutex_lock(&vm->mu);
    if (!vm->created) {
        r = HV_BAD_ARGUMENT;
    } else {
        for (unsigned i = 0; i < SIM_MAX_VCPUS; i++)
            if (vm->vcpus[i])
                r = HV_BUSY; /* every vCPU must be destroyed first */
        if (r == HV_SUCCESS)
            vm->created = false;
    }
    pthread_mutex_unlock(&vm->mu);
    return r;
}

static bool aligned(uint64_t v)
{
    return (v & ((uint64_t)sysconf(_SC_PAGESIZE) - 1)) == 0;
}

static uint32_t prot_of(hv_memory_flags_t f)
{
    return (f & HV_MEMORY_READ ? UC_PROT_READ : 0) | (f & HV_MEMORY_WRITE ? UC_PROT_WRITE : 0) |
           (f & HV_MEMORY_EXEC ? UC_PROT_EXEC : 0);
}

/* Apply a map change to every engine: they only change while none runs. */
static hv_return_t each_engine(uc_err (*fn)(struct sim_vcpu *, const struct sim_map *), const struct sim_map *m)
{
    hv_return_t r = HV_SUCCESS;
    hvfsim__lock();
    for (unsigned i = 0; i < SIM_MAX_VCPUS; i++)
        if (hvfsim__vm.vcpus[i] && fn(hvfsim__vm.vcpus[i], m) != UC_ERR_OK)
            r = HV_ERROR;
    hvfsim__unlock();
    return r;
}

static uc_err engine_map(struct sim_vcpu *v, const struct sim_map *m)
{
    return uc_mem_map_ptr(v->uc, m->ipa, m->size, prot_of(m->flags), m->host);
}

static uc_err engine_unmap(struct sim_vcpu *v, const struct sim_map *m)
{
    return uc_mem_unmap(v->uc, m->ipa, m->size);
}

static uc_err engine_protect(struct sim_vcpu *v, const struct sim_map *m)
{
    return uc_mem_protect(v->uc, m->ipa, m->size, prot_of(m->flags));
}

hv_return_t hv_vm_map(void *addr, hv_ipa_t ipa, size_t size, hv_memory_flags_t flags)
{
    struct sim_vm *vm = &hvfsim__vm;
    hv_return_t r = HV_SUCCESS;

    if (!addr || !size || !aligned((uintptr_t)addr) || !aligned(ipa) || !aligned(size) || ipa + size < ipa ||
        (flags & ~(uint64_t)(HV_MEMORY_READ | HV_MEMORY_WRITE | HV_MEMORY_EXEC)))
        return HV_BAD_ARGUMENT;
    pthread_mutex_lock(&vm->mu);
    if (!vm->created)
        r = HV_BAD_ARGUMENT;
    else if (ipa + size > 1ull << vm->ipa_bits)
        r = HV_BAD_ARGUMENT;
    else if (vm->nmaps == SIM_MAX_MAPS)
        r = HV_NO_RESOURCES;
    for (unsigned i = 0; r == HV_SUCCESS && i < vm->nmaps; i++)
        if (ipa < vm->maps[i].ipa + vm->maps[i].size && vm->maps[i].ipa < ipa + size)
            r = HV_BAD_ARGUMENT; /* overlaps a mapping */
    if (r == HV_SUCCESS) {
        struct sim_map *m = &vm->maps[vm->nmaps++];
        *m = (struct sim_map){ .host = addr, .ipa = ipa, .size = size, .flags = flags };
        r = each_engine(engine_map, m);
    }
    pthread_mutex_unlock(&vm->mu);
    return r;
}

/* The mapping that is exactly [ipa, ipa + size) (the simulator does not split mappings). */
static int find_map(uint64_t ipa, size_t size)
{
    for (unsigned i = 0; i < hvfsim__vm.nmaps; i++)
        if (hvfsim__vm.maps[i].ipa == ipa && hvfsim__vm.maps[i].size == size)
            return (int)i;
    return -1;
}

hv_return_t hv_vm_unmap(hv_ipa_t ipa, size_t size)
{
    struct sim_vm *vm = &hvfsim__vm;
    hv_return_t r = HV_BAD_ARGUMENT;

    pthread_mutex_lock(&vm->mu);
    int i = vm->created ? find_map(ipa, size) : -1;
    if (i >= 0) {
        r = each_engine(engine_unmap, &vm->maps[i]);
        vm->maps[i] = vm->maps[--vm->nmaps];
    }
    pthread_mutex_unlock(&vm->mu);
    return r;
}

hv_return_t hv_vm_protect(hv_ipa_t ipa, size_t size, hv_memory_flags_t flags)
{
    struct sim_vm *vm = &hvfsim__vm;
    hv_return_t r = HV_BAD_ARGUMENT;

    pthread_mutex_lock(&vm->mu);
    int i = vm->created ? find_map(ipa, size) : -1;
    if (i >= 0) {
        vm->maps[i].flags = flags;
        r = each_engine(engine_protect, &vm->maps[i]);
    }
    pthread_mutex_unlock(&vm->mu);
    return r;
}

/* ---- vCPUs ---- */

static void free_vcpu(struct sim_vcpu *v)
{
    if (v->ctx)
        uc_context_free(v->ctx);
    if (v->uc)
        uc_close(v->uc);
    free(v);
}

hv_return_t hv_vcpu_create(hv_vcpu_t *vcpu, hv_vcpu_exit_t **exit, hv_vcpu_config_t config)
{
    struct sim_vm *vm = &hvfsim__vm;
    struct sim_vcpu *v;
    hv_return_t r = HV_SUCCESS;
    unsigned slot = SIM_MAX_VCPUS;
    (void)config;

    if (!vcpu || !exit)
        return HV_BAD_ARGUMENT;
    if (!(v = calloc(1, sizeof *v)))
        return HV_NO_RESOURCES;
    v->owner = pthread_self();
    pthread_mutex_lock(&vm->mu);
    for (unsigned i = 0; i < SIM_MAX_VCPUS && slot == SIM_MAX_VCPUS; i++)
        if (!vm->vcpus[i])
            slot = i;
    if (!vm->created)
        r = HV_BAD_ARGUMENT;
    else if (slot == SIM_MAX_VCPUS)
        r = HV_NO_RESOURCES;
    else if (hvfsim__engine_setup(v))
        r = HV_ERROR;
    for (unsigned i = 0; r == HV_SUCCESS && i < vm->nmaps; i++)
        if (engine_map(v, &vm->maps[i]) != UC_ERR_OK)
            r = HV_ERROR;
    if (r == HV_SUCCESS) {
        v->id = slot;
        hvfsim__lock();
        vm->vcpus[slot] = v;
        hvfsim__unlock();
        *vcpu = slot;
        *exit = &v->exit;
    }
    pthread_mutex_unlock(&vm->mu);
    if (r != HV_SUCCESS)
        free_vcpu(v);
    return r;
}

hv_return_t hv_vcpu_destroy(hv_vcpu_t id)
{
    struct sim_vcpu *v = owned(id);
    if (!v)
        return HV_BAD_ARGUMENT;
    pthread_mutex_lock(&hvfsim__vm.mu);
    hvfsim__lock();
    hvfsim__vm.vcpus[id] = NULL;
    hvfsim__unlock();
    pthread_mutex_unlock(&hvfsim__vm.mu);
    free_vcpu(v);
    return HV_SUCCESS;
}

/* Any thread: make these vCPUs' runs return HV_EXIT_REASON_CANCELED (the next run, if none is under way). */
hv_return_t hv_vcpus_exit(hv_vcpu_t *vcpus, uint32_t count)
{
    if (!vcpus && count)
        return HV_BAD_ARGUMENT;
    pthread_mutex_lock(&hvfsim__vm.mu);
    for (uint32_t i = 0; i < count; i++) {
        struct sim_vcpu *v = vcpus[i] < SIM_MAX_VCPUS ? hvfsim__vm.vcpus[vcpus[i]] : NULL;
        if (v)
            atomic_store(&v->cancel, true);
    }
    pthread_mutex_unlock(&hvfsim__vm.mu);
    return HV_SUCCESS;
}

/* ---- registers ---- */

#define PSTATE_EL(ps) (((ps) >> 2) & 3)

/* Which stack pointer PSTATE selects: 0 for SP_EL0, 1 for SP_EL1 (EL1h). */
static unsigned sp_sel(uint64_t ps)
{
    return PSTATE_EL(ps) && (ps & 1) ? 1 : 0;
}

static uint64_t uc_get(uc_engine *uc, int reg)
{
    uint64_t v = 0;
    uc_reg_read(uc, reg, &v);
    return v;
}

static void uc_set(uc_engine *uc, int reg, uint64_t v)
{
    uc_reg_write(uc, reg, &v);
}

hv_return_t hv_vcpu_get_reg(hv_vcpu_t id, hv_reg_t reg, uint64_t *value)
{
    struct sim_vcpu *v = owned(id);
    if (!v || !value || reg > HV_REG_CPSR)
        return HV_BAD_ARGUMENT;
    switch (reg) {
    case HV_REG_PC:
        *value = uc_get(v->uc, UC_ARM64_REG_PC);
        break;
    case HV_REG_FPCR:
        *value = uc_get(v->uc, UC_ARM64_REG_FPCR);
        break;
    case HV_REG_FPSR:
        *value = uc_get(v->uc, UC_ARM64_REG_FPSR);
        break;
    case HV_REG_CPSR:
        *value = uc_get(v->uc, UC_ARM64_REG_PSTATE);
        break;
    default:
        *value = uc_get(v->uc, hvfsim__xreg(reg));
        break;
    }
    return HV_SUCCESS;
}

/*
 * PSTATE: QEMU keeps the stack pointer in use in SP and banks the other one only when the exception
 * level changes through its own exception paths, so a write that changes the selected stack pointer
 * banks it here, as the hardware's banked registers would.
 */
static void write_cpsr(struct sim_vcpu *v, uint64_t ps)
{
    uint64_t old = uc_get(v->uc, UC_ARM64_REG_PSTATE);
    unsigned from = sp_sel(old), to = sp_sel(ps);
    if (from != to) {
        uint64_t sp = uc_get(v->uc, UC_ARM64_REG_SP);
        uc_set(v->uc, from ? UC_ARM64_REG_SP_EL1 : UC_ARM64_REG_SP_EL0, sp);
        uc_set(v->uc, UC_ARM64_REG_SP, uc_get(v->uc, to ? UC_ARM64_REG_SP_EL1 : UC_ARM64_REG_SP_EL0));
    }
    uc_set(v->uc, UC_ARM64_REG_PSTATE, ps);
    /* a CP-register write makes QEMU rebuild its cached EL and MMU state */
    hvfsim__cp_write(v->uc, HV_SYS_REG_CONTEXTIDR_EL1, hvfsim__cp_read(v->uc, HV_SYS_REG_CONTEXTIDR_EL1));
}

hv_return_t hv_vcpu_set_reg(hv_vcpu_t id, hv_reg_t reg, uint64_t value)
{
    struct sim_vcpu *v = owned(id);
    if (!v || reg > HV_REG_CPSR)
        return HV_BAD_ARGUMENT;
    switch (reg) {
    case HV_REG_PC:
        uc_set(v->uc, UC_ARM64_REG_PC, value);
        break;
    case HV_REG_FPCR:
        uc_set(v->uc, UC_ARM64_REG_FPCR, value);
        break;
    case HV_REG_FPSR:
        uc_set(v->uc, UC_ARM64_REG_FPSR, value);
        break;
    case HV_REG_CPSR:
        write_cpsr(v, value);
        break;
    default:
        uc_set(v->uc, hvfsim__xreg(reg), value);
        break;
    }
    return HV_SUCCESS;
}

hv_return_t hv_vcpu_get_simd_fp_reg(hv_vcpu_t id, hv_simd_fp_reg_t reg, hv_simd_fp_uchar16_t *value)
{
    struct sim_vcpu *v = owned(id);
    if (!v || !value || (unsigned)reg > 31)
        return HV_BAD_ARGUMENT;
    uint8_t q[16];
    uc_reg_read(v->uc, UC_ARM64_REG_Q0 + (int)reg, q);
    memcpy(value, q, 16);
    return HV_SUCCESS;
}

hv_return_t hv_vcpu_set_simd_fp_reg(hv_vcpu_t id, hv_simd_fp_reg_t reg, hv_simd_fp_uchar16_t value)
{
    struct sim_vcpu *v = owned(id);
    if (!v || (unsigned)reg > 31)
        return HV_BAD_ARGUMENT;
    uint8_t q[16];
    memcpy(q, &value, 16);
    uc_reg_write(v->uc, UC_ARM64_REG_Q0 + (int)reg, q);
    return HV_SUCCESS;
}

hv_return_t hv_vcpu_get_sys_reg(hv_vcpu_t id, hv_sys_reg_t reg, uint64_t *value)
{
    struct sim_vcpu *v = owned(id);
    uint64_t ps;

    if (!v || !value)
        return HV_BAD_ARGUMENT;
    switch (reg) {
    case HV_SYS_REG_SP_EL0:
    case HV_SYS_REG_SP_EL1:
        ps = uc_get(v->uc, UC_ARM64_REG_PSTATE);
        *value = sp_sel(ps) == (reg == HV_SYS_REG_SP_EL1)
                     ? uc_get(v->uc, UC_ARM64_REG_SP)
                     : uc_get(v->uc, reg == HV_SYS_REG_SP_EL1 ? UC_ARM64_REG_SP_EL1 : UC_ARM64_REG_SP_EL0);
        return HV_SUCCESS;
    case HV_SYS_REG_CNTV_CTL_EL0:
        *value = v->vt_ctl | ((v->vt_ctl & 1) && hvfsim__vcount(v) >= v->vt_cval ? 4 : 0);
        return HV_SUCCESS;
    case HV_SYS_REG_CNTV_CVAL_EL0:
        *value = v->vt_cval;
        return HV_SUCCESS;
    case HV_SYS_REG_ID_AA64PFR0_EL1:
        *value = v->pfr0;
        return HV_SUCCESS;
    case HV_SYS_REG_MPIDR_EL1:
        *value = hvfsim__cp_read(v->uc, SIM_SYSREG(3, 4, 0, 0, 5)); /* VMPIDR_EL2: what EL1 reads */
        return HV_SUCCESS;
    default:
        *value = hvfsim__cp_read(v->uc, reg);
        return HV_SUCCESS;
    }
}

hv_return_t hv_vcpu_set_sys_reg(hv_vcpu_t id, hv_sys_reg_t reg, uint64_t value)
{
    struct sim_vcpu *v = owned(id);
    uint64_t ps;

    if (!v)
        return HV_BAD_ARGUMENT;
    switch (reg) {
    case HV_SYS_REG_SP_EL0:
    case HV_SYS_REG_SP_EL1:
        ps = uc_get(v->uc, UC_ARM64_REG_PSTATE);
        uc_set(v->uc,
               sp_sel(ps) == (reg == HV_SYS_REG_SP_EL1) ? UC_ARM64_REG_SP
               : reg == HV_SYS_REG_SP_EL1               ? UC_ARM64_REG_SP_EL1
                                                        : UC_ARM64_REG_SP_EL0,
               value);
        return HV_SUCCESS;
    case HV_SYS_REG_CNTV_CTL_EL0:
        v->vt_ctl = value & 3;
        return HV_SUCCESS;
    case HV_SYS_REG_CNTV_CVAL_EL0:
        v->vt_cval = value;
        return HV_SUCCESS;
    case HV_SYS_REG_ID_AA64PFR0_EL1:
        v->pfr0 = value;
        return HV_SUCCESS;
    case HV_SYS_REG_MPIDR_EL1:
        hvfsim__cp_write(v->uc, SIM_SYSREG(3, 4, 0, 0, 5), value);
        return HV_SUCCESS;
    case HV_SYS_REG_MIDR_EL1:
        return HV_UNSUPPORTED; /* the simulator's CPU model is fixed */
    default:
        hvfsim__cp_write(v->uc, reg, value);
        return HV_SUCCESS;
    }
}

hv_return_t hv_vcpu_get_pending_interrupt(hv_vcpu_t id, hv_interrupt_type_t type, bool *pending)
{
    struct sim_vcpu *v = owned(id);
    if (!v || !pending || (type != HV_INTERRUPT_TYPE_IRQ && type != HV_INTERRUPT_TYPE_FIQ))
        return HV_BAD_ARGUMENT;
    *pending = type == HV_INTERRUPT_TYPE_IRQ ? v->irq : v->fiq;
    return HV_SUCCESS;
}

hv_return_t hv_vcpu_set_pending_interrupt(hv_vcpu_t id, hv_interrupt_type_t type, bool pending)
{
    struct sim_vcpu *v = owned(id);
    if (!v || (type != HV_INTERRUPT_TYPE_IRQ && type != HV_INTERRUPT_TYPE_FIQ))
        return HV_BAD_ARGUMENT;
    if (type == HV_INTERRUPT_TYPE_IRQ)
        v->irq = pending;
    else
        v->fiq = pending;
    return HV_SUCCESS;
}

hv_return_t hv_vcpu_get_vtimer_mask(hv_vcpu_t id, bool *masked)
{
    struct sim_vcpu *v = owned(id);
    if (!v || !masked)
        return HV_BAD_ARGUMENT;
    *masked = v->vt_masked;
    return HV_SUCCESS;
}

hv_return_t hv_vcpu_set_vtimer_mask(hv_vcpu_t id, bool masked)
{
    struct sim_vcpu *v = owned(id);
    if (!v)
        return HV_BAD_ARGUMENT;
    v->vt_masked = masked;
    return HV_SUCCESS;
}

hv_return_t hv_vcpu_get_vtimer_offset(hv_vcpu_t id, uint64_t *offset)
{
    struct sim_vcpu *v = owned(id);
    if (!v || !offset)
        return HV_BAD_ARGUMENT;
    *offset = v->vt_offset;
    return HV_SUCCESS;
}

hv_return_t hv_vcpu_set_vtimer_offset(hv_vcpu_t id, uint64_t offset)
{
    struct sim_vcpu *v = owned(id);
    if (!v)
        return HV_BAD_ARGUMENT;
    v->vt_offset = offset;
    return HV_SUCCESS;
}
