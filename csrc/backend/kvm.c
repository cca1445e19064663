/*
 * kvm.c - the KVM backend for arm64 Linux hosts.
 *
 * The host kernel runs the vCPUs (one thread each, started by the core's
 * run loop), their generic timers, PSCI and an in-kernel vGICv3 at our
 * layout's addresses (kvm_vgic.c, the VM's irqchip). What reaches user space
 * is MMIO to our devices (KVM_EXIT_MMIO) and system events (power-off,
 * reset). A stop or timeout kicks a vCPU with run->immediate_exit plus a
 * signal that interrupts KVM_RUN.
 */
#include "../core/vm.h"

#if VMM_HAVE_KVM

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../core/irqchip.h"
#include "../core/layout.h"
#include "../core/snapshot.h"
#include "kvm.h"
#include "kvm_vgic.h"

#define KVM_PATH "/dev/kvm"
#define EXIT_TAG 0x564d4d5059455854ULL /* "VMMPYEXT" in x5: x4 holds the guest's exit status */

/* ---- helpers ---- */

static int kick_signal(void)
{
    return SIGRTMIN + 4; /* real-time: never merged with, or mistaken for, a signal the application uses */
}

static void kick_handler(int sig)
{
    (void)sig; /* only there so that the signal interrupts KVM_RUN with EINTR */
}

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;
static int kick_ok;

static void install_kick_handler(void)
{
    struct sigaction sa, old;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = kick_handler; /* no SA_RESTART: KVM_RUN must return */
    sigemptyset(&sa.sa_mask);
    if (sigaction(kick_signal(), NULL, &old) == 0 && old.sa_handler != SIG_DFL && old.sa_handler != kick_handler)
        kick_ok = -EEXIST;
    else
        kick_ok = sigaction(kick_signal(), &sa, NULL) ? -errno : 0;
}

static int xioctl(int fd, unsigned long req, void *arg)
{
    int r;
    do
        r = ioctl(fd, req, arg);
    while (r < 0 && errno == EINTR);
    return r;
}

static uint64_t core_reg(size_t off)
{
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (off / sizeof(uint32_t));
}

#define REG_PC core_reg(offsetof(struct kvm_regs, regs.pc))
#define REG_PSTATE core_reg(offsetof(struct kvm_regs, regs.pstate))
#define REG_X(n) core_reg(offsetof(struct kvm_regs, regs.regs[n]))
#define REG_ESR_EL1 ARM64_SYS_REG(3, 0, 5, 2, 0)

static int get_reg(struct kvm_vcpu_state *ks, uint64_t id, uint64_t *val)
{
    struct kvm_one_reg r = { .id = id, .addr = (uint64_t)(uintptr_t)val };
    return xioctl(ks->fd, KVM_GET_ONE_REG, &r);
}

static int set_reg(struct kvm_vcpu_state *ks, uint64_t id, uint64_t val)
{
    struct kvm_one_reg r = { .id = id, .addr = (uint64_t)(uintptr_t)&val };
    return xioctl(ks->fd, KVM_SET_ONE_REG, &r);
}

