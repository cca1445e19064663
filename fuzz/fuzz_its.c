/*
 * fuzz_its.c - libFuzzer target: the GICv3 ITS command queue and translation as a hostile guest drives them.
 *
 * One 2-vCPU VM lives for the whole process. Each input picks the table setup (device table flat or
 * two-level, its page size and size, the collection table, where the queue is, PROPBASER.IDbits, which
 * CPUs enable LPIs), fills the command queue with up to 127 raw 32-byte commands, then sends MSIs
 * (DeviceID, EventID) through vmm_irq_msi and drains both CPU interfaces (ICC_IAR1/EOIR1). Commands
 * and table entries point anywhere (inside RAM, across its end, below it); the ITS must only touch RAM,
 * never loop, keep GITS_CREADR inside the queue and stop at CWRITER unless stalled. ASan and UBSan watch.
 *
 * Input: flags, device table Size, PROPBASER.IDbits, MSI count, then commands, then 8-byte MSIs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"

#define RAM 0x40000000ull
#define RAM_SIZE (64ull << 20)
#define PROP (RAM + 0x100000)
#define PEND(c) (RAM + 0x110000 + (c)*0x10000)
#define CMDQ (RAM + 0x130000)
#define COLLT (RAM + 0x140000)
#define DEVT (RAM + 0x200000) /* up to 16 pages of 64 KiB */
#define ZERO_FROM PROP
#define ZERO_LEN 0x200000ull
#define QUEUE_BYTES 4096

#define GICD 0x08000000ull
#define GITS 0x08080000ull
#define GICR(c) (0x080A0000ull + (c)*0x20000)
#define TRANSLATER (GITS + 0x10040)
#define VALID (1ull << 63)

#define SYSREG(op0, op1, crn, crm, op2) ((op0) << 14 | (op1) << 11 | (crn) << 7 | (crm) << 3 | (op2))
#define ICC_PMR SYSREG(3, 0, 4, 6, 0)
#define ICC_IAR1 SYSREG(3, 0, 12, 12, 0)
#define ICC_EOIR1 SYSREG(3, 0, 12, 12, 1)
#define ICC_IGRPEN1 SYSREG(3, 0, 12, 12, 7)

static vmm_vm *vm;
static uint8_t zero[ZERO_LEN];

static void w64(uint64_t gpa, uint64_t v)
{
    vmm_mmio_write(vm, gpa, 8, v);
}

static uint64_t r64(uint64_t gpa)
{
    uint64_t v = 0;
    vmm_mmio_read(vm, gpa, 8, &v);
    return v;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct vmm_config c = { .size = sizeof c, .ncpus = 2, .ram_size = RAM_SIZE, .log_level = VMM_LOG_ERROR, .its = 1 };
    (void)argc;
    (void)argv;
    if (vmm_create(&c, &vm, NULL, 0))
        return 1;
    vmm_mmio_write(vm, GICD, 4, 2); /* EnableGrp1 */
    for (unsigned cpu = 0; cpu < 2; cpu++) {
        vmm_sysreg_write(vm, cpu, ICC_PMR, 0xff);
        vmm_sysreg_write(vm, cpu, ICC_IGRPEN1, 1);
    }
    return 0;
}

static void setup(uint8_t flags, uint8_t dev_size, uint8_t idbits)
{
    uint64_t devt = flags & 0x40 ? RAM + RAM_SIZE - 0x1000 : DEVT; /* 0x40: the table runs past RAM's end */
    uint64_t cmdq = flags & 0x80 ? RAM - 0x1000 : CMDQ;            /* 0x80: the queue is below RAM */

    vmm_mmio_write(vm, GITS, 4, 0);
    for (unsigned cpu = 0; cpu < 2; cpu++)
        vmm_mmio_write(vm, GICR(cpu), 4, 0); /* EnableLPIs off: pending bits go back to the tables */
    vmm_mem_write(vm, ZERO_FROM, zero, sizeof zero);
    /* device table: Indirect (0x01), Page_Size (0x06), Size [3:0] of byte 1 */
    w64(GITS + 0x100,
        VALID | (uint64_t)(flags & 1) << 62 | devt | (uint64_t)((flags >> 1) & 3) << 8 | (dev_size & 0xf));
    w64(GITS + 0x108, VALID | (uint64_t)(flags & 0x08) << 59 | COLLT); /* 0x08: two-level collection table */
    w64(GITS + 0x80, VALID | cmdq);
    w64(GITS + 0x88, 0);
    for (unsigned cpu = 0; cpu < 2; cpu++) {
        if (cpu == 1 && !(flags & 0x10)) /* 0x10: CPU 1 enables LPIs too */
            break;
        w64(GICR(cpu) + 0x70, PROP | (idbits & 0x1f));
        w64(GICR(cpu) + 0x78, PEND(cpu) | (uint64_t)(flags & 0x20) << 57); /* 0x20: PTZ */
        vmm_mmio_write(vm, GICR(cpu), 4, 1);
    }
    vmm_mmio_write(vm, GITS, 4, 1);
}

static void check_queue(uint64_t cwriter)
{
    uint64_t creadr = r64(GITS + 0x90);

    if ((creadr & ~1ull) >= QUEUE_BYTES || (!(creadr & 1) && (creadr & ~1ull) != cwriter)) {
        fprintf(stderr, "GITS_CREADR 0x%llx with CWRITER 0x%llx\n", (unsigned long long)creadr,
                (unsigned long long)cwriter);
        abort();
    }
}

/* Take every pending LPI; each acknowledge clears one, so this ends. */
static void drain(void)
{
    for (unsigned cpu = 0; cpu < 2; cpu++)
        for (unsigned i = 0; i < 1000; i++) {
            uint64_t intid = 1023;
            vmm_sysreg_read(vm, cpu, ICC_IAR1, &intid);
            if (intid == 1023)
                break;
            vmm_sysreg_write(vm, cpu, ICC_EOIR1, intid);
            if (i == 999)
                abort(); /* more than every event the input could have raised */
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t nmsi, ncmd;
    uint64_t cwriter;

    if (size < 4)
        return 0;
    setup(data[0], data[1], data[2]);
    nmsi = data[3] & 15;
    data += 4;
    size -= 4;
    nmsi = nmsi * 8 <= size ? nmsi : size / 8;
    ncmd = (size - nmsi * 8) / 32;
    if (ncmd > QUEUE_BYTES / 32 - 1)
        ncmd = QUEUE_BYTES / 32 - 1;
    if (!(data[-4] & 0x80))
        vmm_mem_write(vm, CMDQ, data, ncmd * 32);
    cwriter = ncmd * 32;
    w64(GITS + 0x88, cwriter); /* the commands run now */
    if (!(data[-4] & 0x80))
        check_queue(cwriter);
    w64(GITS + 0x88, cwriter | 1); /* Retry a stalled one */
    data += ncmd * 32;
    for (size_t i = 0; i < nmsi; i++) {
        uint32_t devid, event;
        memcpy(&devid, data + 8 * i, 4);
        memcpy(&event, data + 8 * i + 4, 4);
        vmm_irq_msi(vm, TRANSLATER, event, devid & 0xffff);
    }
    drain();
    return 0;
}
