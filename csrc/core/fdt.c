/* fdt.c - the guest's device tree, written with libfdt's sequential-write API. */
#include <libfdt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../arm/arm.h"
#include "board.h"
#include "fdt.h"
#include "irqchip.h"
#include "layout.h"
#include "vm.h"

#define FDT_MAX_SIZE (64u << 10)

#define PH_GIC FDT_PH_GIC
#define PH_CLK FDT_PH_CLK
#define GIC_PPI FDT_GIC_PPI
#define IRQ_TYPE_LEVEL_HIGH FDT_IRQ_TYPE_LEVEL_HIGH

int vmm__fdt_prop_u64_pair(void *fdt, const char *name, uint64_t a, uint64_t b)
{
    fdt64_t v[2] = { cpu_to_fdt64(a), cpu_to_fdt64(b) };
    return fdt_property(fdt, name, v, sizeof v);
}

int vmm__fdt_prop_cells(void *fdt, const char *name, const uint32_t *cells, int n)
{
    fdt32_t v[16];
    if (n < 0 || n > 16)
        return -FDT_ERR_BADVALUE;
    for (int i = 0; i < n; i++)
        v[i] = cpu_to_fdt32(cells[i]);
    return fdt_property(fdt, name, v, (int)(n * sizeof(fdt32_t)));
}

/* compatible lists are NUL-separated strings */
int vmm__fdt_prop_strings(void *fdt, const char *name, const char *const *s, int n)
{
    char buf[256];
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(s[i]) + 1;
        if (len + l > sizeof buf)
            return -FDT_ERR_NOSPACE;
        memcpy(buf + len, s[i], l);
        len += l;
    }
    return fdt_property(fdt, name, buf, (int)len);
}

int vmm__fdt_prop_spi(void *fdt, unsigned intid)
{
    const uint32_t irq[] = { FDT_GIC_SPI, intid - 32, FDT_IRQ_TYPE_LEVEL_HIGH };
    return vmm__fdt_prop_cells(fdt, "interrupts", irq, 3);
}

#define TRY(x)               \
    do {                     \
        if ((err = (x)) < 0) \
            goto fail;       \
    } while (0)

static const char *cpu_compatible(const struct vmm_vm *vm)
{
    if (vmm__has_cap(vm->ops, VMM_CAP_HOST_CPU)) /* hardware vCPUs are the host's CPU model, not cpu_model */
        return "arm,armv8";
    int i = vmm__cpu_model_find(vm->cpu_model);
    return i < 0 ? "arm,armv8" : vmm__cpu_models[i].dt_compatible;
}

/*
 * The ITS, a child of the GIC node as on QEMU's virt (Linux looks for "arm,gic-v3-its" below it):
 * an MSI controller whose one specifier cell is the DeviceID (a host bridge's msi-map names FDT_PH_ITS).
 */
static int its_node(void *fdt)
{
    char name[64];
    int err;

    snprintf(name, sizeof name, "its@%llx", LAYOUT_GITS_BASE);
    if ((err = fdt_begin_node(fdt, name)) < 0 || (err = fdt_property_string(fdt, "compatible", "arm,gic-v3-its")) < 0 ||
        (err = fdt_property(fdt, "msi-controller", NULL, 0)) < 0 ||
        (err = fdt_property_u32(fdt, "#msi-cells", 1)) < 0 ||
        (err = vmm__fdt_prop_u64_pair(fdt, "reg", LAYOUT_GITS_BASE, LAYOUT_GITS_SIZE)) < 0 ||
        (err = fdt_property_u32(fdt, "phandle", FDT_PH_ITS)) < 0)
        return err;
    return fdt_end_node(fdt);
}