static int check_caps(int fd, char *why, size_t len)
{
    static const struct {
        int cap;
        const char *name;
    } needed[] = {
        { KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
        { KVM_CAP_ONE_REG, "KVM_CAP_ONE_REG" },
        { KVM_CAP_ARM_PSCI_0_2, "KVM_CAP_ARM_PSCI_0_2" },
        { KVM_CAP_DEVICE_CTRL, "KVM_CAP_DEVICE_CTRL" },
        { KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
        { KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
        { KVM_CAP_ARM_INJECT_EXT_DABT, "KVM_CAP_ARM_INJECT_EXT_DABT" },
    };
    int v = ioctl(fd, KVM_GET_API_VERSION, 0);

    if (v != KVM_API_VERSION) {
        snprintf(why, len, "%s speaks KVM API version %d, not %d", KVM_PATH, v, KVM_API_VERSION);
        return VMM_ENOBACKEND;
    }
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        if (ioctl(fd, KVM_CHECK_EXTENSION, needed[i].cap) <= 0) {
            snprintf(why, len, "this host's KVM lacks %s", needed[i].name);
            return VMM_ENOBACKEND;
        }
    }
    return 0;
}

static int open_kvm(char *why, size_t len)
{
    int fd = open(KVM_PATH, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(why, len, "cannot open %s: %s%s", KVM_PATH, strerror(e),
                 e == ENOENT   ? " (no KVM on this host: is it a VM without nested virtualization?)"
                 : e == EACCES ? " (add yourself to the 'kvm' group)"
                               : "");
        return -1;
    }
    return fd;
}

/* ---- ops ---- */

static int kvm_probe(char *why, size_t len)
{
    int fd = open_kvm(why, len);
    if (fd < 0)
        return VMM_ENOBACKEND;
    int rc = check_caps(fd, why, len);
    if (!rc)
        rc = vmm__kvm_vgic_probe(fd, why, len);
    close(fd);
    return rc;
}

static void kvm_vm_fini(struct vmm_vm *vm)
{
    struct kvm_vm_state *k = vm->bstate;
    if (!k)
        return;
    vmm__irqchip_destroy(vm->irqchip); /* ours: before the VM it lives on */
    vm->irqchip = NULL;
    if (k->vm_fd >= 0)
        close(k->vm_fd);
    if (k->sys_fd >= 0)
        close(k->sys_fd);
    free(k->dbg);
    free(k);
    vm->bstate = NULL;
}

static int kvm_vm_init(struct vmm_vm *vm)
{
    struct kvm_vm_state *k = calloc(1, sizeof *k);
    char why[256];
    int rc;

    if (!k)
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory");
    k->sys_fd = k->vm_fd = -1;
    vm->bstate = k;
    if ((k->sys_fd = open_kvm(why, sizeof why)) < 0) {
        rc = vmm__set_error(vm, VMM_ENOBACKEND, "%s", why);
        goto fail;
    }
    if ((rc = check_caps(k->sys_fd, why, sizeof why))) {
        vmm__set_error(vm, rc, "%s", why);
        goto fail;
    }
    pthread_once(&kick_once, install_kick_handler);
    struct sigaction cur;
    if (!kick_ok && (sigaction(kick_signal(), NULL, &cur) || cur.sa_handler != kick_handler))
        kick_ok = -EEXIST; /* the application took it over since */
    if (kick_ok) {
        rc = vmm__set_error(vm, VMM_ENOBACKEND, "cannot use SIGRTMIN+4 to stop vCPUs: %s",
                            kick_ok == -EEXIST ? "the application handles that signal itself" : strerror(-kick_ok));
        goto fail;
    }

    /*
     * The IPA space must reach the end of RAM. Type 0 means 40 bits, which
     * hosts with a smaller limit refuse. Ask for 40 bits, more if RAM needs
     * it, less if the host has less: accesses inside the space but outside
     * RAM exit to us and get our external abort; beyond it KVM answers itself.
     */
    uint64_t top = LAYOUT_RAM_BASE + vm->ram_size - 1;
    unsigned bits = 64 - (unsigned)__builtin_clzll(top);
    int max_ipa = ioctl(k->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_ARM_VM_IPA_SIZE);
    unsigned long type = 0;
    if (max_ipa > 0) {
        if ((int)bits > max_ipa) {
            rc = vmm__set_error(vm, VMM_ERANGE, "%llu MiB of RAM needs %u-bit guest addresses; this host's KVM has %d",
                                (unsigned long long)(vm->ram_size >> 20), bits, max_ipa);
            goto fail;
        }
        unsigned want = bits > 40 ? bits : 40;
        type = KVM_VM_TYPE_ARM_IPA_SIZE(want < (unsigned)max_ipa ? want : (unsigned)max_ipa);
    } else if (bits > 40) {
        rc = vmm__set_error(vm, VMM_ERANGE, "%llu MiB of RAM needs %u-bit guest addresses; this host's KVM has 40",
                            (unsigned long long)(vm->ram_size >> 20), bits);
        goto fail;
    }
    do
        k->vm_fd = ioctl(k->sys_fd, KVM_CREATE_VM, type);
    while (k->vm_fd < 0 && errno == EINTR);
    if (k->vm_fd < 0) {
        rc = vmm__set_error(vm, VMM_ENOBACKEND, "KVM_CREATE_VM: %s", strerror(errno));
        goto fail;
    }
    int sz = ioctl(k->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz < (int)sizeof(struct kvm_run)) {
        rc = vmm__set_error(vm, VMM_EIO, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
        goto fail;
    }
    k->run_size = (size_t)sz;

    struct kvm_userspace_memory_region mr = {
        .slot = 0,
        .guest_phys_addr = LAYOUT_RAM_BASE,
        .memory_size = vm->ram_size,
        .userspace_addr = (uint64_t)(uintptr_t)vm->ram,
    };
    if (xioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &mr) < 0) {
        rc = vmm__set_error(vm, VMM_ENOMEM, "KVM: cannot map %llu MiB of guest RAM: %s",
                            (unsigned long long)(vm->ram_size >> 20), strerror(errno));
        goto fail;
    }
    if ((rc = vmm__kvm_vgic_create(vm, k->vm_fd, &vm->irqchip)))
        goto fail;
    return 0;
fail:
    kvm_vm_fini(vm);
    return rc;
}

static void kvm_vcpu_fini(struct vmm_vcpu *vcpu)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    struct kvm_vm_state *k = vcpu->vm->bstate;
    if (!ks)
        return;
    if (ks->run)
        munmap(ks->run, k ? k->run_size : sizeof *ks->run);
    if (ks->fd >= 0)
        close(ks->fd);
    pthread_mutex_destroy(&ks->kick_lock);
    free(ks->dbg);
    free(ks);
    vcpu->bstate = NULL;
}

/*
 * Every vCPU exists and the vGIC is initialised: each vCPU's PMU gets its overflow interrupt, PPI 23 as on
 * QEMU's virt board (the DT's arm,armv8-pmuv3 node), then KVM_ARM_VCPU_PMU_V3_INIT (api.rst 4.3 "vcpu
 * attributes": after the in-kernel irqchip is initialised).
 */
static int pmu_init(struct vmm_vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct kvm_vcpu_state *ks = vm->vcpus[i].bstate;
        int irq = PMU_INTID;
        struct kvm_device_attr a = { .group = KVM_ARM_VCPU_PMU_V3_CTRL,
                                     .attr = KVM_ARM_VCPU_PMU_V3_IRQ,
                                     .addr = (uint64_t)(uintptr_t)&irq };
        if (!vm->vcpus[i].pmu.in_kernel)
            continue;
        if (xioctl(ks->fd, KVM_SET_DEVICE_ATTR, &a) < 0)
            return vmm__set_error(vm, VMM_ENOBACKEND, "KVM: cannot give vCPU %u's PMU interrupt %d: %s", i, irq,
                                  strerror(errno));
        a.attr = KVM_ARM_VCPU_PMU_V3_INIT;
        a.addr = 0;
        if (xioctl(ks->fd, KVM_SET_DEVICE_ATTR, &a) < 0)
            return vmm__set_error(vm, VMM_ENOBACKEND, "KVM: cannot initialise vCPU %u's PMU: %s", i, strerror(errno));
    }
    return 0;
}

