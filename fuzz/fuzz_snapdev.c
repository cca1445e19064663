/*
 * fuzz_snapdev.c - libFuzzer target: the virtio devices' snapshot sections (save/load hooks through
 * vmm__board_snap), and, once at start-up, a round-trip check of every virtio device.
 *
 * Start-up (LLVMFuzzerInitialize; `fuzz_snapdev -runs=0` runs only this, and exits non-zero on a
 * failure): VM A (deterministic, 32 MiB) with the test device, rng, virtio console, a writable disk, a
 * share, a GPU, keyboard and tablet is driven through the real virtio-mmio registers and rings: every
 * queue set up and DRIVER_OK; a disk write; Tversion/Tattach/Twalk/Tlopen on the share (a fid on
 * "keep", one on "gone"); a GPU resource created, backed, shown and flushed; input events pending and
 * scheduled at virtual times. Its device sections are saved (stream SA) and A is destroyed.
 *   1. VM B, built the same way, loads SA (its RAM copied from A, as snapshot.c does): saving B again
 *      must give SA byte for byte, its screen must equal A's, and its queues must continue where A's
 *      stopped (a 9p Tread on the "keep" fid answers the file's bytes; a Tread on "gone" after the host
 *      removed it answers ESTALE, without a crash).
 *   2. A changed disk is refused: after a write to the image, loading SA fails naming it.
 * Fuzzing: each input is a list of edits (offset, xor byte) to SA's payload bytes; section CRCs are
 * recomputed so the device loaders see the edits; the result is loaded into VM B. A load may fail (a
 * clean error); one that succeeds must save again, and every queue is then notified so that devices
 * touch the rings they loaded (inside RAM, or ASan says so).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../csrc/core/snapshot.h"
#include "virtio_mmio_regs.h"
#include "vmm.h"

int vmm__board_snap(struct vmm_vm *vm, struct vmm_snap *s);
uint64_t vmm__board_advance(struct vmm_vm *vm, uint64_t now_ns);
uint64_t vmm__board_host_mem(struct vmm_vm *vm); /* the GPU's: its struct, the screen's, its budget's use */

#define RAM 0x40000000ull
#define RAM_SIZE (32ull << 20)
#define SLOT0 0x0a000000ull
#define STRIDE 0x200
#define AREA (RAM + 0x100000) /* the rings and buffers this harness lays out (copied A -> B) */
#define AREA_LEN (4u << 20)
#define QSIZE 16

enum { S_DUMMY, S_RNG, S_CONS, S_BLK, S_9P, S_GPU, S_KBD, S_TAB, NSLOTS };
static const unsigned nqueues[NSLOTS] = { 2, 1, 2, 1, 1, 2, 2, 2 };

static char dir[64], share[80], disk[80];
static uint8_t *ram; /* A's ring area */
static uint8_t *sa;  /* the saved device sections of VM A */
static size_t sa_len;
static vmm_vm *vmb;

#define CHECK(c, ...)                                      \
    do {                                                   \
        if (!(c)) {                                        \
            fprintf(stderr, "fuzz_snapdev: " __VA_ARGS__); \
            fprintf(stderr, "\n");                         \
            abort();                                       \
        }                                                  \
    } while (0)

/* ---- a small virtio-mmio driver over vmm_mmio_* and vmm_mem_* ---- */

struct q {
    unsigned slot, index;
    uint64_t desc, avail, used;
    uint16_t avail_idx, used_seen;
};
static struct q queues[NSLOTS][2], saved_queues[NSLOTS][2];
static uint64_t bump = AREA + 0x40000; /* buffers after the rings */

static void w32(vmm_vm *vm, unsigned slot, uint64_t off, uint32_t v)
{
    vmm_mmio_write(vm, SLOT0 + (uint64_t)slot * STRIDE + off, 4, v);
}

static uint32_t r32(vmm_vm *vm, unsigned slot, uint64_t off)
{
    uint64_t v = 0;
    vmm_mmio_read(vm, SLOT0 + (uint64_t)slot * STRIDE + off, 4, &v);
    return (uint32_t)v;
}

static uint64_t alloc(size_t n)
{
    uint64_t a = bump;
    bump += (n + 15) & ~15ull;
    CHECK(bump < AREA + AREA_LEN, "harness RAM area full");
    return a;
}

