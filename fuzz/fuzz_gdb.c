/*
 * fuzz_gdb.c - libFuzzer target: the GDB remote protocol as a hostile debugger connection speaks it.
 *
 * An input whose first byte is odd is a byte stream: every byte goes through the framing (vmm__gdb_rx_byte:
 * checksums, escapes, ^C, oversized packets) and every packet it yields through the command interpreter
 * (vmm__gdb_proto_handle). Otherwise the rest is packet payloads split at '\n', handed to the interpreter
 * directly (no checksum to guess). The interpreter answers against a small in-memory
 * target: 2 vCPUs, registers, 64 KiB of memory at 0x1000. The replies are framed as the stub would send
 * them. Nothing may read or write outside its buffers, loop, or crash: ASan and UBSan watch.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../csrc/core/gdb_packet.h"

#define MEM_BASE 0x1000u
#define MEM_LEN 0x10000u

static uint8_t mem[MEM_LEN];
static uint8_t regs[2][GDB_REG_SYS0 + 32][16];

static unsigned ncpus(void *t)
{
    (void)t;
    return 2;
}

static bool cpu_on(void *t, unsigned cpu)
{
    (void)t;
    return cpu == 0;
}

static int read_reg(void *t, unsigned cpu, unsigned regno, uint8_t *buf)
{
    (void)t;
    if (cpu >= 2 || !vmm__gdb_reg_size(regno))
        __builtin_trap(); /* the interpreter must only ask for registers that exist */
    memcpy(buf, regs[cpu][regno], vmm__gdb_reg_size(regno));
    return 0;
}

static int write_reg(void *t, unsigned cpu, unsigned regno, const uint8_t *buf)
{
    (void)t;
    if (cpu >= 2 || !vmm__gdb_reg_size(regno))
        __builtin_trap();
    memcpy(regs[cpu][regno], buf, vmm__gdb_reg_size(regno));
    return 0;
}

static long mem_range(uint64_t addr, size_t len)
{
    if (addr < MEM_BASE || addr - MEM_BASE >= MEM_LEN)
        return -1;
    uint64_t room = MEM_LEN - (addr - MEM_BASE);
    return (long)(len < room ? len : room);
}

static long read_mem(void *t, unsigned cpu, bool phys, uint64_t addr, uint8_t *buf, size_t len)
{
    (void)t;
    (void)phys;
    long n = cpu < 2 ? mem_range(addr, len) : -1;
    if (n > 0)
        memcpy(buf, mem + (addr - MEM_BASE), (size_t)n);
    return n;
}

static long write_mem(void *t, unsigned cpu, bool phys, uint64_t addr, const uint8_t *buf, size_t len)
{
    (void)t;
    (void)phys;
    long n = cpu < 2 ? mem_range(addr, len) : -1;
    if (n > 0)
        memcpy(mem + (addr - MEM_BASE), buf, (size_t)n);
    return n;
}

static int point(void *t, bool insert, enum gdb_point type, uint64_t addr, uint64_t len)
{
    (void)t;
    (void)insert;
    (void)addr;
    (void)len;
    return type <= GDB_WP_ACCESS ? 0 : -1;
}

static int resume(void *t, const enum gdb_action *act, unsigned n)
{
    (void)t;
    for (unsigned i = 0; i < n; i++)
        if (act[i] > GDB_ACT_STEP)
            __builtin_trap();
    return 0;
}

static bool stop_state(void *t, struct gdb_stop *st)
{
    (void)t;
    *st = (struct gdb_stop){ .kind = GDB_STOP_SIGNAL, .value = 5, .cpu = 1, .point = GDB_WP_WRITE, .data_addr = 8 };
    return true;
}

static void nothing(void *t)
{
    (void)t;
}

static int monitor(void *t, const char *cmd, char *out, size_t cap)
{
    (void)t;
    if (strcmp(cmd, "info"))
        return -1;
    snprintf(out, cap, "fuzz target\n");
    return 0;
}

static bool can_reverse(void *t)
{
    (void)t;
    return true;
}

/* bs / bc: the cpu is the Hc selection (checked) or GDB_CPU_STOPPED; refuse every other one with a reason */
static int reverse(void *t, bool step, unsigned cpu, char *why, size_t cap)
{
    (void)t;
    if (cpu != GDB_CPU_STOPPED && cpu >= 4)
        __builtin_trap();
    if (step && cpu == 1)
        return 0;
    snprintf(why, cap, "refused by the fuzz target");
    return -1;
}

static const struct gdb_target_ops ops = {
    .ncpus = ncpus,
    .cpu_on = cpu_on,
    .read_reg = read_reg,
    .write_reg = write_reg,
    .read_mem = read_mem,
    .write_mem = write_mem,
    .point = point,
    .resume = resume,
    .stop_state = stop_state,
    .kill = nothing,
    .detach = nothing,
    .monitor = monitor,
    .can_reverse = can_reverse,
    .reverse = reverse,
};

static struct gdb_rx rx;
static char out[GDB_PKT_MAX + 1];
static char frame[2 * GDB_PKT_MAX + 8];

static void handle(struct gdb_session *s, const char *pkt, size_t len)
{
    s->running = false;
    long n = vmm__gdb_proto_handle(s, pkt, len, out, sizeof out);
    if (n > (long)GDB_PKT_MAX)
        __builtin_trap();
    if (n >= 0 && !vmm__gdb_frame(frame, sizeof frame, out, (size_t)n))
        __builtin_trap(); /* every reply fits a frame */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gdb_session s;

    if (!size)
        return 0;
    vmm__gdb_session_init(&s, &ops, NULL);
    vmm__gdb_rx_init(&rx);
    if (data[0] & 1) {
        for (size_t i = 1; i < size; i++) {
            if (vmm__gdb_rx_byte(&rx, data[i]) != GDB_RX_PACKET)
                continue;
            if (rx.len > GDB_PKT_MAX || rx.buf[rx.len])
                __builtin_trap();
            handle(&s, rx.buf, rx.len);
        }
        return 0;
    }
    for (size_t i = 1; i < size;) {
        size_t j = i;
        while (j < size && data[j] != '\n')
            j++;
        if (j - i <= GDB_PKT_MAX) {
            memcpy(rx.buf, data + i, j - i);
            rx.buf[j - i] = 0;
            handle(&s, rx.buf, j - i);
        }
        i = j + 1;
    }
    return 0;
}