static int kvm_vcpu_init(struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = vcpu->vm;
    struct kvm_vm_state *k = vm->bstate;
    struct kvm_vcpu_state *ks = calloc(1, sizeof *ks);
    struct kvm_vcpu_init init;
    int rc;

    if (!ks)
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory");
    ks->fd = -1;
    pthread_mutex_init(&ks->kick_lock, NULL);
    vcpu->bstate = ks;
    if ((ks->fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, (unsigned long)vcpu->id)) < 0) {
        rc = vmm__set_error(vm, VMM_ENOBACKEND, "KVM_CREATE_VCPU %u: %s", vcpu->id, strerror(errno));
        goto fail;
    }
    ks->run = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, ks->fd, 0);
    if (ks->run == MAP_FAILED) {
        ks->run = NULL;
        rc = vmm__set_error(vm, VMM_ENOMEM, "cannot map vCPU %u's kvm_run: %s", vcpu->id, strerror(errno));
        goto fail;
    }
    memset(&init, 0, sizeof init);
    if (xioctl(k->vm_fd, KVM_ARM_PREFERRED_TARGET, &init) < 0) {
        rc = vmm__set_error(vm, VMM_ENOBACKEND, "KVM_ARM_PREFERRED_TARGET: %s", strerror(errno));
        goto fail;
    }
    init.features[0] |= 1u << KVM_ARM_VCPU_PSCI_0_2;
    /* a PMU where the host's KVM can give one (KVM_CAP_ARM_PMU_V3: the host has a PMU perf can use) */
    vcpu->pmu.in_kernel = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_ARM_PMU_V3) > 0;
    if (vcpu->pmu.in_kernel)
        init.features[0] |= 1u << KVM_ARM_VCPU_PMU_V3;
    if (vcpu->id)
        init.features[0] |= 1u << KVM_ARM_VCPU_POWER_OFF; /* waits for PSCI CPU_ON */
    if (xioctl(ks->fd, KVM_ARM_VCPU_INIT, &init) < 0) {
        rc = vmm__set_error(vm, VMM_ENOBACKEND, "KVM_ARM_VCPU_INIT %u: %s", vcpu->id, strerror(errno));
        goto fail;
    }
    if (vcpu->id == vm->ncpus - 1 && ((rc = vmm__kvm_vgic_ready(vm->irqchip)) || (rc = pmu_init(vm))))
        goto fail;
    return 0;