static void dev_init(vmm_vm *vm, unsigned slot)
{
    w32(vm, slot, STATUS, 0);
    w32(vm, slot, STATUS, 1 | 2);
    for (unsigned w = 0; w < 2; w++) {
        w32(vm, slot, DEV_FEAT_SEL, w);
        uint32_t f = r32(vm, slot, DEV_FEAT);
        if (w == 0 && slot == S_DUMMY)
            f &= ~2u; /* DUMMY_F_B without A is refused: take both or neither; take A only */
        w32(vm, slot, DRV_FEAT_SEL, w);
        w32(vm, slot, DRV_FEAT, f);
    }
    w32(vm, slot, STATUS, 1 | 2 | 8);
    CHECK(r32(vm, slot, STATUS) & 8, "slot %u: FEATURES_OK refused", slot);
    for (unsigned i = 0; i < nqueues[slot]; i++) {
        struct q *q = &queues[slot][i];
        q->slot = slot;
        q->index = i;
        q->desc = AREA + 0x2000 * (slot * 2 + i);
        q->avail = q->desc + 16 * QSIZE;
        q->used = q->desc + 0x1000;
        w32(vm, slot, QSEL, i);
        w32(vm, slot, QNUM, QSIZE);
        w32(vm, slot, QDESC, (uint32_t)q->desc);
        w32(vm, slot, QDESC + 4, (uint32_t)(q->desc >> 32));
        w32(vm, slot, QDRIVER, (uint32_t)q->avail);
        w32(vm, slot, QDRIVER + 4, (uint32_t)(q->avail >> 32));
        w32(vm, slot, QDEVICE, (uint32_t)q->used);
        w32(vm, slot, QDEVICE + 4, (uint32_t)(q->used >> 32));
        w32(vm, slot, QREADY, 1);
    }
    w32(vm, slot, STATUS, 1 | 2 | 8 | 4);
    CHECK((r32(vm, slot, STATUS) & 0x44) == 4, "slot %u: not live", slot);
}

/* A chain of one readable buffer (out, n bytes; none if n is 0) and one writable one of `in` bytes. */
static uint16_t q_add(vmm_vm *vm, struct q *q, const void *out, size_t n, size_t in, uint64_t *in_gpa)
{
    uint16_t head = (uint16_t)(q->avail_idx % QSIZE * 2 % QSIZE), d = head;
    uint8_t desc[16];

    if (n) {
        uint64_t a = alloc(n);
        vmm_mem_write(vm, a, out, n);
        uint16_t fl = in ? 1 : 0, next = (uint16_t)((d + 1) % QSIZE);
        uint32_t len = (uint32_t)n;
        memcpy(desc, &a, 8);
        memcpy(desc + 8, &len, 4);
        memcpy(desc + 12, &fl, 2);
        memcpy(desc + 14, &next, 2);
        vmm_mem_write(vm, q->desc + 16 * d, desc, 16);
        d = next;
    }
    if (in) {
        uint64_t a = alloc(in);
        uint16_t fl = 2, next = 0;
        uint32_t len = (uint32_t)in;
        if (in_gpa)
            *in_gpa = a;
        memcpy(desc, &a, 8);
        memcpy(desc + 8, &len, 4);
        memcpy(desc + 12, &fl, 2);
        memcpy(desc + 14, &next, 2);
        vmm_mem_write(vm, q->desc + 16 * d, desc, 16);
    }
    vmm_mem_write(vm, q->avail + 4 + 2 * (q->avail_idx % QSIZE), &head, 2);
    q->avail_idx++;
    vmm_mem_write(vm, q->avail + 2, &q->avail_idx, 2);
    return head;
}

static void q_notify(vmm_vm *vm, struct q *q)
{
    w32(vm, q->slot, QNOTIFY, q->index);
}

static uint16_t q_used_idx(vmm_vm *vm, struct q *q)
{
    uint16_t idx = 0;
    vmm_mem_read(vm, q->used + 2, &idx, 2);
    return idx;
}

