/*
 * fuzz_gpu.c - libFuzzer target: virtio-gpu command sequences through the real virtio-mmio transport.
 *
 * One VM (32 MiB of RAM) with a GPU (640x480 mode, max_mem 8 MiB) lives for the whole process; each
 * input resets the device (status 0), negotiates features, sets up the control queue (64 entries)
 * and the cursor queue (16) at fixed addresses, then decodes a sequence of commands from the input:
 * per command an opcode byte and a mode byte, then its fields. Fields are mostly small (resource ids
 * 0..5, sizes up to 64, backing in a RAM area) so that commands refer to each other and reach deep
 * states (a resource created, backed, shown, transferred, flushed, unreferenced while shown...), with
 * escapes to large and raw values; a mode bit sends the body raw. Chains take several shapes (one
 * descriptor, split request, split or short response, no response, a second descriptor with up to
 * 2^18 backing entries), go to either queue, and are notified in batches. Frames may be held
 * (vmm_screen_hold) so flushes make copies.
 *
 * Oracles besides ASan/UBSan: every response written has a known type; after every batch the VM's
 * host_mem_bytes stays within its value after creation plus max_mem plus 1 MiB, and the heap the
 * input added (ASan's allocator count) within max_mem plus 2 MiB: everything a guest makes the GPU
 * allocate is counted against max_mem (resources, backing tables, the scanout image, held frames).
 */
#include <sanitizer/allocator_interface.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtio_mmio_regs.h"
#include "vmm.h"

#define RAM 0x40000000ull
#define RAM_SIZE (32ull << 20)
#define SLOT 0x0a000000ull
#define MAX_MEM (8ull << 20)
#define HOST_SLACK (1ull << 20) /* the GPU's and screen's own structs, the VM's fixed part */
#define HEAP_SLACK (2ull << 20)

/* guest RAM layout */
#define CQ_DESC (RAM + 0x0000) /* control queue: 64 descriptors */
#define CQ_AVAIL (RAM + 0x1000)
#define CQ_USED (RAM + 0x2000)
#define XQ_DESC (RAM + 0x3000) /* cursor queue: 16 descriptors */
#define XQ_AVAIL (RAM + 0x4000)
#define XQ_USED (RAM + 0x5000)
#define REQS (RAM + 0x10000)  /* 4 KiB per chain slot */
#define RESPS (RAM + 0x40000) /* 2 KiB per chain slot */
#define ENTS (RAM + 0x100000) /* 4 MiB of zeros: the tail of long backing tables */
#define ENTS_LEN (4ull << 20)
#define PIX (RAM + 0x800000) /* 24 MiB of pixels for backing */
#define PIX_LEN (24ull << 20)
#define CQ_SIZE 64
#define XQ_SIZE 16
#define MAX_CHAINS 16 /* per batch: 3 descriptors each fit the control queue */

enum { D_NEXT = 1, D_WRITE = 2 };

static vmm_vm *vm;
static uint64_t host_base;

struct in {
    const uint8_t *p;
    size_t n;
};

static uint8_t u8(struct in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}
static uint16_t u16(struct in *in)
{
    uint16_t lo = u8(in);
    return (uint16_t)(lo | u8(in) << 8);
}
static uint32_t u32(struct in *in)
{
    uint32_t lo = u16(in);
    return lo | (uint32_t)u16(in) << 16;
}
static uint64_t u64(struct in *in)
{
    uint64_t lo = u32(in);
    return lo | (uint64_t)u32(in) << 32;
}

static void w32(uint64_t off, uint32_t v)
{
    vmm_mmio_write(vm, SLOT + off, 4, v);
}
static uint32_t r32(uint64_t off)
{
    uint64_t v = 0;
    vmm_mmio_read(vm, SLOT + off, 4, &v);
    return (uint32_t)v;
}
static void w64(uint64_t off, uint64_t v)
{
    w32(off, (uint32_t)v);
    w32(off + 4, (uint32_t)(v >> 32));
}
static void put32(uint8_t *b, uint32_t v)
{
    memcpy(b, &v, 4);
}
static void put64(uint8_t *b, uint64_t v)
{
    memcpy(b, &v, 8);
}