fail:
    kvm_vcpu_fini(vcpu);
    return rc;
}

static int kvm_vcpu_reset(struct vmm_vcpu *vcpu, uint64_t entry, uint64_t x0)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    /* EL1h with D, A, I and F masked; the MMU is off after KVM_ARM_VCPU_INIT */
    const uint64_t pstate = 0x3c5;

    if (set_reg(ks, REG_PC, entry) < 0 || set_reg(ks, REG_X(0), x0) < 0 || set_reg(ks, REG_PSTATE, pstate) < 0)
        return vmm__set_error(vcpu->vm, VMM_EIO, "KVM: cannot set vCPU %u's boot registers: %s", vcpu->id,
                              strerror(errno));
    for (unsigned i = 1; i < 4; i++)
        set_reg(ks, REG_X(i), 0);
    return 0;
}

static void set_running(struct kvm_vcpu_state *ks, bool running)
{
    pthread_mutex_lock(&ks->kick_lock);
    ks->running = running;
    if (running)
        ks->thread = pthread_self();
    pthread_mutex_unlock(&ks->kick_lock);
}

static void system_event(struct vmm_vcpu *vcpu, struct vmm_exit *exit)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    uint64_t tag = 0, status = 0;

    switch (ks->run->system_event.type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN:
        /*
         * A guest may pass an exit status in x4, tagged by x5 = "VMMPYEXT"
         * (our runtime's psci_system_off_status(); PSCI ignores both, and KVM
         * has already written PSCI's results to x0..x3). Others exit with 0.
         */
        if (get_reg(ks, REG_X(5), &tag) == 0 && tag == EXIT_TAG)
            get_reg(ks, REG_X(4), &status);
        exit->kind = VMM_EXIT_SHUTDOWN;
        exit->status = (int)(uint32_t)status;
        return;
    case KVM_SYSTEM_EVENT_RESET:
        exit->kind = VMM_EXIT_RESET;
        return;
    case KVM_SYSTEM_EVENT_CRASH:
        vmm__set_error(vcpu->vm, VMM_ESTATE, "vCPU %u: the guest reported a crash (PSCI SYSTEM_EVENT_CRASH)", vcpu->id);
        exit->kind = VMM_EXIT_GUEST_ERROR;
        return;
    default:
        vmm__set_error(vcpu->vm, VMM_ESTATE, "vCPU %u: KVM system event %u, which libvmm does not handle", vcpu->id,
                       ks->run->system_event.type);
        exit->kind = VMM_EXIT_GUEST_ERROR;
        return;
    }
}

