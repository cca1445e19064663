/*
 * fuzz_pci.c - libFuzzer target: the PCI host bridge and virtio-pci as a hostile guest drives them.
 *
 * One VM with transport PCI and three devices (virtio-gpu, -rng, -console: 00:01.0-00:03.0) lives
 * for the whole process. Each input first puts every function in a known state through the real
 * config space (BAR 0 placed, memory decoding on, MSI-X off, device reset), then is read as a list
 * of accesses, 12 bytes each:
 *   byte 0: bits 0-1 where (0: ECAM, 1: a function's BAR 0, 2: the MSI-X table/PBA area of BAR 0,
 *           3: the PCI MMIO window anywhere), bit 2 write, bits 3-4 size (1, 2, 4, 8)
 *   byte 1: the function (slot 0-3, more bits reach absent slots and buses in ECAM)
 *   bytes 2-3: offset (le16; ECAM offsets also take byte 1's high bits as bus / function)
 *   bytes 4-11: the value written
 * Config writes move BARs, turn decoding and MSI-X on and off, and program the
 * VIRTIO_PCI_CAP_PCI_CFG window; BAR writes drive the common config, notify, ISR, device config and
 * MSI-X. Nothing may read or write outside guest RAM or crash: ASan and UBSan watch.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vmm.h"

#define ECAM 0x3f000000ull
#define WINDOW 0x10000000ull
#define WINDOW_SIZE 0x2eff0000ull
#define BAR_BASE(slot) (WINDOW + 0x100000ull * (slot))
#define NSLOTS 4

static vmm_vm *vm;

static void cfg_w(unsigned slot, unsigned off, unsigned size, uint64_t v)
{
    vmm_mmio_write(vm, ECAM + ((uint64_t)slot << 15) + off, size, v);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct vmm_config c = {
        .size = sizeof c, .ram_size = 64ull << 20, .log_level = VMM_LOG_ERROR, .transport = VMM_TRANSPORT_PCI
    };
    struct vmm_gpu_config g = { .size = sizeof g, .width = 64, .height = 64, .max_mem = 1u << 20 };
    (void)argc;
    (void)argv;
    return vmm_create(&c, &vm, NULL, 0) || vmm_add_gpu(vm, &g) || vmm_add_rng(vm) || vmm_add_virtio_console(vm) ? 1 : 0;
}

/* A known state: BARs at fixed places, decoding and bus mastering on, MSI-X off, every device reset. */
static void known_state(void)
{
    for (unsigned slot = 1; slot < NSLOTS; slot++) {
        cfg_w(slot, 0x04, 2, 0);
        cfg_w(slot, 0x10, 4, BAR_BASE(slot));
        cfg_w(slot, 0x04, 2, 0x6);
        vmm_mmio_write(vm, BAR_BASE(slot) + 0x14, 1, 0);   /* device_status = 0: reset */
        for (unsigned cap = 0x40; cap < 0x100; cap += 4) { /* MSI-X off wherever its capability is */
            uint64_t id = 0;
            vmm_mmio_read(vm, ECAM + ((uint64_t)slot << 15) + cap, 1, &id);
            if (id == 0x11)
                cfg_w(slot, cap + 2, 2, 0);
        }
    }
}

static uint64_t target(uint8_t where, uint8_t fn, uint16_t off, unsigned size)
{
    unsigned slot = fn % NSLOTS;

    switch (where) {
    case 0: /* any bus, device, function, register: the host decodes it */
        return ECAM + ((uint64_t)fn << 12 | (off & 0xfff)) + ((uint64_t)(off >> 12) << 20);
    case 1:
        return BAR_BASE(slot) + (off & 0x7fff);
    case 2:
        return BAR_BASE(slot) + 0x4000 + (off & 0x1fff);
    default:
        return WINDOW + ((uint64_t)off << 8 | fn) % (WINDOW_SIZE - size);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    known_state();
    for (; size >= 12; data += 12, size -= 12) {
        uint8_t op = data[0];
        unsigned sz = 1u << ((op >> 3) & 3);
        uint16_t off = (uint16_t)(data[2] | data[3] << 8);
        uint64_t val, gpa = target(op & 3, data[1], off, sz);
        memcpy(&val, data + 4, 8);
        gpa &= ~(uint64_t)(sz - 1); /* vmm_mmio_* take aligned accesses (the backends' decoders do too) */
        if (op & 4)
            vmm_mmio_write(vm, gpa, sz, val);
        else
            vmm_mmio_read(vm, gpa, sz, &val);
    }
    return 0;
}