/* One request on a queue, answered at once: returns the written length, *resp filled. */
static uint32_t request(vmm_vm *vm, struct q *q, const void *out, size_t n, void *resp, size_t in)
{
    uint64_t gpa = 0;
    uint16_t before = q_used_idx(vm, q);
    q_add(vm, q, out, n, in, &gpa);
    q_notify(vm, q);
    uint16_t after = q_used_idx(vm, q);
    CHECK(after == (uint16_t)(before + 1), "queue %u.%u: request not answered (%u -> %u)", q->slot, q->index, before,
          after);
    uint32_t elem[2];
    vmm_mem_read(vm, q->used + 4 + 8 * (before % QSIZE), elem, 8);
    if (resp && in)
        vmm_mem_read(vm, gpa, resp, in);
    return elem[1];
}

/* ---- 9P messages ---- */

static size_t p9msg(uint8_t *m, uint8_t type, uint16_t tag, const void *body, size_t n)
{
    uint32_t size = (uint32_t)(7 + n);
    memcpy(m, &size, 4);
    m[4] = type;
    memcpy(m + 5, &tag, 2);
    memcpy(m + 7, body, n);
    return size;
}

static size_t put_str(uint8_t *p, const char *s)
{
    uint16_t n = (uint16_t)strlen(s);
    memcpy(p, &n, 2);
    memcpy(p + 2, s, n);
    return 2 + (size_t)n;
}

/* A 9P request; returns the R type (7: Rlerror, *err its errno). */
static uint8_t p9(vmm_vm *vm, uint8_t type, const void *body, size_t n, uint8_t *resp, uint32_t *err)
{
    uint8_t m[512];
    size_t len = p9msg(m, type, 1, body, n);
    request(vm, &queues[S_9P][0], m, len, resp, 512);
    if (resp[4] == 7 && err)
        memcpy(err, resp + 7, 4);
    return resp[4];
}

static void p9_walk(vmm_vm *vm, uint32_t fid, uint32_t newfid, const char *name)
{
    uint8_t b[300], r[512];
    uint16_t one = 1;
    memcpy(b, &fid, 4);
    memcpy(b + 4, &newfid, 4);
    memcpy(b + 8, &one, 2);
    size_t n = 10 + put_str(b + 10, name);
    CHECK(p9(vm, 110, b, n, r, NULL) == 111, "Twalk %s", name);
}

static void p9_lopen(vmm_vm *vm, uint32_t fid, uint32_t flags)
{
    uint8_t b[8], r[512];
    memcpy(b, &fid, 4);
    memcpy(b + 4, &flags, 4);
    CHECK(p9(vm, 12, b, 8, r, NULL) == 13, "Tlopen");
}

/* Tread of fid: the bytes (as a string), or the errno as a negative number. */
static int p9_read(vmm_vm *vm, uint32_t fid, char *out, size_t cap)
{
    uint8_t b[16], r[512];
    uint64_t off = 0;
    uint32_t count = (uint32_t)cap - 1, err = 0, got;
    memcpy(b, &fid, 4);
    memcpy(b + 4, &off, 8);
    memcpy(b + 12, &count, 4);
    if (p9(vm, 116, b, 16, r, &err) != 117)
        return -(int)err;
    memcpy(&got, r + 7, 4);
    memcpy(out, r + 11, got);
    out[got] = 0;
    return (int)got;
}

/* ---- the machine ---- */

static void log_fn(void *o, int level, const char *subsys, const char *msg)
{
    (void)o;
    if (level <= VMM_LOG_WARN)
        fprintf(stderr, "fuzz_snapdev: log: %s: %s\n", subsys, msg);
}

static vmm_vm *make_vm(void)
{
    struct vmm_config c = {
        .size = sizeof c, .ram_size = RAM_SIZE, .log_level = VMM_LOG_WARN, .log_fn = log_fn, .deterministic = 1
    };
    struct vmm_gpu_config g = { .size = sizeof g, .width = 64, .height = 48, .max_mem = 8u << 20 };
    vmm_vm *vm = NULL;
    char err[256] = "";

    CHECK(!vmm_create(&c, &vm, err, sizeof err), "vmm_create: %s", err);
    CHECK(!vmm_add_test_device(vm) && !vmm_add_rng(vm) && !vmm_add_virtio_console(vm) && !vmm_add_disk(vm, disk, 0) &&
              !vmm_add_share(vm, share, "snap", 0) && !vmm_add_gpu(vm, &g) && !vmm_add_input(vm),
          "adding devices: %s", vmm_last_error(vm));
    return vm;
}