/*
 * An access above RAM is a synchronous external abort, as on the soft
 * backend: KVM injects it for the faulting address without completing the
 * access (KVM_CAP_ARM_INJECT_EXT_DABT, Linux 5.5).
 */
static void external_abort(struct vmm_vcpu *vcpu, struct vmm_exit *exit)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    struct kvm_vcpu_events ev;

    vmm__guest_error(vcpu->vm, "kvm", "vCPU %u %s 0x%llx above RAM: external abort", vcpu->id,
                     ks->run->mmio.is_write ? "wrote" : "read", (unsigned long long)ks->run->mmio.phys_addr);
    memset(&ev, 0, sizeof ev);
    ev.exception.ext_dabt_pending = 1;
    if (xioctl(ks->fd, KVM_SET_VCPU_EVENTS, &ev) < 0) {
        vmm__set_error(vcpu->vm, VMM_ESTATE, "vCPU %u accessed 0x%llx above RAM and KVM cannot inject an abort: %s",
                       vcpu->id, (unsigned long long)ks->run->mmio.phys_addr, strerror(errno));
        exit->kind = VMM_EXIT_GUEST_ERROR;
        return;
    }
    /*
     * KVM leaves WnR clear (and, seen nested, ESR's upper half set): give the
     * guest the syndrome the soft backend reports, a 32-bit ESR with WnR for
     * a write. The exception is pending, so ESR_EL1 is what the guest will see.
     */
    uint64_t esr;
    if (get_reg(ks, REG_ESR_EL1, &esr) == 0 && ((esr >> 26) & 0x3e) == 0x24 && (esr & 0x3f) == 0x10) {
        esr &= 0xffffffffu;
        if (ks->run->mmio.is_write)
            esr |= 1u << 6; /* WnR */
        set_reg(ks, REG_ESR_EL1, esr);
    }
    ks->run->exit_reason = KVM_EXIT_UNKNOWN; /* nothing for complete_mmio to answer */
    exit->kind = VMM_EXIT_NONE;
}

