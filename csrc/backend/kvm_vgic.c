/*
 * kvm_vgic.c - KVM's in-kernel vGICv3 behind the irqchip interface.
 *
 * The host kernel emulates the distributor and redistributors (at our
 * layout's addresses, so the device tree node is the one fdt.c writes for our
 * model) and the CPU interface, and delivers interrupts itself. We only drive
 * device lines: KVM_IRQ_LINE for SPIs and PPIs. The IRQ line and the ICC_*
 * registers cannot be seen from user space. When the host kernel has it, an
 * in-kernel ITS (KVM_DEV_TYPE_ARM_VGIC_ITS) sits at LAYOUT_GITS_BASE: the guest
 * programs it through its MMIO frames (in the kernel), our devices' MSIs reach
 * it through KVM_SIGNAL_MSI with their DeviceID.
 */
#include "../core/vm.h"

#if VMM_HAVE_KVM

#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../arm/arm.h"
#include "../core/irqchip.h"
#include "../core/layout.h"
#include "../core/snapshot.h"
#include "kvm_vgic.h"

#define NR_IRQS 128 /* 32 private + the 96 SPIs of our layout (a multiple of 32) */

struct kvm_vgic {
    struct vmm_irqchip chip; /* first */
    int vm_fd;               /* the VM's, not ours */
    int gic_fd;
    int its_fd;           /* -1: no ITS */
    pthread_mutex_t lock; /* guards the levels and ready */
    bool ready;
    uint8_t ppi_level[VMM_MAX_CPUS][32]; /* PPIs by vCPU, before the vGIC is ready */
    uint8_t spi_level[NR_IRQS];
};

static int xioctl(int fd, unsigned long req, void *arg)
{
    int r;
    do
        r = ioctl(fd, req, arg);
    while (r < 0 && errno == EINTR);
    return r;
}

int vmm__kvm_vgic_probe(int sys_fd, char *why, size_t len)
{
    struct kvm_create_device cd = { .type = KVM_DEV_TYPE_ARM_VGIC_V3, .flags = KVM_CREATE_DEVICE_TEST };
    int vm_fd;

    do
        vm_fd = ioctl(sys_fd, KVM_CREATE_VM, 0UL);
    while (vm_fd < 0 && errno == EINTR);
    if (vm_fd < 0) {
        snprintf(why, len, "KVM_CREATE_VM: %s", strerror(errno));
        return VMM_ENOBACKEND;
    }
    int r = xioctl(vm_fd, KVM_CREATE_DEVICE, &cd);
    int e = errno;
    close(vm_fd);
    if (r < 0) {
        snprintf(why, len, "KVM cannot give guests a GICv3 (%s): the host's interrupt controller is not a GICv3",
                 strerror(e));
        return VMM_ENOBACKEND;
    }
    return 0;
}

static int set_attr(struct kvm_vgic *g, uint32_t group, uint64_t attr, void *val)
{
    struct kvm_device_attr a = { .group = group, .attr = attr, .addr = (uint64_t)(uintptr_t)val };
    return xioctl(g->gic_fd, KVM_SET_DEVICE_ATTR, &a);
}

