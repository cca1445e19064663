/*
 * kvm_vgic.c - KVM's in-kernel vGICv3 behind the irqchip interface.
 *
 * The host kernel emulates the distributor and redistributors (at our
 * layout's addresses, so the device tree node is the one fdt.c writes for our
 * model) and the CPU interface, and delivers interrupts itself. We only drive
 * device lines: KVM_IRQ_LINE for SPIs and PPIs. The IRQ line and the ICC_*
 * registers cannot be seen from user space.
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

#include "../core/irqchip.h"
#include "../core/layout.h"
#include "kvm_vgic.h"

#define NR_IRQS 128 /* 32 private + the 96 SPIs of our layout (a multiple of 32) */

struct kvm_vgic {
    struct vmm_irqchip chip; /* first */
    int vm_fd;               /* the VM's, not ours */
    int gic_fd;
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

static void vgic_destroy(struct vmm_irqchip *chip)
{
    struct kvm_vgic *g = (struct kvm_vgic *)chip;

    if (g->gic_fd >= 0)
        close(g->gic_fd);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static const struct vmm_irqchip_ops vgic_ops = {
    .name = "kvm-vgic-v3",
    .set_level = vgic_set_level,
    .irq_line = vgic_irq_line,
    .sysreg = NULL, /* the CPU interface is the kernel's */
    .destroy = vgic_destroy,
};

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