static void kvm_vcpu_run(struct vmm_vcpu *vcpu, struct vmm_exit *exit)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    struct vmm_vm *vm = vcpu->vm;
    struct kvm_run *run = ks->run;
    static __thread bool kick_unblocked; /* the run loop's vCPU threads start with every signal blocked */

    if (!kick_unblocked) {
        sigset_t unblock;
        sigemptyset(&unblock);
        sigaddset(&unblock, kick_signal());
        pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
        kick_unblocked = true;
    }
    set_running(ks, true);
    int r = ioctl(ks->fd, KVM_RUN, 0);
    int e = errno;
    set_running(ks, false);
    if (r < 0) {
        if (e == EINTR || e == EAGAIN) {
            /* the kick is served: the run loop looks at why (atomic: a new kick may be storing 1) */
            __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
            exit->kind = VMM_EXIT_NONE;
            return;
        }
        uint64_t pc = 0;
        get_reg(ks, REG_PC, &pc);
        if (e == ENOSYS) {
            vmm__set_error(vm, VMM_ESTATE,
                           "vCPU %u at pc 0x%llx: an MMIO access KVM cannot decode (load/store pair, writeback or "
                           "SIMD register); access device registers with plain LDR/STR",
                           vcpu->id, (unsigned long long)pc);
            exit->kind = VMM_EXIT_GUEST_ERROR;
            return;
        }
        vmm__set_error(vm, VMM_EIO, "KVM_RUN on vCPU %u (pc 0x%llx): %s%s", vcpu->id, (unsigned long long)pc,
                       strerror(e), e == EFAULT ? " (KVM could not map guest RAM: is the host short of memory?)" : "");
        exit->kind = VMM_EXIT_HOST_ERROR;
        return;
    }
    switch (run->exit_reason) {
    case KVM_EXIT_MMIO: {
        unsigned len = run->mmio.len;
        if (!len || len > 8) {
            vmm__set_error(vm, VMM_EIO, "KVM reported an MMIO access of %u bytes", len);
            exit->kind = VMM_EXIT_HOST_ERROR;
            return;
        }
        if (run->mmio.phys_addr >= LAYOUT_RAM_BASE) { /* no memslot there: above RAM, where nothing answers */
            external_abort(vcpu, exit);
            return;
        }
        exit->kind = VMM_EXIT_MMIO; /* counted by the bus */
        exit->mmio.gpa = run->mmio.phys_addr;
        exit->mmio.size = len;
        exit->mmio.is_write = run->mmio.is_write;
        exit->mmio.data = 0;
        if (run->mmio.is_write)
            memcpy(&exit->mmio.data, run->mmio.data, len); /* little-endian host and guest */
        return;
    }
    case KVM_EXIT_SYSTEM_EVENT:
        system_event(vcpu, exit);
        return;
    case KVM_EXIT_DEBUG: /* a debugger's breakpoint, watchpoint or step (kvm_debug.c) */
        vmm__kvm_debug_exit(vcpu, exit);
        return;
    case KVM_EXIT_INTR:
        exit->kind = VMM_EXIT_NONE;
        return;
    case KVM_EXIT_FAIL_ENTRY:
        vmm__set_error(vm, VMM_EIO, "KVM could not enter vCPU %u (hardware reason 0x%llx)", vcpu->id,
                       (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        exit->kind = VMM_EXIT_HOST_ERROR;
        return;
    default:
        vmm__set_error(vm, VMM_EIO, "vCPU %u: unexpected KVM exit %u", vcpu->id, run->exit_reason);
        exit->kind = VMM_EXIT_HOST_ERROR;
        return;
    }
}

static void kvm_complete_mmio(struct vmm_vcpu *vcpu, uint64_t value)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    struct kvm_run *run = ks->run;

    if (run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write && run->mmio.len <= 8)
        memcpy(run->mmio.data, &value, run->mmio.len); /* KVM writes it to the register at the next KVM_RUN */
}

/*
 * The run ended right after an MMIO exit: KVM completes the access (the
 * loaded register, the PC past the instruction) at the next KVM_RUN, so
 * enter once with immediate_exit set, which returns at once after that.
 */
static void kvm_vcpu_leave(struct vmm_vcpu *vcpu)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;

    if (!ks || ks->run->exit_reason != KVM_EXIT_MMIO)
        return;
    __atomic_store_n(&ks->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (ioctl(ks->fd, KVM_RUN, 0) == 0 || errno == EINTR)
        ks->run->exit_reason = KVM_EXIT_INTR; /* nothing pending any more */
    __atomic_store_n(&ks->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
}

static void kvm_kick(struct vmm_vcpu *vcpu)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    if (!ks || !ks->run)
        return;
    /* immediate_exit covers a kick that lands before KVM_RUN; the signal one that lands inside it */
    __atomic_store_n(&ks->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&ks->kick_lock);
    if (ks->running)
        pthread_kill(ks->thread, kick_signal());
    pthread_mutex_unlock(&ks->kick_lock);
}

