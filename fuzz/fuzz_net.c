/*
 * fuzz_net.c - libFuzzer target: virtio-net transmit and receive chains as two hostile guests drive them.
 *
 * Two VMs live for the whole process, each with a virtio-net card on one in-process switch
 * (vmm_net_switch_create: no host networking). Each input resets both cards, negotiates feature
 * bits from its first byte (CSUM, GUEST_CSUM, MRG_RXBUF, EVENT_IDX, INDIRECT for each side), sets up
 * their queues at fixed addresses through the real virtio-mmio registers and then plays a list of
 * operations: VM a transmits a chain (header and frame bytes from the input, split over up to 4
 * readable descriptors, sometimes with a writable one), VM b posts a receive chain of 1-3 writable
 * buffers of sizes from the input, either side notifies, b resets mid-way. Both VMs must only ever
 * touch guest RAM; b's host memory must stay within its bounded receive queue (256 frames).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtio_mmio_regs.h"
#include "vmm.h"

#define RAM 0x40000000ull
#define SLOT 0x0a000000ull /* each VM's one device: slot 0 */
#define QSIZE 16
#define RING(q) (RAM + 0x100000 + (q)*0x4000) /* desc at +0, avail at +0x1000, used at +0x2000 */
#define BUF (RAM + 0x200000)                  /* transmit data and receive buffers */
#define BUF_LEN (2u << 20)
#define FRAME_MAX (65535u + 18u)

static vmm_vm *vm[2];
static uint64_t mem_idle;

struct side {
    vmm_vm *vm;
    uint16_t avail[2]; /* avail index per queue */
    uint16_t next[2];  /* next descriptor per queue */
    uint64_t buf;      /* bump allocator in BUF */
};

static void w32(vmm_vm *v, uint64_t off, uint32_t val)
{
    vmm_mmio_write(v, SLOT + off, 4, val);
}

static void w64(vmm_vm *v, uint64_t off, uint64_t val)
{
    w32(v, off, (uint32_t)val);
    w32(v, off + 4, (uint32_t)(val >> 32));
}

static uint64_t host_mem(vmm_vm *v)
{
    struct vmm_stats st = { .size = sizeof st };
    vmm_get_stats(v, &st);
    return st.host_mem_bytes;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct vmm_config c = { .size = sizeof c, .ram_size = 64ull << 20, .log_level = VMM_LOG_ERROR };
    vmm_net_switch *sw;
    (void)argc;
    (void)argv;
    if (vmm_net_switch_create(&sw, NULL, NULL, 0))
        abort(); /* libFuzzer ignores this function's result: a harness that cannot start must stop */
    for (int i = 0; i < 2; i++) {
        struct vmm_net_config n = { .size = sizeof n, .backend = VMM_NET_SWITCH, .sw = sw };
        if (vmm_create(&c, &vm[i], NULL, 0) || vmm_add_net(vm[i], &n))
            abort();
    }
    vmm_net_switch_release(sw); /* the cards hold it */
    mem_idle = host_mem(vm[1]);
    return 0;
}

static void setup(struct side *s, uint32_t features_lo)
{
    static uint8_t zero[0x3000];

    w32(s->vm, STATUS, 0);
    for (unsigned q = 0; q < 2; q++)
        vmm_mem_write(s->vm, RING(q), zero, sizeof zero);
    w32(s->vm, STATUS, 1 | 2);
    w32(s->vm, DRV_FEAT_SEL, 0);
    w32(s->vm, DRV_FEAT, features_lo);
    w32(s->vm, DRV_FEAT_SEL, 1);
    w32(s->vm, DRV_FEAT, 1); /* VERSION_1 */
    w32(s->vm, STATUS, 1 | 2 | 8);
    for (unsigned q = 0; q < 2; q++) {
        w32(s->vm, QSEL, q);
        w32(s->vm, QNUM, QSIZE);
        w64(s->vm, QDESC, RING(q));
        w64(s->vm, QDRIVER, RING(q) + 0x1000);
        w64(s->vm, QDEVICE, RING(q) + 0x2000);
        w32(s->vm, QREADY, 1);
    }
    w32(s->vm, STATUS, 1 | 2 | 8 | 4);
    memset(s->avail, 0, sizeof s->avail);
    memset(s->next, 0, sizeof s->next);
    s->buf = BUF;
}

static uint64_t alloc(struct side *s, uint32_t len)
{
    if (s->buf + len > BUF + BUF_LEN)
        s->buf = BUF; /* wrap: buffers may alias, as a hostile driver's may */
    uint64_t at = s->buf;
    s->buf += (len + 15) & ~15u;
    return at;
}