/* small values mostly, escapes to big and raw ones */
static uint32_t rid(struct in *in)
{
    uint8_t b = u8(in);
    return b < 0xf8 ? b % 6u : b == 0xff ? u32(in) : 6u + b % 8u;
}
static uint32_t dim(struct in *in)
{
    uint8_t b = u8(in);
    return b < 0xf0 ? 1u + (b & 63) : b < 0xfc ? u16(in) : u32(in);
}
static uint32_t coord(struct in *in)
{
    uint8_t b = u8(in);
    return b < 0xf0 ? (b & 63) : b < 0xfc ? u16(in) : u32(in);
}
static uint32_t format(struct in *in)
{
    static const uint32_t f[] = { 1, 2, 3, 4, 67, 68, 121, 134 };
    uint8_t b = u8(in);
    return b < 0xf8 ? f[b % 8] : u32(in);
}

struct q {
    uint64_t desc, avail, used;
    unsigned size;
    uint16_t idx;   /* avail index published */
    unsigned ndesc; /* descriptors used in this batch */
};
static struct q qs[2] = { { CQ_DESC, CQ_AVAIL, CQ_USED, CQ_SIZE, 0, 0 },
                          { XQ_DESC, XQ_AVAIL, XQ_USED, XQ_SIZE, 0, 0 } };
static unsigned nchains;
static uint64_t chain_resp[2][CQ_SIZE]; /* response buffer of each ring slot, 0 if none */

static void check_budget(void)
{
    struct vmm_stats st = { .size = sizeof st };
    if (vmm_get_stats(vm, &st) || st.host_mem_bytes > host_base + MAX_MEM + HOST_SLACK) {
        fprintf(stderr, "fuzz_gpu: host_mem_bytes %llu > %llu + max_mem %llu + %llu\n",
                (unsigned long long)st.host_mem_bytes, (unsigned long long)host_base, (unsigned long long)MAX_MEM,
                (unsigned long long)HOST_SLACK);
        abort();
    }
}

static void notify_all(size_t heap0)
{
    for (unsigned q = 0; q < 2; q++) {
        struct q *Q = &qs[q];
        uint16_t used_idx0 = 0, used_idx = 0;
        if (!Q->ndesc)
            continue;
        vmm_mem_read(vm, Q->used + 2, &used_idx0, 2);
        w32(QNOTIFY, q);
        vmm_mem_read(vm, Q->used + 2, &used_idx, 2);
        /* every response written says something we know */
        for (uint16_t i = used_idx0; i != used_idx; i++) {
            uint32_t elem[2], type = 0;
            vmm_mem_read(vm, Q->used + 4 + 8ull * (i % Q->size), elem, 8);
            uint64_t resp = elem[0] < Q->size ? chain_resp[q][elem[0]] : 0;
            if (!resp || elem[1] < 24)
                continue;
            vmm_mem_read(vm, resp, &type, 4);
            if (!(type == 0x1100 || type == 0x1101 || type == 0x1104 || (type >= 0x1200 && type <= 0x1205))) {
                fprintf(stderr, "fuzz_gpu: response type 0x%x\n", type);
                abort();
            }
        }
        Q->ndesc = 0;
    }
    nchains = 0;
    memset(chain_resp, 0, sizeof chain_resp);
    check_budget();
    size_t heap = __sanitizer_get_current_allocated_bytes();
    if (heap > heap0 && heap - heap0 > MAX_MEM + HEAP_SLACK) {
        fprintf(stderr, "fuzz_gpu: the input added %zu bytes of heap (max_mem %llu)\n", heap - heap0,
                (unsigned long long)MAX_MEM);
        abort();
    }
}

static void add_desc(struct q *Q, uint64_t addr, uint32_t len, uint16_t flags)
{
    uint8_t d[16];
    unsigned i = Q->ndesc++;
    put64(d, addr);
    put32(d + 8, len);
    flags |= D_NEXT;
    memcpy(d + 12, &flags, 2);
    d[14] = (uint8_t)(i + 1);
    d[15] = 0;
    vmm_mem_write(vm, Q->desc + 16ull * i, d, 16);
}

/* end a chain: clear NEXT on its last descriptor, publish its head */
static void publish(struct q *Q, unsigned head, uint64_t resp)
{
    uint16_t flags, h = (uint16_t)head;
    uint64_t last = Q->desc + 16ull * (Q->ndesc - 1) + 12;
    vmm_mem_read(vm, last, &flags, 2);
    flags &= (uint16_t)~D_NEXT;
    vmm_mem_write(vm, last, &flags, 2);
    vmm_mem_write(vm, Q->avail + 4 + 2ull * (Q->idx % Q->size), &h, 2);
    Q->idx++;
    vmm_mem_write(vm, Q->avail + 2, &Q->idx, 2);
    chain_resp[Q == &qs[1]][head] = resp;
}