static int save(vmm_vm *vm, uint8_t **buf, size_t *len)
{
    struct vmm_snap s;
    vmm__snap_init_save(&s);
    int rc = vmm__board_snap(vm, &s);
    *buf = s.buf;
    *len = s.len;
    if (rc) {
        fprintf(stderr, "fuzz_snapdev: save: %s\n", s.errmsg);
        vmm__snap_free(&s);
        *buf = NULL;
    }
    return rc;
}

static int load(vmm_vm *vm, const uint8_t *buf, size_t len, char *msg, size_t cap)
{
    struct vmm_snap s;
    vmm__snap_init_load(&s, buf, len);
    int rc = vmm__board_snap(vm, &s);
    if (msg)
        snprintf(msg, cap, "%s", s.errmsg);
    return rc;
}

/* GPU: a 64x48 resource, backed by RAM, filled with a pattern, shown and flushed (frame 1). */
static void drive_gpu(vmm_vm *vm)
{
    struct q *cq = &queues[S_GPU][0];
    uint8_t req[128], resp[64];
    uint32_t w = 64, h = 48;
    uint64_t pix = alloc((size_t)w * h * 4);
    uint8_t *pat = malloc((size_t)w * h * 4);
    for (uint32_t i = 0; i < w * h * 4; i++)
        pat[i] = (uint8_t)(i * 7 + 3);
    vmm_mem_write(vm, pix, pat, (size_t)w * h * 4);
    free(pat);
#define GPU_CMD(type, ...)                                                           \
    do {                                                                             \
        uint32_t body[] = { __VA_ARGS__ };                                           \
        memset(req, 0, 24);                                                          \
        uint32_t t = (type);                                                         \
        memcpy(req, &t, 4);                                                          \
        memcpy(req + 24, body, sizeof body);                                         \
        request(vm, cq, req, 24 + sizeof body, resp, 24);                            \
        uint32_t rt;                                                                 \
        memcpy(&rt, resp, 4);                                                        \
        CHECK(rt == 0x1100, "gpu command 0x%x answered 0x%x", (unsigned)(type), rt); \
    } while (0)
    GPU_CMD(0x0101, 7, 1, w, h);                                               /* create 2D, B8G8R8A8 */
    GPU_CMD(0x0106, 7, 1, (uint32_t)pix, (uint32_t)(pix >> 32), w * h * 4, 0); /* attach one entry */
    GPU_CMD(0x0105, 0, 0, w, h, 0, 0, 7, 0);                                   /* transfer */
    GPU_CMD(0x0103, 0, 0, w, h, 0, 7);                                         /* set scanout */
    GPU_CMD(0x0104, 0, 0, w, h, 7, 0);                                         /* flush: frame 1 */
    GPU_CMD(0x0101, 9, 67, 8, 8);                                              /* an unbacked one */
#undef GPU_CMD
    CHECK(!vmm_screen_hold(vm, 2), "hold");
}

static void capture(vmm_vm *vm, uint32_t *buf, size_t len, uint64_t *frames)
{
    uint32_t w = 0, h = 0;
    CHECK(!vmm_screen_capture(vm, 0, buf, len, &w, &h, frames) && w == 64 && h == 48, "capture: %s",
          vmm_last_error(vm));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(text, f) >= 0 && !fclose(f), "writing %s", path);
}