/* Publish a chain of n descriptors (addr, len, flags) on queue q. */
static void publish(struct side *s, unsigned q, const uint64_t *addr, const uint32_t *len, const uint16_t *fl,
                    unsigned n)
{
    uint16_t head = s->next[q] % QSIZE;
    for (unsigned i = 0; i < n; i++) {
        uint16_t d = (uint16_t)((head + i) % QSIZE), nx = (uint16_t)((head + i + 1) % QSIZE);
        uint8_t desc[16];
        uint16_t flags = (uint16_t)(fl[i] | (i + 1 < n ? 1 : 0));
        memcpy(desc, &addr[i], 8);
        memcpy(desc + 8, &len[i], 4);
        memcpy(desc + 12, &flags, 2);
        memcpy(desc + 14, &nx, 2);
        vmm_mem_write(s->vm, RING(q) + 16u * d, desc, 16);
    }
    s->next[q] = (uint16_t)(s->next[q] + n);
    vmm_mem_write(s->vm, RING(q) + 0x1000 + 4 + 2u * (s->avail[q] % QSIZE), &head, 2);
    s->avail[q]++;
    vmm_mem_write(s->vm, RING(q) + 0x1000 + 2, &s->avail[q], 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct side a = { .vm = vm[0] }, b = { .vm = vm[1] };

    if (size < 1)
        return 0;
    /* feature bits: CSUM 0, GUEST_CSUM 1, MRG_RXBUF 15, INDIRECT 28, EVENT_IDX 29 (STATUS, MAC always) */
    uint32_t f = (1u << 5) | (1u << 16);
    uint32_t fa = f | (data[0] & 1u) | (data[0] & 2u) | ((data[0] >> 2 & 1u) << 15) | ((data[0] >> 3 & 1u) << 29);
    uint32_t fb = f | (data[0] >> 4 & 3u) | ((data[0] >> 6 & 1u) << 15) | ((data[0] >> 7 & 1u) << 29);
    setup(&a, fa);
    setup(&b, fb);
    data++;
    size--;
    while (size >= 3) {
        uint8_t op = data[0];
        uint32_t len = (uint32_t)(data[1] | data[2] << 8) | (uint32_t)(op & 0x10) << 12; /* up to 128 KiB */
        data += 3;
        size -= 3;
        switch (op & 7) {
        case 0: { /* a transmits: header + frame from the input, split into up to 4 readable pieces */
            uint32_t n = len < size ? len : (uint32_t)size;
            uint32_t total = len > FRAME_MAX + 12 + 64 ? FRAME_MAX + 12 + 64 : len;
            uint64_t at = alloc(&a, total ? total : 1);
            vmm_mem_write(a.vm, at, data, n < total ? n : total);
            data += n;
            size -= n;
            unsigned pieces = 1 + (op >> 5 & 3);
            uint64_t addr[5];
            uint32_t l[5];
            uint16_t fl[5] = { 0 };
            for (unsigned i = 0; i < pieces; i++) {
                uint32_t from = total * i / pieces, to = total * (i + 1) / pieces;
                addr[i] = at + from;
                l[i] = to - from;
            }
            if (op & 0x80) { /* a writable buffer after them: not allowed on the TX queue's frames */
                addr[pieces] = alloc(&a, 64);
                l[pieces] = 64;
                fl[pieces++] = 2;
            }
            publish(&a, 1, addr, l, fl, pieces);
            break;
        }
        case 1: { /* b posts a receive chain of 1-3 writable buffers */
            unsigned pieces = 1 + (op >> 5 & 3) % 3;
            uint64_t addr[3];
            uint32_t l[3];
            uint16_t fl[3] = { 2, 2, 2 };
            for (unsigned i = 0; i < pieces; i++) {
                l[i] = (len >> (4 * i)) & 0x1fff;
                addr[i] = alloc(&b, l[i] ? l[i] : 1);
            }
            publish(&b, 0, addr, l, fl, pieces);
            break;
        }
        case 2:
            w32(a.vm, QNOTIFY, 1);
            break;
        case 3:
            w32(b.vm, QNOTIFY, 0);
            break;
        case 4: /* a bogus notify index, a link flap */
            w32(b.vm, QNOTIFY, len);
            vmm_net_set_link(b.vm, 0, (int)(len & 1));
            break;
        case 5: /* b resets and starts over */
            setup(&b, fb);
            break;
        default:
            break;
        }
    }
    w32(a.vm, QNOTIFY, 1);
    w32(b.vm, QNOTIFY, 0);
    vmm_net_set_link(b.vm, 0, 1);
    /* the receiver's queue is bounded: 256 frames of at most FRAME_MAX bytes */
    if (host_mem(vm[1]) > mem_idle + 256ull * FRAME_MAX)
        abort();
    return 0;
}