static void line_ioctl(struct kvm_vgic *g, unsigned cpu, unsigned intid, bool level)
{
    struct kvm_irq_level l = { .level = level };
    if (intid >= 32)
        l.irq = (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | intid;
    else
        l.irq = (KVM_ARM_IRQ_TYPE_PPI << KVM_ARM_IRQ_TYPE_SHIFT) | (cpu << KVM_ARM_IRQ_VCPU_SHIFT) | intid;
    if (xioctl(g->vm_fd, KVM_IRQ_LINE, &l) < 0)
        vmm__log(g->chip.vm, VMM_LOG_WARN, "kvm", "KVM_IRQ_LINE(%u, cpu %u, %d): %s", intid, cpu, level,
                 strerror(errno));
}

static int vgic_set_level(struct vmm_irqchip *chip, unsigned cpu, unsigned intid, bool level)
{
    struct kvm_vgic *g = (struct kvm_vgic *)chip;

    if (intid < 16 || intid >= NR_IRQS || cpu >= chip->vm->ncpus)
        return VMM_ENOTSUP; /* SGIs are the guest's own; nothing beyond our 96 SPIs */
    pthread_mutex_lock(&g->lock);
    if (intid >= 32)
        g->spi_level[intid] = level;
    else
        g->ppi_level[cpu][intid] = level;
    if (g->ready)
        line_ioctl(g, cpu, intid, level);
    pthread_mutex_unlock(&g->lock);
    return 0;
}

static int vgic_irq_line(struct vmm_irqchip *chip, unsigned cpu)
{
    (void)chip;
    (void)cpu;
    return VMM_ENOTSUP; /* the kernel's: not visible from user space */
}

/* A device's MSI: KVM_SIGNAL_MSI with the DeviceID (the in-kernel ITS translates it; > 0: delivered, 0: dropped). */
static int vgic_send_msi(struct vmm_irqchip *chip, uint64_t doorbell, uint32_t data, uint32_t devid)
{
    struct kvm_vgic *g = (struct kvm_vgic *)chip;
    struct kvm_msi msi = { .address_lo = (uint32_t)doorbell,
                           .address_hi = (uint32_t)(doorbell >> 32),
                           .data = data,
                           .flags = KVM_MSI_VALID_DEVID,
                           .devid = devid };
    bool ready;

    pthread_mutex_lock(&g->lock);
    ready = g->ready;
    pthread_mutex_unlock(&g->lock);
    if (g->its_fd < 0)
        return VMM_ENOTSUP;
    if (!ready || xioctl(g->vm_fd, KVM_SIGNAL_MSI, &msi) < 0)
        vmm__guest_error(chip->vm, "kvm", "MSI from DeviceID %u, EventID %u not delivered: %s", devid, data,
                         ready ? strerror(errno) : "the vGIC is not initialised yet"); /* guest-driven: rate-limited */
    return 0;
}

static void vgic_destroy(struct vmm_irqchip *chip)
{
    struct kvm_vgic *g = (struct kvm_vgic *)chip;

    if (g->its_fd >= 0)
        close(g->its_fd);
    if (g->gic_fd >= 0)
        close(g->gic_fd);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

/*
 * Snapshots: the vGIC's state through its device attributes, in the order QEMU restores it
 * (hw/intc/arm_gicv3_kvm.c): distributor, redistributors, line levels, then each CPU interface with
 * ICC_CTLR_EL1 first. Each item is saved with a flag saying whether the kernel answered, and loaded
 * only where it did; only ICC_AP0R1-3/AP1R1-3 may be missing (they exist with 6 or 7 priority bits):
 * any other attribute KVM does not read fails the save with one line naming it. Tested nested
 * (tests/test_kvm_nested.py: guest timer's ticks after a restore need the CPU interface's registers).
 */
#define DIST 1
#define REDIST 2
#define CPUREG 3
#define LEVELS 4

static void fd_item(int fd, struct vmm_snap *s, uint32_t group, uint64_t attr, bool wide, bool optional)
{
    uint64_t v64 = 0;
    uint32_t v32 = 0;
    bool ok = false;
    void *val = wide ? (void *)&v64 : (void *)&v32;
    struct kvm_device_attr a = { .group = group, .attr = attr, .addr = (uint64_t)(uintptr_t)val };

    if (!vmm__snap_loading(s) && !vmm__snap_error(s)) {
        ok = xioctl(fd, KVM_GET_DEVICE_ATTR, &a) == 0;
        if (!ok && !optional) {
            vmm__snap_fail_code(s, VMM_EBACKEND, "KVM does not read vGIC attribute group %u 0x%llx: %s", group,
                                (unsigned long long)attr, strerror(errno));
            return;
        }
    }
    vmm__snap_bool(s, &ok);
    if (wide)
        vmm__snap_u64(s, &v64);
    else
        vmm__snap_u32(s, &v32);
    if (vmm__snap_loading(s) && ok && !vmm__snap_error(s) && xioctl(fd, KVM_SET_DEVICE_ATTR, &a) < 0)
        vmm__snap_fail(s, "KVM refuses vGIC attribute group %u 0x%llx: %s", group, (unsigned long long)attr,
                       strerror(errno));
}

static void item_opt(struct kvm_vgic *g, struct vmm_snap *s, uint32_t group, uint64_t attr, bool wide, bool optional)
{
    fd_item(g->gic_fd, s, group, attr, wide, optional);
}

static void item(struct kvm_vgic *g, struct vmm_snap *s, uint32_t group, uint64_t attr, bool wide)
{
    item_opt(g, s, group, attr, wide, false);
}

static void dist_items(struct kvm_vgic *g, struct vmm_snap *s)
{
    item(g, s, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 0x0000, false); /* GICD_CTLR */
    for (unsigned n = 1; n < NR_IRQS / 32; n++) {
        static const uint32_t bank[] = { 0x080, 0x100, 0x200, 0x300 }; /* IGROUPR ISENABLER ISPENDR ISACTIVER */
        for (unsigned b = 0; b < 4; b++)
            item(g, s, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, bank[b] + 4 * n, false);
        item(g, s, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 0xc00 + 8 * n, false); /* ICFGR */
        item(g, s, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 0xc04 + 8 * n, false);
    }
    for (unsigned i = 32; i < NR_IRQS; i += 4)
        item(g, s, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 0x400 + i, false); /* IPRIORITYR */
    for (unsigned i = 32; i < NR_IRQS; i++) {                         /* IROUTER, two halves */
        item(g, s, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 0x6000 + 8 * i, false);
        item(g, s, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 0x6004 + 8 * i, false);
    }
}

static void cpu_items(struct kvm_vgic *g, struct vmm_snap *s, uint64_t mpidr)
{
    static const uint32_t sgi_frame[] = { 0x10080, 0x10100, 0x10200, 0x10300, 0x10c00, 0x10c04 };
    /* ICC_CTLR first (it carries the priority and ID bits the others are checked against) */
    static const uint32_t icc[] = { SYSREG(3, 0, 12, 12, 4), SYSREG(3, 0, 12, 12, 5), SYSREG(3, 0, 4, 6, 0),
                                    SYSREG(3, 0, 12, 8, 3),  SYSREG(3, 0, 12, 12, 3), SYSREG(3, 0, 12, 12, 6),
                                    SYSREG(3, 0, 12, 12, 7), SYSREG(3, 0, 12, 8, 4),  SYSREG(3, 0, 12, 8, 5),
                                    SYSREG(3, 0, 12, 8, 6),  SYSREG(3, 0, 12, 8, 7),  SYSREG(3, 0, 12, 9, 0),
                                    SYSREG(3, 0, 12, 9, 1),  SYSREG(3, 0, 12, 9, 2),  SYSREG(3, 0, 12, 9, 3) };
    uint64_t cpu = mpidr << 32;

    for (unsigned i = 0; i < sizeof sgi_frame / sizeof sgi_frame[0]; i++)
        item(g, s, KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, cpu | sgi_frame[i], false);
    for (unsigned i = 0; i < 32; i += 4)
        item(g, s, KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, cpu | (0x10400 + i), false); /* IPRIORITYR0-7 */
    /* ICC_AP0R1-3 and ICC_AP1R1-3 exist only with 6 or 7 priority bits: the only ones KVM may not answer */
    for (unsigned i = 0; i < sizeof icc / sizeof icc[0]; i++) {
        bool ap_high = (SYSREG_CRM(icc[i]) == 8 && SYSREG_OP2(icc[i]) >= 5) ||
                       (SYSREG_CRM(icc[i]) == 9 && SYSREG_OP2(icc[i]) >= 1);
        item_opt(g, s, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, cpu | icc[i], true, ap_high);
    }
}

static void ctrl(int fd, struct vmm_snap *s, uint64_t attr, const char *what)
{
    struct kvm_device_attr a = { .group = KVM_DEV_ARM_VGIC_GRP_CTRL, .attr = attr };

    if (!vmm__snap_error(s) && xioctl(fd, KVM_SET_DEVICE_ATTR, &a) < 0)
        vmm__snap_fail_code(s, VMM_EBACKEND, "KVM cannot %s: %s", what, strerror(errno));
}

/*
 * The LPI side and the ITS, in the order Documentation/virt/kvm/devices/arm-vgic-its.rst gives:
 * saving flushes the LPI pending state and the ITS's tables into guest RAM (which the snapshot saves
 * after this section); loading sets each redistributor's GICR_PROPBASER, GICR_PENDBASER and
 * GICR_CTLR (as 32-bit halves, as QEMU does), then GITS_IIDR, GITS_BASER<n>, CBASER, CREADR, CWRITER,
 * restores the tables from RAM, and sets GITS_CTLR last.
 */
static void its_items(struct kvm_vgic *g, struct vmm_snap *s)
{
    struct vmm_vm *vm = g->chip.vm;
    bool has = g->its_fd >= 0, loading = vmm__snap_loading(s);
    static const uint32_t gicr[] = { 0x70, 0x74, 0x78, 0x7c, 0x00 }; /* PROPBASER, PENDBASER, CTLR */
    static const uint32_t gits[] = { 0x04, 0x100, 0x108, 0x110, 0x118, 0x120, 0x128, 0x130, 0x138, 0x80, 0x90, 0x88 };

    vmm__snap_bool(s, &has);
    if (vmm__snap_error(s) || !has)
        return;
    if (loading && g->its_fd < 0) {
        vmm__snap_fail(s, "the snapshot has an ITS; this host's KVM gave the VM none");
        return;
    }
    if (!loading) {
        ctrl(g->gic_fd, s, KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES, "save the LPI pending tables");
        ctrl(g->its_fd, s, KVM_DEV_ARM_ITS_SAVE_TABLES, "save the ITS tables");
    }
    for (unsigned c = 0; c < vm->ncpus; c++)
        for (unsigned i = 0; i < sizeof gicr / sizeof gicr[0]; i++)
            item(g, s, KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, vm->vcpus[c].mpidr << 32 | gicr[i], false);
    for (unsigned i = 0; i < sizeof gits / sizeof gits[0]; i++)
        fd_item(g->its_fd, s, KVM_DEV_ARM_VGIC_GRP_ITS_REGS, gits[i], true, false);
    if (loading)
        ctrl(g->its_fd, s, KVM_DEV_ARM_ITS_RESTORE_TABLES, "restore the ITS tables");
    fd_item(g->its_fd, s, KVM_DEV_ARM_VGIC_GRP_ITS_REGS, 0x00, true, false); /* GITS_CTLR */
}

static int vgic_snap(struct vmm_irqchip *chip, struct vmm_snap *s)
{
    struct kvm_vgic *g = (struct kvm_vgic *)chip;
    struct vmm_vm *vm = chip->vm;
    uint32_t ncpus = vm->ncpus;

    vmm__snap_u32(s, &ncpus);
    if (vmm__snap_loading(s) && ncpus != vm->ncpus)
        return vmm__snap_fail(s, "%u CPU interfaces for %u vCPUs", ncpus, vm->ncpus);
    dist_items(g, s);
    for (unsigned c = 0; c < vm->ncpus; c++) {
        uint64_t mpidr = vm->vcpus[c].mpidr;
        /* the SGIs' and PPIs' levels (the kernel's timers drive the PPIs) */
        item(g, s, KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
             mpidr << 32 | (uint64_t)VGIC_LEVEL_INFO_LINE_LEVEL << KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT, false);
        cpu_items(g, s, mpidr);
    }
    its_items(g, s);
    for (unsigned i = 32; i < NR_IRQS; i += 32) /* SPI line levels: our devices drive them */
        item(g, s, KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
             (uint64_t)VGIC_LEVEL_INFO_LINE_LEVEL << KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT | i, false);
    pthread_mutex_lock(&g->lock); /* the levels we replay must be the loaded ones: our devices' (saved with them) */
    for (unsigned i = 0; i < NR_IRQS; i++) {
        vmm__snap_u8(s, &g->spi_level[i]);
        if (g->spi_level[i] > 1)
            vmm__snap_fail(s, "line %u has level %u", i, g->spi_level[i]);
    }
    pthread_mutex_unlock(&g->lock);
    return vmm__snap_error(s);
}

static const struct vmm_irqchip_ops vgic_ops = {
    .name = "kvm-vgic-v3",
    .set_level = vgic_set_level,
    .irq_line = vgic_irq_line,
    .sysreg = NULL, /* the CPU interface is the kernel's */
    .send_msi = vgic_send_msi,
    .save = vgic_snap,
    .load = vgic_snap,
    .destroy = vgic_destroy,
};

/*
 * The in-kernel ITS at LAYOUT_GITS_BASE (vmm_config.its), if this kernel has one (it also makes the
 * vGIC advertise LPIs). Without it the VM has no ITS: no DTB node, send_msi answers VMM_ENOTSUP.
 */
static void create_its(struct kvm_vgic *g)
{
    struct kvm_create_device cd = { .type = KVM_DEV_TYPE_ARM_VGIC_ITS };
    uint64_t base = LAYOUT_GITS_BASE;
    struct kvm_device_attr a = { .group = KVM_DEV_ARM_VGIC_GRP_ADDR,
                                 .attr = KVM_VGIC_ITS_ADDR_TYPE,
                                 .addr = (uint64_t)(uintptr_t)&base };

    if (xioctl(g->vm_fd, KVM_CREATE_DEVICE, &cd) < 0) {
        vmm__log(g->chip.vm, VMM_LOG_INFO, "kvm", "no in-kernel ITS (%s): the VM has no MSIs", strerror(errno));
        return;
    }
    g->its_fd = (int)cd.fd;
    if (xioctl(g->its_fd, KVM_SET_DEVICE_ATTR, &a) < 0) {
        vmm__log(g->chip.vm, VMM_LOG_WARN, "kvm", "cannot place the ITS: %s; the VM has no MSIs", strerror(errno));
        close(g->its_fd);
        g->its_fd = -1;
        return;
    }
    g->chip.its = true;
}

int vmm__kvm_vgic_create(struct vmm_vm *vm, int vm_fd, struct vmm_irqchip **out)
{
    struct kvm_create_device cd = { .type = KVM_DEV_TYPE_ARM_VGIC_V3 };
    uint64_t dist = LAYOUT_GICD_BASE, redist = LAYOUT_GICR_BASE;
    struct kvm_vgic *g = calloc(1, sizeof *g);

    if (!g)
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory");
    g->chip = (struct vmm_irqchip){ .ops = &vgic_ops, .vm = vm };
    g->vm_fd = vm_fd;
    g->gic_fd = -1;
    g->its_fd = -1;
    pthread_mutex_init(&g->lock, NULL);
    if (xioctl(vm_fd, KVM_CREATE_DEVICE, &cd) < 0) {
        int rc = vmm__set_error(vm, VMM_ENOBACKEND, "KVM cannot create a GICv3 (%s): the host needs a GICv3",
                                strerror(errno));
        vgic_destroy(&g->chip);
        return rc;
    }
    g->gic_fd = (int)cd.fd;
    if (set_attr(g, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST, &dist) < 0 ||
        set_attr(g, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST, &redist) < 0) {
        int rc = vmm__set_error(vm, VMM_EIO, "KVM: cannot place the GICv3: %s", strerror(errno));
        vgic_destroy(&g->chip);
        return rc;
    }
    if (vm->its)
        create_its(g);
    *out = &g->chip;
    return 0;
}

int vmm__kvm_vgic_ready(struct vmm_irqchip *chip)
{
    struct kvm_vgic *g = (struct kvm_vgic *)chip;
    struct vmm_vm *vm = chip->vm;
    uint32_t nr = NR_IRQS;

    if (set_attr(g, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &nr) < 0 ||
        set_attr(g, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, NULL) < 0)
        return vmm__set_error(vm, VMM_EIO, "KVM: cannot initialise the GICv3: %s", strerror(errno));
    if (g->its_fd >= 0) {
        struct kvm_device_attr a = { .group = KVM_DEV_ARM_VGIC_GRP_CTRL, .attr = KVM_DEV_ARM_VGIC_CTRL_INIT };
        if (xioctl(g->its_fd, KVM_SET_DEVICE_ATTR, &a) < 0)
            return vmm__set_error(vm, VMM_EIO, "KVM: cannot initialise the ITS: %s", strerror(errno));
    }
    pthread_mutex_lock(&g->lock);
    g->ready = true;
    for (unsigned i = 32; i < NR_IRQS; i++)
        if (g->spi_level[i])
            line_ioctl(g, 0, i, true);
    for (unsigned c = 0; c < vm->ncpus; c++)
        for (unsigned i = 16; i < 32; i++)
            if (g->ppi_level[c][i])
                line_ioctl(g, c, i, true);
    pthread_mutex_unlock(&g->lock);
    return 0;
}

#endif /* VMM_HAVE_KVM */