static void cleanup(void)
{
    char p[160];
    const char *names[] = { "keep", "gone" };
    for (unsigned i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", share, names[i]);
        unlink(p);
    }
    rmdir(share);
    unlink(disk);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static uint32_t shot_a[64 * 48], shot_b[64 * 48];
    uint64_t frames_a = 0, frames_b = 0;
    char msg[300], buf[64];
    (void)argc;
    (void)argv;

    snprintf(dir, sizeof dir, "%s/fuzz_snapdev.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(dir), "mkdtemp");
    atexit(cleanup);
    snprintf(share, sizeof share, "%s/share", dir);
    snprintf(disk, sizeof disk, "%s/disk.img", dir);
    CHECK(!mkdir(share, 0700), "mkdir");
    {
        char p[160];
        snprintf(p, sizeof p, "%s/keep", share);
        write_file(p, "kept bytes");
        snprintf(p, sizeof p, "%s/gone", share);
        write_file(p, "gone bytes");
        int fd = open(disk, O_CREAT | O_RDWR | O_TRUNC, 0600);
        CHECK(fd >= 0 && !ftruncate(fd, 4 << 20) && !close(fd), "disk image");
    }

    /* VM A: drive every device */
    vmm_vm *a = make_vm();
    for (unsigned s = 0; s < NSLOTS; s++)
        dev_init(a, s);
    {
        uint8_t echo[4] = { 1, 2, 3, 4 }, back[4];
        CHECK(request(a, &queues[S_DUMMY][0], echo, 4, back, 4) == 4 && back[0] == 4, "dummy echo");
        uint8_t rnd[32];
        CHECK(request(a, &queues[S_RNG][0], NULL, 0, rnd, 32) == 32, "rng");
        uint8_t w[16 + 512] = { 1 }, st = 0xff; /* VIRTIO_BLK_T_OUT, sector 0 */
        memcpy(w + 16, "disk sector zero", 16);
        CHECK(request(a, &queues[S_BLK][0], w, sizeof w, &st, 1) == 1 && st == 0, "blk write");
        uint8_t r[512], b[64];
        uint32_t msize = 8192;
        memcpy(b, &msize, 4);
        size_t n = 4 + put_str(b + 4, "9P2000.L");
        CHECK(p9(a, 100, b, n, r, NULL) == 101, "Tversion");
        uint32_t fid = 1, afid = ~0u, uid = 0;
        memcpy(b, &fid, 4);
        memcpy(b + 4, &afid, 4);
        n = 8 + put_str(b + 8, "root");
        n += put_str(b + n, "");
        memcpy(b + n, &uid, 4);
        CHECK(p9(a, 104, b, n + 4, r, NULL) == 105, "Tattach");
        p9_walk(a, 1, 2, "keep");
        p9_lopen(a, 2, 0);
        p9_walk(a, 1, 3, "gone");
        p9_lopen(a, 3, 0);
        CHECK(p9_read(a, 2, buf, sizeof buf) == 10, "read keep");
        drive_gpu(a);
        /* input: pending (no eventq buffers) and scheduled */
        CHECK(!vmm_input_event(a, 0, 1, 30, 1) && !vmm_input_event(a, 0, 0, 0, 0) &&
                  !vmm_input_event_at(a, 1, 5000000, 3, 0, 100) && !vmm_input_event_at(a, 1, 5000000, 0, 0, 0),
              "input events: %s", vmm_last_error(a));
        CHECK(vmm__board_advance(a, 0) == 5000000, "the next input is not at 5 ms"); /* the keyboard's: pending */
    }
    uint64_t mem_a = vmm__board_host_mem(a);
    CHECK(!save(a, &sa, &sa_len), "saving A");
    memcpy(saved_queues, queues, sizeof queues); /* the driver's view of the rings in SA */
    capture(a, shot_a, sizeof shot_a, &frames_a);
    ram = malloc(AREA_LEN);
    CHECK(ram && !vmm_mem_read(a, AREA, ram, AREA_LEN), "RAM copy");
    vmm_destroy(a); /* its disk lock goes with it */

    /* 1. B, loaded from SA, is A: same sections, same screen, its queues go on from A's */
    vmm_vm *b = make_vm();
    CHECK(!vmm_mem_write(b, AREA, ram, AREA_LEN), "RAM copy");
    CHECK(!load(b, sa, sa_len, msg, sizeof msg), "loading SA: %s", msg);
    uint8_t *sb;
    size_t sb_len;
    CHECK(!save(b, &sb, &sb_len), "saving B");
    CHECK(sb_len == sa_len && !memcmp(sa, sb, sa_len), "B saves differently from A (%zu / %zu bytes)", sb_len, sa_len);
    free(sb);
    CHECK(vmm__board_host_mem(b) == mem_a, "the GPU budget's use differs after the load (%llu, was %llu)",
          (unsigned long long)vmm__board_host_mem(b), (unsigned long long)mem_a);
    capture(b, shot_b, sizeof shot_b, &frames_b);
    CHECK(frames_a == frames_b && frames_b == 1 && !memcmp(shot_a, shot_b, sizeof shot_a), "screens differ");
    CHECK(!vmm_screen_hold(b, 2), "hold after restore");
    uint64_t pending = 0;
    CHECK(!vmm_input_stats(b, 0, NULL, &pending, NULL) && pending == 2, "keyboard: %llu pending",
          (unsigned long long)pending);
    CHECK(vmm__board_advance(b, 4999999) == 5000000 && !vmm_input_stats(b, 1, NULL, &pending, NULL) && !pending,
          "tablet: scheduled input lost its time");
    CHECK(vmm__board_advance(b, 5000000) == UINT64_MAX && !vmm_input_stats(b, 1, NULL, &pending, NULL) && pending == 2,
          "tablet: %llu pending at 5 ms", (unsigned long long)pending);
    CHECK(p9_read(b, 2, buf, sizeof buf) == 10 && !strcmp(buf, "kept bytes"), "read keep after restore");
    CHECK(p9_read(b, 3, buf, sizeof buf) == 10, "read gone after restore");
    {
        uint8_t echo[2] = { 5, 6 }, back[2];
        CHECK(request(b, &queues[S_DUMMY][0], echo, 2, back, 2) == 2 && back[0] == 6, "dummy after restore");
    }
    vmm_destroy(b);

    /* 2. a path that vanished: its fid answers ESTALE, the other works */
    {
        char p[160];
        snprintf(p, sizeof p, "%s/gone", share);
        CHECK(!unlink(p), "unlink");
        memcpy(queues, saved_queues, sizeof queues); /* B's rings are A's at save time again */
        b = make_vm();
        CHECK(!vmm_mem_write(b, AREA, ram, AREA_LEN), "RAM copy");
        CHECK(!load(b, sa, sa_len, msg, sizeof msg), "loading SA without 'gone': %s", msg);
        CHECK(p9_read(b, 3, buf, sizeof buf) == -ESTALE, "read gone: not ESTALE");
        CHECK(p9_read(b, 2, buf, sizeof buf) == 10, "read keep");
        vmm_destroy(b);
    }

    /* 3. a changed disk is refused, naming it */
    {
        int fd = open(disk, O_WRONLY);
        CHECK(fd >= 0 && pwrite(fd, "x", 1, 4096) == 1 && !close(fd), "changing the disk");
        b = make_vm();
        CHECK(load(b, sa, sa_len, msg, sizeof msg) && strstr(msg, disk) && strstr(msg, "changed"),
              "a changed disk was not refused: '%s'", msg);
        vmm_destroy(b);
        fd = open(disk, O_WRONLY);
        CHECK(fd >= 0 && pwrite(fd, "", 1, 4096) == 1 && !close(fd), "changing the disk back");
    }
    fprintf(stderr, "fuzz_snapdev: round trip ok (%zu bytes of device sections)\n", sa_len);
    vmb = make_vm();
    return 0;
}

/* Walk the sections, recomputing each CRC (the payload may have been edited). */
static void fix_crcs(uint8_t *buf, size_t len)
{
    const size_t hdr = 4 + VMM_SNAP_NAME_LEN + 4 + 8 + 4 + 4;
    size_t at = 0;
    while (len - at >= hdr) {
        uint64_t plen;
        memcpy(&plen, buf + at + 4 + VMM_SNAP_NAME_LEN + 4, 8);
        if (plen > len - at - hdr)
            return;
        uint32_t crc = (uint32_t)crc32(0L, buf + at + hdr, (uInt)plen);
        memcpy(buf + at + 4 + VMM_SNAP_NAME_LEN + 12, &crc, 4);
        at += hdr + (size_t)plen;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(sa_len);
    if (!buf)
        return 0;
    memcpy(buf, sa, sa_len);
    /* 5-byte edits: a 4-byte offset into the stream and a byte to xor there */
    for (size_t i = 0; i + 5 <= size; i += 5) {
        uint32_t off;
        memcpy(&off, data + i, 4);
        buf[off % sa_len] ^= data[i + 4];
    }
    fix_crcs(buf, sa_len);
    if (!load(vmb, buf, sa_len, NULL, 0)) {
        uint8_t *again;
        size_t n;
        CHECK(!save(vmb, &again, &n), "a loaded state does not save");
        free(again);
        for (unsigned s = 0; s < NSLOTS; s++)
            for (unsigned q = 0; q < nqueues[s]; q++)
                w32(vmb, s, QNOTIFY, q);
    }
    free(buf);
    return 0;
}