static uint64_t kvm_get_pc(struct vmm_vcpu *vcpu)
{
    uint64_t pc = 0;
    if (vcpu->bstate)
        get_reg(vcpu->bstate, REG_PC, &pc);
    return pc;
}

static uint64_t kvm_mem_overhead(struct vmm_vcpu *vcpu)
{
    struct kvm_vm_state *k = vcpu->vm->bstate;
    uint64_t n = sizeof(struct kvm_vcpu_state) + (k ? k->run_size : 0);
    if (vcpu->id == 0)
        n += sizeof *k;
    return n;
}

/*
 * Snapshots: every register KVM lists for the vCPU (KVM_GET_REG_LIST: core, FP/SIMD, system registers,
 * the timer's CNT/CTL/CVAL -- setting KVM_REG_ARM_TIMER_CNT sets the virtual counter, so guest time
 * continues -- and the firmware pseudo-registers), its power state (KVM_GET_MP_STATE) and pending
 * exceptions (KVM_GET_VCPU_EVENTS). A load sets only registers this host's KVM lists for the vCPU, of
 * the size the id says; KVM itself refuses values it cannot take (an invariant ID register of another
 * CPU: one line naming the register). Tested nested (tests/test_kvm_nested.py, Linux 6.1's KVM: every
 * listed register set back without a refusal; that kernel does not list the EL1 physical timer).
 */
#define SNAP_MAX_REGS 4096
#define SNAP_MAX_REG_BYTES 256 /* SVE's 2048-bit registers (we do not enable SVE) */

static size_t reg_bytes(uint64_t id)
{
    return (size_t)1 << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT);
}

static struct kvm_reg_list *reg_list(struct kvm_vcpu_state *ks, struct vmm_snap *s)
{
    struct kvm_reg_list probe = { .n = 0 }, *l;

    if (ioctl(ks->fd, KVM_GET_REG_LIST, &probe) == 0 || errno != E2BIG || probe.n > SNAP_MAX_REGS) {
        vmm__snap_fail_code(s, VMM_EBACKEND, "KVM_GET_REG_LIST: %s", strerror(errno));
        return NULL;
    }
    if (!(l = calloc(1, sizeof *l + probe.n * sizeof l->reg[0]))) {
        vmm__snap_fail_code(s, VMM_ENOMEM, "out of memory");
        return NULL;
    }
    l->n = probe.n;
    if (xioctl(ks->fd, KVM_GET_REG_LIST, l) < 0) {
        vmm__snap_fail_code(s, VMM_EBACKEND, "KVM_GET_REG_LIST: %s", strerror(errno));
        free(l);
        return NULL;
    }
    return l;
}

static bool listed(const struct kvm_reg_list *l, uint64_t id)
{
    for (uint64_t i = 0; i < l->n; i++)
        if (l->reg[i] == id)
            return true;
    return false;
}

static void sync_one(struct kvm_vcpu_state *ks, struct vmm_snap *s, const struct kvm_reg_list *l, uint64_t id)
{
    uint8_t val[SNAP_MAX_REG_BYTES] = { 0 };
    struct kvm_one_reg r = { .id = id, .addr = (uint64_t)(uintptr_t)val };
    bool loading = vmm__snap_loading(s);

    vmm__snap_u64(s, &id);
    r.id = id;
    if (vmm__snap_error(s))
        return;
    if (loading && (!listed(l, id) || reg_bytes(id) > sizeof val)) {
        vmm__snap_fail(s, "register 0x%llx is not one of this vCPU's", (unsigned long long)id);
        return;
    }
    if (!loading && xioctl(ks->fd, KVM_GET_ONE_REG, &r) < 0) {
        vmm__snap_fail_code(s, VMM_EBACKEND, "KVM_GET_ONE_REG 0x%llx: %s", (unsigned long long)id, strerror(errno));
        return;
    }
    vmm__snap_bytes(s, val, reg_bytes(id));
    if (loading && !vmm__snap_error(s) && xioctl(ks->fd, KVM_SET_ONE_REG, &r) < 0)
        vmm__snap_fail(s, "KVM refuses register 0x%llx (%s): was the snapshot made on another CPU?",
                       (unsigned long long)id, strerror(errno));
}