/* One command from the input; returns false when the input is used up. */
static bool command(struct in *in, size_t heap0)
{
    static const uint32_t types[] = { 0x0100, 0x0101, 0x0102, 0x0103, 0x0104, 0x0105, 0x0106,
                                      0x0107, 0x010a, 0x0300, 0x0301, 0x0200, 0x0205 };
    static const uint32_t resp_len[4] = { 1056, 24, 8, 408 };
    uint8_t req[4096] = { 0 };
    size_t len = 24, entries_tail = 0;

    if (!in->n)
        return false;
    uint8_t op = u8(in), mode = u8(in);
    uint32_t type = op % 16 < 13 ? types[op % 16] : u32(in);
    bool cursor = type == 0x0300 || type == 0x0301;
    unsigned q = (mode & 0x20) ? !cursor : cursor; /* bit 5: the wrong queue */
    struct q *Q = &qs[q];

    put32(req, type);
    if (mode & 8) { /* fenced */
        put32(req + 4, 1);
        put64(req + 8, u64(in));
    }
    if (mode & 0x10) { /* raw body */
        size_t n = u8(in);
        for (size_t i = 0; i < n && in->n; i++)
            req[len++] = u8(in);
    } else {
        uint8_t *b = req + 24;
        switch (type) {
        case 0x0101: /* create_2d: id, format, w, h */
            put32(b, rid(in)), put32(b + 4, format(in)), put32(b + 8, dim(in)), put32(b + 12, dim(in));
            len += 16;
            break;
        case 0x0102: /* unref, detach */
        case 0x0107:
            put32(b, rid(in));
            len += 8;
            break;
        case 0x0103: /* set_scanout: rect, scanout, id */
        case 0x0104: /* flush: rect, id */
            put32(b, coord(in)), put32(b + 4, coord(in)), put32(b + 8, dim(in)), put32(b + 12, dim(in));
            if (type == 0x0103) {
                uint8_t s = u8(in);
                put32(b + 16, s < 0xf0 ? 0 : s), put32(b + 20, rid(in));
            } else {
                put32(b + 16, rid(in));
            }
            len += 24;
            break;
        case 0x0105: { /* transfer: rect, offset, id */
            put32(b, coord(in)), put32(b + 4, coord(in)), put32(b + 8, dim(in)), put32(b + 12, dim(in));
            uint8_t o = u8(in);
            put64(b + 16, o < 0xf0 ? (uint64_t)o * 64 : u64(in));
            put32(b + 24, rid(in));
            len += 32;
            break;
        }
        case 0x0106: { /* attach_backing: id, nr, entries */
            uint8_t c = u8(in);
            uint32_t nr = c < 0xf0 ? c & 15 : c < 0xfc ? (uint32_t)u16(in) << 2 : c == 0xfc ? 1u << 18 : u32(in);
            put32(b, rid(in)), put32(b + 4, nr);
            len += 8;
            uint32_t k = nr < 16 ? nr : 16; /* inline entries; the rest: zeros at ENTS */
            for (uint32_t i = 0; i < k; i++, len += 16) {
                uint8_t e = u8(in);
                uint64_t addr = e < 0xf0 ? PIX + (uint64_t)u16(in) * 256 : e < 0xfc ? RAM + u32(in) : u64(in);
                uint32_t l = e < 0xf0 ? (uint32_t)u8(in) * 256 + (e & 15) * 4 : u32(in);
                put64(req + len, addr);
                put32(req + len + 8, l);
            }
            if (nr > k && !(mode & 0x40))
                entries_tail = (uint64_t)(nr - k) * 16 < ENTS_LEN ? (size_t)(nr - k) * 16 : ENTS_LEN;
            break;
        }
        case 0x010a: /* get_edid: scanout */
            put32(b, u8(in) < 0xf0 ? 0 : 1);
            len += 8;
            break;
        case 0x0300: /* cursor: scanout, x, y, pad, id, hot_x, hot_y */
        case 0x0301:
            put32(b + 4, coord(in)), put32(b + 8, coord(in)), put32(b + 16, rid(in));
            put32(b + 20, coord(in)), put32(b + 24, coord(in));
            len += 32;
            break;
        default:
            break;
        }
    }

    /* the chain: shape from mode bits 0-1, response size from bits 6-7 */
    if (Q->ndesc + 4 > Q->size || nchains >= MAX_CHAINS)
        notify_all(heap0);
    unsigned slot = nchains++, head = Q->ndesc, shape = mode & 3;
    uint64_t ra = REQS + 4096ull * slot, rsp = RESPS + 2048ull * slot;
    uint32_t rl = resp_len[mode >> 6];
    vmm_mem_write(vm, ra, req, len);
    if (shape == 1 && len > 1) { /* request split in two */
        uint32_t cut = 1 + u8(in) % (uint32_t)(len - 1);
        add_desc(Q, ra, cut, 0);
        add_desc(Q, ra + cut, (uint32_t)len - cut, 0);
    } else {
        add_desc(Q, ra, (uint32_t)len, 0);
    }
    if (entries_tail)
        add_desc(Q, ENTS, (uint32_t)entries_tail, 0);
    if (shape == 2 && rl > 8) { /* response split in two */
        add_desc(Q, rsp, 8, D_WRITE);
        add_desc(Q, rsp + 8, rl - 8, D_WRITE);
    } else if (shape != 3) {
        add_desc(Q, rsp, rl, D_WRITE);
    }
    publish(Q, head, shape == 3 ? 0 : rsp);
    if (mode & 4)
        notify_all(heap0);
    return true;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct vmm_config c = { .size = sizeof c, .ram_size = RAM_SIZE, .log_level = VMM_LOG_ERROR };
    struct vmm_gpu_config g = { .size = sizeof g, .width = 640, .height = 480, .max_mem = MAX_MEM };
    struct vmm_stats st = { .size = sizeof st };
    static uint8_t pix[1 << 16];
    (void)argc;
    (void)argv;
    char err[256] = "";
    if (vmm_create(&c, &vm, err, sizeof err) || vmm_add_gpu(vm, &g)) {
        fprintf(stderr, "fuzz_gpu: %s%s\n", err, vm ? vmm_last_error(vm) : "");
        abort();
    }
    for (size_t i = 0; i < sizeof pix; i++)
        pix[i] = (uint8_t)(i * 7 + (i >> 8));
    for (uint64_t a = PIX; a < PIX + PIX_LEN; a += sizeof pix)
        vmm_mem_write(vm, a, pix, sizeof pix);
    if (r32(MAGIC) != 0x74726976 || vmm_get_stats(vm, &st)) {
        fprintf(stderr, "fuzz_gpu: no virtio-mmio device at 0x%llx\n", (unsigned long long)SLOT);
        abort();
    }
    host_base = st.host_mem_bytes;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = { data, size };
    static const uint8_t zero[4096];
    uint8_t flags = u8(&in), holds = u8(&in);
    struct vmm_screen_info si = { .size = sizeof si };
    size_t heap0 = __sanitizer_get_current_allocated_bytes();

    w32(STATUS, 0); /* reset: frees the previous input's resources */
    for (unsigned q = 0; q < 2; q++) {
        vmm_mem_write(vm, qs[q].desc, zero, sizeof zero);
        vmm_mem_write(vm, qs[q].avail, zero, sizeof zero);
        vmm_mem_write(vm, qs[q].used, zero, sizeof zero);
        qs[q].idx = 0;
        qs[q].ndesc = 0;
    }
    nchains = 0;
    memset(chain_resp, 0, sizeof chain_resp);

    /* features: VERSION_1, and EDID / EVENT_IDX as the input says */
    uint64_t feat = 1ull << 32 | (flags & 1 ? 1ull << 1 : 0) | (flags & 2 ? 1ull << 29 : 0);
    w32(STATUS, 1 | 2);
    w32(DRV_FEAT_SEL, 0);
    w32(DRV_FEAT, (uint32_t)feat);
    w32(DRV_FEAT_SEL, 1);
    w32(DRV_FEAT, (uint32_t)(feat >> 32));
    w32(STATUS, 1 | 2 | 8);
    for (unsigned q = 0; q < 2; q++) {
        w32(QSEL, q);
        w32(QNUM, qs[q].size);
        w64(QDESC, qs[q].desc);
        w64(QDRIVER, qs[q].avail);
        w64(QDEVICE, qs[q].used);
        w32(QREADY, 1);
    }
    w32(STATUS, 1 | 2 | 8 | 4);

    /* hold the next few frames: flushes then copy the screen */
    if (!vmm_screen_info(vm, &si))
        for (unsigned i = 1; i <= (holds & 7u); i++)
            vmm_screen_hold(vm, si.frames + i * (1u + (holds >> 3)));

    while (command(&in, heap0))
        ;
    notify_all(heap0);
    return 0;
}
