/*
 * fuzz_virtq.c - libFuzzer target: virtqueue descriptor walking as a hostile guest drives it.
 *
 * One VM with the dummy virtio device (echo queue 0, 16 entries) lives for the whole process. Each
 * input is laid out in guest RAM as the queue's descriptor table, avail ring and indirect tables;
 * the harness resets the device, sets the queue up at fixed addresses through the real virtio-mmio
 * registers, publishes an avail index taken from the input and notifies. Descriptors point anywhere
 * (into the fuzzed region, elsewhere in RAM, outside it); the device must never read or write
 * outside guest RAM, loop, or crash — ASan and UBSan watch.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "virtio_mmio_regs.h"
#include "vmm.h"

#define RAM 0x40000000ull
#define SLOT 0x0a000000ull
#define QSIZE 16
#define DESC (RAM + 0x100000)  /* 16 x 16 bytes */
#define AVAIL (RAM + 0x101000) /* flags, idx, ring[16], used_event */
#define USED (RAM + 0x102000)
#define AREA (RAM + 0x103000) /* indirect tables and buffers the input may point at */
#define AREA_LEN 0x4000


static vmm_vm *vm;

static void w32(uint64_t off, uint32_t v)
{
    vmm_mmio_write(vm, SLOT + off, 4, v);
}

static void w64(uint64_t off, uint64_t v)
{
    w32(off, (uint32_t)v);
    w32(off + 4, (uint32_t)(v >> 32));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct vmm_config c = { .size = sizeof c, .ram_size = 64ull << 20, .log_level = VMM_LOG_ERROR };
    (void)argc;
    (void)argv;
    return vmm_create(&c, &vm, NULL, 0) || vmm_add_test_device(vm) ? 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t zero[0x3000];
    uint64_t features;
    uint16_t idx;

    if (size < 4)
        return 0;
    /* first 2 bytes: the avail index to publish; byte 2: driver feature bits 28/29 (indirect, event idx) */
    idx = (uint16_t)(data[0] | data[1] << 8);
    features = (1ull << 32) | ((uint64_t)(data[2] & 3) << 28);
    data += 4;
    size -= 4;

    w32(STATUS, 0); /* reset: recovers from NEEDS_RESET too */
    vmm_mem_write(vm, DESC, zero, sizeof zero);
    /* descriptors, then the avail ring, then the free area, each from the input in turn */
    size_t n = size < QSIZE * 16 ? size : QSIZE * 16;
    vmm_mem_write(vm, DESC, data, n);
    data += n;
    size -= n;
    n = size < 4 + 2 * QSIZE + 2 ? size : 4 + 2 * QSIZE + 2;
    vmm_mem_write(vm, AVAIL, data, n);
    data += n;
    size -= n;
    vmm_mem_write(vm, AREA, data, size < AREA_LEN ? size : AREA_LEN);
    vmm_mem_write(vm, AVAIL + 2, &idx, 2);

    w32(STATUS, 1 | 2); /* ACKNOWLEDGE | DRIVER */
    w32(DRV_FEAT_SEL, 0);
    w32(DRV_FEAT, (uint32_t)features);
    w32(DRV_FEAT_SEL, 1);
    w32(DRV_FEAT, (uint32_t)(features >> 32));
    w32(STATUS, 1 | 2 | 8);
    w32(QSEL, 0);
    w32(QNUM, QSIZE);
    w64(QDESC, DESC);
    w64(QDRIVER, AVAIL);
    w64(QDEVICE, USED);
    w32(QREADY, 1);
    w32(STATUS, 1 | 2 | 8 | 4); /* DRIVER_OK */
    w32(QNOTIFY, 0);
    return 0;
}