static int kvm_vcpu_snap(struct vmm_vcpu *vcpu, struct vmm_snap *s)
{
    struct kvm_vcpu_state *ks = vcpu->bstate;
    struct kvm_reg_list *l = reg_list(ks, s);
    struct kvm_mp_state mp = { 0 };
    struct kvm_vcpu_events ev;
    uint32_t n = 0;

    if (!l)
        return vmm__snap_error(s);
    memset(&ev, 0, sizeof ev);
    if (!vmm__snap_loading(s)) {
        for (uint64_t i = 0; i < l->n; i++)
            n += reg_bytes(l->reg[i]) <= SNAP_MAX_REG_BYTES;
        if (xioctl(ks->fd, KVM_GET_MP_STATE, &mp) < 0 || xioctl(ks->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
            vmm__snap_fail_code(s, VMM_EBACKEND, "vCPU %u: KVM_GET_MP_STATE/VCPU_EVENTS: %s", vcpu->id,
                                strerror(errno));
    }
    vmm__snap_u32(s, &n);
    if (vmm__snap_loading(s) && n > l->n)
        vmm__snap_fail(s, "%u registers, this vCPU has %llu", n, (unsigned long long)l->n);
    for (uint64_t i = 0, done = 0; done < n && !vmm__snap_error(s); i++) {
        if (!vmm__snap_loading(s) && reg_bytes(l->reg[i]) > SNAP_MAX_REG_BYTES)
            continue;
        sync_one(ks, s, l, vmm__snap_loading(s) ? 0 : l->reg[i]);
        done++;
    }
    vmm__snap_u32(s, &mp.mp_state);
    vmm__snap_bytes(s, &ev, sizeof ev);
    if (vmm__snap_loading(s) && !vmm__snap_error(s)) {
        if (mp.mp_state != KVM_MP_STATE_RUNNABLE && mp.mp_state != KVM_MP_STATE_STOPPED)
            vmm__snap_fail(s, "vCPU power state %u", mp.mp_state);
        else if (xioctl(ks->fd, KVM_SET_MP_STATE, &mp) < 0 || xioctl(ks->fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
            vmm__snap_fail(s, "KVM refuses vCPU %u's power or exception state: %s", vcpu->id, strerror(errno));
    }
    free(l);
    return vmm__snap_error(s);
}

const struct vmm_backend_ops vmm__kvm_backend = {
    .name = "kvm",
    /* the host kernel does everything but MMIO and system events (and so WFI) */
    .caps =
        VMM_CAP_VCPU_THREADS | VMM_CAP_KERNEL_IRQCHIP | VMM_CAP_KERNEL_TIMERS | VMM_CAP_KERNEL_PSCI | VMM_CAP_HOST_CPU,
    .probe = kvm_probe,
    .vm_init = kvm_vm_init,
    .vm_fini = kvm_vm_fini,
    .vcpu_init = kvm_vcpu_init,
    .vcpu_fini = kvm_vcpu_fini,
    .vcpu_reset = kvm_vcpu_reset,
    .vcpu_run = kvm_vcpu_run,
    .complete_mmio = kvm_complete_mmio,
    .kick = kvm_kick,
    .vcpu_leave = kvm_vcpu_leave,
    .vcpu_save = kvm_vcpu_snap,
    .vcpu_load = kvm_vcpu_snap,
    .irq_notify = NULL,
    .get_pc = kvm_get_pc,
    .mem_overhead = kvm_mem_overhead,
    .debug = &vmm__kvm_debug_ops,
};

#endif /* VMM_HAVE_KVM */