int vmm__fdt_build(struct vmm_vm *vm, void **out, size_t *len)
{
    void *fdt = calloc(1, FDT_MAX_SIZE);
    char name[64];
    int err;

    if (!fdt)
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for the device tree");
    TRY(fdt_create(fdt, FDT_MAX_SIZE));
    TRY(fdt_finish_reservemap(fdt));

    TRY(fdt_begin_node(fdt, ""));
    TRY(fdt_property_string(fdt, "compatible", "linux,dummy-virt"));
    TRY(fdt_property_string(fdt, "model", "vmmpy aarch64 virt"));
    TRY(fdt_property_u32(fdt, "#address-cells", 2));
    TRY(fdt_property_u32(fdt, "#size-cells", 2));
    TRY(fdt_property_u32(fdt, "interrupt-parent", PH_GIC));

    TRY(fdt_begin_node(fdt, "chosen"));
    if (vm->board.stdout_path[0])
        TRY(fdt_property_string(fdt, "stdout-path", vm->board.stdout_path));
    TRY(fdt_property_string(fdt, "bootargs", vm->cmdline ? vm->cmdline : ""));
    if (vm->boot.initrd_end) {
        TRY(fdt_property_u64(fdt, "linux,initrd-start", vm->boot.initrd_start));
        TRY(fdt_property_u64(fdt, "linux,initrd-end", vm->boot.initrd_end));
    }
    TRY(fdt_end_node(fdt));

    snprintf(name, sizeof name, "memory@%llx", LAYOUT_RAM_BASE);
    TRY(fdt_begin_node(fdt, name));
    TRY(fdt_property_string(fdt, "device_type", "memory"));
    TRY(vmm__fdt_prop_u64_pair(fdt, "reg", LAYOUT_RAM_BASE, vm->ram_size));
    TRY(fdt_end_node(fdt));

    TRY(fdt_begin_node(fdt, "cpus"));
    TRY(fdt_property_u32(fdt, "#address-cells", 1));
    TRY(fdt_property_u32(fdt, "#size-cells", 0));
    for (unsigned i = 0; i < vm->ncpus; i++) {
        snprintf(name, sizeof name, "cpu@%u", i);
        TRY(fdt_begin_node(fdt, name));
        TRY(fdt_property_string(fdt, "device_type", "cpu"));
        TRY(fdt_property_string(fdt, "compatible", cpu_compatible(vm)));
        TRY(fdt_property_u32(fdt, "reg", i)); /* MPIDR Aff0 */
        TRY(fdt_property_string(fdt, "enable-method", "psci"));
        TRY(fdt_end_node(fdt));
    }
    TRY(fdt_end_node(fdt));

    TRY(fdt_begin_node(fdt, "psci"));
    {
        static const char *const compat[] = { "arm,psci-1.0", "arm,psci-0.2" };
        TRY(vmm__fdt_prop_strings(fdt, "compatible", compat, 2));
    }
    TRY(fdt_property_string(fdt, "method", "hvc"));
    TRY(fdt_end_node(fdt));

    snprintf(name, sizeof name, "intc@%llx", LAYOUT_GICD_BASE);
    TRY(fdt_begin_node(fdt, name));
    TRY(fdt_property_string(fdt, "compatible", "arm,gic-v3"));
    TRY(fdt_property_u32(fdt, "#interrupt-cells", 3));
    TRY(fdt_property(fdt, "interrupt-controller", NULL, 0));
    TRY(fdt_property_u32(fdt, "#redistributor-regions", 1));
    /* as QEMU's virt: a PCI interrupt-map's parent unit address is 2 cells (and room for an ITS child) */
    TRY(fdt_property_u32(fdt, "#address-cells", 2));
    TRY(fdt_property_u32(fdt, "#size-cells", 2));
    TRY(fdt_property(fdt, "ranges", NULL, 0));
    {
        fdt64_t reg[4] = { cpu_to_fdt64(LAYOUT_GICD_BASE), cpu_to_fdt64(LAYOUT_GICD_SIZE),
                           cpu_to_fdt64(LAYOUT_GICR_BASE), cpu_to_fdt64(LAYOUT_GICR_STRIDE * vm->ncpus) };
        TRY(fdt_property(fdt, "reg", reg, sizeof reg));
    }
    {
        static const uint32_t maint[] = { GIC_PPI, 9, IRQ_TYPE_LEVEL_HIGH };
        TRY(vmm__fdt_prop_cells(fdt, "interrupts", maint, 3));
    }
    TRY(fdt_property_u32(fdt, "phandle", PH_GIC));
    if (vmm__irqchip_has_its(vm->irqchip)) {
        TRY(fdt_property_u32(fdt, "#address-cells", 2));
        TRY(fdt_property_u32(fdt, "#size-cells", 2));
        TRY(fdt_property(fdt, "ranges", NULL, 0));
        TRY(its_node(fdt));
    }
    TRY(fdt_end_node(fdt));

    TRY(fdt_begin_node(fdt, "timer"));
    TRY(fdt_property_string(fdt, "compatible", "arm,armv8-timer"));
    {
        /* secure, non-secure physical, virtual, hypervisor: PPI numbers = INTID - 16 */
        const uint32_t irqs[] = {
            GIC_PPI, LAYOUT_PPI_SEC_TIMER - 16,  IRQ_TYPE_LEVEL_HIGH,
            GIC_PPI, LAYOUT_PPI_PHYS_TIMER - 16, IRQ_TYPE_LEVEL_HIGH,
            GIC_PPI, LAYOUT_PPI_VIRT_TIMER - 16, IRQ_TYPE_LEVEL_HIGH,
            GIC_PPI, LAYOUT_PPI_HYP_TIMER - 16,  IRQ_TYPE_LEVEL_HIGH,
        };
        TRY(vmm__fdt_prop_cells(fdt, "interrupts", irqs, 12));
    }
    TRY(fdt_property(fdt, "always-on", NULL, 0));
    TRY(fdt_end_node(fdt));

    /* our PMU (arm/pmu.c: soft, and hvf on the VM's clock), or KVM's when the host kernel offers one */
    if (!vmm__has_cap(vm->ops, VMM_CAP_HOST_CPU) || vm->vcpus[0].pmu.host_clock || vm->vcpus[0].pmu.in_kernel) {
        static const uint32_t pmu_irq[] = { GIC_PPI, PMU_INTID - 16, IRQ_TYPE_LEVEL_HIGH };
        TRY(fdt_begin_node(fdt, "pmu"));
        TRY(fdt_property_string(fdt, "compatible", "arm,armv8-pmuv3"));
        TRY(vmm__fdt_prop_cells(fdt, "interrupts", pmu_irq, 3));
        TRY(fdt_end_node(fdt));
    }

    TRY(fdt_begin_node(fdt, "apb-pclk"));
    TRY(fdt_property_string(fdt, "compatible", "fixed-clock"));
    TRY(fdt_property_u32(fdt, "#clock-cells", 0));
    TRY(fdt_property_u32(fdt, "clock-frequency", 24000000));
    TRY(fdt_property_string(fdt, "clock-output-names", "clk24mhz"));
    TRY(fdt_property_u32(fdt, "phandle", PH_CLK));
    TRY(fdt_end_node(fdt));

    TRY(vmm__board_fdt(vm, fdt)); /* every device's nodes, in the order they joined the board */

    TRY(fdt_end_node(fdt)); /* root */
    TRY(fdt_finish(fdt));
    *out = fdt;
    *len = fdt_totalsize(fdt);
    return 0;
fail:
    free(fdt);
    return vmm__set_error(vm, VMM_ENOMEM, "building the device tree: %s", fdt_strerror(err));
}
