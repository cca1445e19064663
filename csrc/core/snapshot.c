/*
 * snapshot.c - vmm_snapshot_save / vmm_snapshot_restore: the file (docs/snapshots.md), the VM-level
 * sections (machine, boot, clock, vcpu.N, irqchip, console) around the board's device sections, and
 * guest RAM (non-zero pages, mapped copy-on-write from the file at restore).
 *
 * File layout (little-endian):
 *   0       header (HDR_BYTES used, HDR_SIZE reserved; CRC-32 over it)
 *   4096    the section stream (snap_stream.c: each section has its own CRC and version)
 *   ...     the RAM extent list: {u64 gpa offset, u64 length, u64 file offset} per run of non-zero
 *           4 KiB pages, ascending (CRC-32 in the header)
 *   ...     RAM data: each run at a file offset congruent to its RAM offset modulo 64 KiB, so that
 *           any host page size up to 64 KiB can map it (the gaps are holes in a sparse file)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../host/host.h"
#include "console.h"
#include "irqchip.h"
#include "layout.h"
#include "machine.h"
#include "run.h"
#include "snapshot.h"
#include "vm.h"

#define SNAP_MAGIC "VMMSNAP"       /* 8 bytes with its NUL */
#define SNAP_FORMAT 1              /* this file's layout; sections have versions of their own */
#define SNAP_WRITER "libvmm 0.1.0" /* vmmpy/_version.py (tests/test_snapshot.py checks they agree) */
#define HDR_SIZE 4096              /* the stream starts here */
#define HDR_BYTES 152              /* header fields, CRC last */
#define PAGE 4096u                 /* the RAM granule of the extent list */
#define ALIGN_RUN (64u << 10)      /* runs are congruent to their RAM offset modulo this */
#define MAX_STREAM (256ull << 20)  /* sections together */
#define EXTENT_BYTES 24
#define VCPU_VERSION 1
#define CLOCK_VERSION 1
#define BOOT_VERSION 1

struct snap_header {
    uint32_t format, header_size;
    char writer[32], arch[16], backend[16];
    uint32_t page_size, ncpus;
    uint64_t ram_size;
    uint32_t deterministic, nextents;
    uint64_t stream_off, stream_len, extents_off, data_off, file_size;
    uint32_t extents_crc;
};

struct extent {
    uint64_t gpa_off, len, file_off;
};

/* ---- little-endian helpers ---- */

static void put64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get64((const uint8_t[8]){ p[0], p[1], p[2], p[3] });
}

static void header_encode(const struct snap_header *h, uint8_t *b)
{
    memset(b, 0, HDR_BYTES);
    memcpy(b, SNAP_MAGIC, 8);
    put32(b + 8, h->format);
    put32(b + 12, h->header_size);
    memcpy(b + 16, h->writer, 32);
    memcpy(b + 48, h->arch, 16);
    memcpy(b + 64, h->backend, 16);
    put32(b + 80, h->page_size);
    put32(b + 84, h->ncpus);
    put64(b + 88, h->ram_size);
    put32(b + 96, h->deterministic);
    put32(b + 100, h->nextents);
    put64(b + 104, h->stream_off);
    put64(b + 112, h->stream_len);
    put64(b + 120, h->extents_off);
    put64(b + 128, h->data_off);
    put64(b + 136, h->file_size);
    put32(b + 144, h->extents_crc);
    put32(b + 148, (uint32_t)crc32(0L, b, 148));
}

static void str_field(char *dst, const uint8_t *src, size_t n)
{
    memcpy(dst, src, n);
    dst[n - 1] = 0;
}

static void header_decode(const uint8_t *b, struct snap_header *h)
{
    h->format = get32(b + 8);
    h->header_size = get32(b + 12);
    str_field(h->writer, b + 16, 32);
    str_field(h->arch, b + 48, 16);
    str_field(h->backend, b + 64, 16);
    h->page_size = get32(b + 80);
    h->ncpus = get32(b + 84);
    h->ram_size = get64(b + 88);
    h->deterministic = get32(b + 96);
    h->nextents = get32(b + 100);
    h->stream_off = get64(b + 104);
    h->stream_len = get64(b + 112);
    h->extents_off = get64(b + 120);
    h->data_off = get64(b + 128);
    h->file_size = get64(b + 136);
    h->extents_crc = get32(b + 144);
}

/* ---- the VM-level sections (one sync function each: saving and loading) ---- */

static void sync_boot(struct vmm_vm *vm, struct vmm_snap *s)
{
    struct vmm_boot_info *b = &vm->boot;
    void *dtb = vm->dtb;
    size_t len = vm->dtb_len;

    vmm__snap_bool(s, &vm->kernel.present);
    vmm__snap_u64(s, &vm->kernel.start);
    vmm__snap_u64(s, &vm->kernel.end);
    vmm__snap_u64(s, &vm->kernel.entry);
    uint64_t *f[] = { &b->entry,    &b->kernel_start, &b->kernel_end, &b->initrd_start, &b->initrd_end,
                      &b->dtb_addr, &b->dtb_size,     &b->ram_base,   &b->ram_size };
    for (unsigned i = 0; i < sizeof f / sizeof f[0]; i++)
        vmm__snap_u64(s, f[i]);
    vmm__snap_blob(s, &dtb, &len, 2u << 20);
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    b->size = sizeof *b;
    free(vm->dtb);
    vm->dtb = dtb;
    vm->dtb_len = len;
    if (b->ram_base != LAYOUT_RAM_BASE || b->ram_size != vm->ram_size || len != b->dtb_size)
        vmm__snap_fail(s, "the boot layout does not match the machine");
}

/* The clock and the counters: a restored guest's time continues from where it stood. */
static void sync_clock(struct vmm_vm *vm, struct vmm_snap *s)
{
    uint64_t clock = vmm__clock_ns(vm, NULL);
    struct vmm_stats *st = &vm->stats;
    uint64_t *f[] = { &st->mmio_exits,   &st->hvc_exits,  &st->sysreg_exits, &st->wfi_exits,
                      &st->guest_errors, &st->exceptions, &st->irqs };

    vmm__snap_u64(s, &clock);
    vmm__snap_u64(s, &vm->vtime_ns);
    for (unsigned i = 0; i < sizeof f / sizeof f[0]; i++)
        vmm__snap_u64(s, f[i]);
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    if (clock > VMM_CLOCK_HORIZON_NS || vm->vtime_ns > VMM_CLOCK_HORIZON_NS)
        vmm__snap_fail(s, "the clock is beyond the horizon");
    else if (!vm->deterministic)
        vm->clock_base_ns = vmm__now_ns() - clock; /* real time goes on from the saved clock */
}

/* The core's part of a vCPU: power, WFI, PSCI's pending reset, timers, instruction counts. */
static void sync_vcpu_core(struct vmm_vcpu *v, struct vmm_snap *s)
{
    uint64_t mpidr = v->mpidr;
    bool on = v->on, idle = v->idle, reset_pending = v->reset_pending; /* (atomics: no bool pointer) */

    vmm__snap_bool(s, &on);
    vmm__snap_bool(s, &idle);
    vmm__snap_bool(s, &reset_pending);
    v->on = on;
    v->idle = idle;
    v->reset_pending = reset_pending;
    vmm__snap_u64(s, &v->reset_entry);
    vmm__snap_u64(s, &v->reset_x0);
    vmm__snap_u64(s, &mpidr);
    for (unsigned t = 0; t < TIMER_COUNT; t++) {
        vmm__snap_u64(s, &v->timer[t].ctl);
        vmm__snap_u64(s, &v->timer[t].cval);
        vmm__snap_bool(s, &v->timer_level[t]);
    }
    uint64_t insns = __atomic_load_n(&v->insns, __ATOMIC_RELAXED); /* vmm_get_stats reads it from another thread */
    vmm__snap_u64(s, &insns);
    __atomic_store_n(&v->insns, insns, __ATOMIC_RELAXED);
    vmm__snap_u64(s, &v->quantum_start);
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    if (mpidr != v->mpidr)
        vmm__snap_fail(s, "MPIDR 0x%" PRIx64 " for vCPU %u", mpidr, v->id);
    else if (!v->on && v->idle) /* CPU_OFF clears `idle`, and a vCPU waits in WFI only while on */
        vmm__snap_fail(s, "vCPU %u is off and in WFI", v->id);
    else if ((v->timer[0].ctl | v->timer[1].ctl) & ~3ull)
        vmm__snap_fail(s, "a timer control register has reserved bits");
    else if (v->reset_pending && ((v->reset_entry & 3) || !vmm__gpa_ptr(v->vm, v->reset_entry, 4)))
        vmm__snap_fail(s, "pending CPU_ON entry 0x%" PRIx64 " is outside RAM", v->reset_entry);
    else if (v->quantum_start > v->insns)
        vmm__snap_fail(s, "the quantum starts after the instruction count");
    else if (v->vm->deterministic && v->insns - v->quantum_start > VMM_QUANTUM_INSNS)
        vmm__snap_fail(s, "vCPU %u's clock leads the VM's by more than a quantum", v->id);
    v->insn_limit = UINT64_MAX;
}

static int section(struct vmm_snap *s, const char *name, uint32_t version,
                   void (*fn)(struct vmm_vm *, struct vmm_snap *), struct vmm_vm *vm)
{
    if (vmm__snap_begin(s, name, &version))
        return vmm__snap_error(s);
    fn(vm, s);
    return vmm__snap_end(s);
}

static int vcpu_section(struct vmm_vm *vm, struct vmm_snap *s, unsigned i)
{
    struct vmm_vcpu *v = &vm->vcpus[i];
    char name[VMM_SNAP_NAME_LEN];
    uint32_t version = VCPU_VERSION;

    snprintf(name, sizeof name, "vcpu.%u", i);
    if (vmm__snap_begin(s, name, &version))
        return vmm__snap_error(s);
    sync_vcpu_core(v, s);
    if (!vmm__snap_error(s)) {
        int rc = vmm__snap_loading(s) ? vm->ops->vcpu_load(v, s) : vm->ops->vcpu_save(v, s);
        if (rc && !vmm__snap_error(s))
            vmm__snap_fail_code(s, rc, "the %s backend failed (%d)", vm->ops->name, rc);
    }
    return vmm__snap_end(s);
}

/* Our PMU's state (arm/pmu.c), for backends that use it; optional when loading (older snapshots). */
static int pmu_section(struct vmm_vm *vm, struct vmm_snap *s, unsigned i)
{
    char name[VMM_SNAP_NAME_LEN];
    uint32_t version = 1;

    snprintf(name, sizeof name, "pmu.%u", i);
    if (vmm__has_cap(vm->ops, VMM_CAP_HOST_CPU) || (vmm__snap_loading(s) && !vmm__snap_has(s, name)))
        return 0;
    if (vmm__snap_begin(s, name, &version))
        return vmm__snap_error(s);
    vmm__pmu_snap(&vm->vcpus[i], s);
    return vmm__snap_end(s);
}

static int chip_section(struct vmm_vm *vm, struct vmm_snap *s)
{
    uint32_t version = 2; /* 2: our GIC's LPIs and ITS */

    if (vmm__snap_begin(s, "irqchip", &version))
        return vmm__snap_error(s);
    struct vmm_irqchip *c = vm->irqchip;
    int rc = vmm__snap_loading(s) ? c->ops->load(c, s) : c->ops->save(c, s);
    if (rc && !vmm__snap_error(s))
        vmm__snap_fail_code(s, rc, "the %s interrupt controller failed (%d)", c->ops->name, rc);
    return vmm__snap_end(s);
}

static int can_snapshot(struct vmm_vm *vm);

static void console_sync(struct vmm_vm *vm, struct vmm_snap *s)
{
    vmm__console_snap(vm->console, s);
}

/*
 * Every section but "machine", in an order that works for loading: the interrupt controller before
 * the vCPUs (a vCPU's backend state applies the IRQ line the GIC computed), the devices last.
 */
static int core_sections(struct vmm_vm *vm, struct vmm_snap *s)
{
    section(s, "boot", BOOT_VERSION, sync_boot, vm);
    section(s, "clock", CLOCK_VERSION, sync_clock, vm);
    chip_section(vm, s);
    for (unsigned i = 0; i < vm->ncpus && !vmm__snap_error(s); i++)
        if (!vcpu_section(vm, s, i))
            pmu_section(vm, s, i);
    section(s, "console", 1, console_sync, vm);
    return vmm__snap_error(s) ? vmm__snap_error(s) : vmm__board_snap(vm, s);
}

static void console_input_sync(struct vmm_vm *vm, struct vmm_snap *s)
{
    vmm__console_snap_input(vm->console, s);
}

/*
 * A live VM's guest-visible state without RAM, the boot layout or the console's output (the host's side):
 * reverse execution's in-memory checkpoints (checkpoint.c), saved and loaded in place at a round boundary
 * of the deterministic loop.
 */
int vmm__snapshot_live(struct vmm_vm *vm, struct vmm_snap *s)
{
    int err = can_snapshot(vm);

    if (err)
        return err;
    section(s, "clock", CLOCK_VERSION, sync_clock, vm);
    chip_section(vm, s);
    for (unsigned i = 0; i < vm->ncpus && !vmm__snap_error(s); i++)
        if (!vcpu_section(vm, s, i))
            pmu_section(vm, s, i);
    section(s, "console-input", 1, console_input_sync, vm);
    return vmm__snap_error(s) ? vmm__snap_error(s) : vmm__board_snap(vm, s);
}

/* ---- saving ---- */

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    for (unsigned i = 0; i < PAGE / 8; i++)
        if (w[i])
            return false;
    return true;
}

/* Runs of non-zero pages (*out malloc'd). Untouched RAM reads as zero without being allocated. */
static int find_extents(struct vmm_vm *vm, struct extent **out, uint32_t *n)
{
    size_t cap = 64, k = 0;
    struct extent *e = malloc(cap * sizeof *e);

    if (!e)
        return VMM_ENOMEM;
    for (uint64_t off = 0; off < vm->ram_size; off += PAGE) {
        if (page_is_zero(vm->ram + off))
            continue;
        if (k && e[k - 1].gpa_off + e[k - 1].len == off) {
            e[k - 1].len += PAGE;
            continue;
        }
        if (k == cap) {
            struct extent *ne = realloc(e, 2 * cap * sizeof *e);
            if (!ne) {
                free(e);
                return VMM_ENOMEM;
            }
            e = ne;
            cap *= 2;
        }
        e[k++] = (struct extent){ .gpa_off = off, .len = PAGE };
    }
    *out = e;
    *n = (uint32_t)k;
    return 0;
}

static int write_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Lay the runs out after the extent list and encode the list; returns the file's size. */
static uint64_t place_extents(struct extent *e, uint32_t n, uint64_t start, uint8_t *list)
{
    uint64_t at = start;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t base = (at + ALIGN_RUN - 1) / ALIGN_RUN * ALIGN_RUN;
        e[i].file_off = base + e[i].gpa_off % ALIGN_RUN;
        if (e[i].file_off < at)
            e[i].file_off += ALIGN_RUN;
        at = e[i].file_off + e[i].len;
        put64(list + (size_t)i * EXTENT_BYTES, e[i].gpa_off);
        put64(list + (size_t)i * EXTENT_BYTES + 8, e[i].len);
        put64(list + (size_t)i * EXTENT_BYTES + 16, e[i].file_off);
    }
    return at;
}

/* Header, stream, extent list and RAM into fd. */
static int write_file(struct vmm_vm *vm, int fd, const struct vmm_snap *s, struct extent *e, uint32_t n)
{
    struct snap_header h = { .format = SNAP_FORMAT,
                             .header_size = HDR_SIZE,
                             .page_size = PAGE,
                             .ncpus = vm->ncpus,
                             .ram_size = vm->ram_size,
                             .deterministic = vm->deterministic,
                             .nextents = n,
                             .stream_off = HDR_SIZE,
                             .stream_len = s->len };
    uint8_t hdr[HDR_BYTES];
    size_t list_len = (size_t)n * EXTENT_BYTES;
    uint8_t *list = malloc(list_len ? list_len : 1);
    int err;

    if (!list)
        return ENOMEM;
    snprintf(h.writer, sizeof h.writer, "%s", SNAP_WRITER);
    snprintf(h.arch, sizeof h.arch, "aarch64");
    snprintf(h.backend, sizeof h.backend, "%s", vm->ops->name);
    h.extents_off = (HDR_SIZE + s->len + 7) / 8 * 8;
    h.data_off = h.extents_off + list_len;
    h.file_size = place_extents(e, n, h.data_off, list);
    h.extents_crc = (uint32_t)crc32(0L, list, (uInt)list_len);
    header_encode(&h, hdr);
    err = write_all(fd, hdr, sizeof hdr, 0);
    if (!err)
        err = write_all(fd, s->buf, s->len, HDR_SIZE);
    if (!err)
        err = write_all(fd, list, list_len, h.extents_off);
    for (uint32_t i = 0; i < n && !err; i++)
        err = write_all(fd, vm->ram + e[i].gpa_off, e[i].len, e[i].file_off);
    if (!err && ftruncate(fd, (off_t)h.file_size))
        err = errno;
    free(list);
    return err;
}

/* Mark the VM busy (a vmm_run meanwhile gets VMM_EBUSY); *prev is the state to go back to. */
static int claim(struct vmm_vm *vm, enum vmm_vm_state *prev)
{
    pthread_mutex_lock(&vm->lock);
    enum vmm_vm_state st = *prev = vm->state;
    bool ok = (st == VM_STATE_PREPARED || st == VM_STATE_PAUSED) && !vm->dbg_busy;
    if (ok)
        vm->state = VM_STATE_RUNNING;
    pthread_mutex_unlock(&vm->lock);
    if (ok)
        return 0;
    if (st == VM_STATE_RUNNING)
        return vmm__set_error(vm, VMM_EBUSY, "cannot snapshot while the VM runs: stop it first");
    if (st == VM_STATE_PREPARED || st == VM_STATE_PAUSED)
        return vmm__set_error(vm, VMM_EBUSY, "cannot snapshot while the debugger accesses the VM");
    if (st == VM_STATE_NEW)
        return vmm__set_error(vm, VMM_ESTATE, "cannot snapshot a VM that is not prepared yet (vmm_prepare)");
    return vmm__set_error(vm, VMM_ESTATE, "cannot snapshot a VM that has ended (powered off, reset or failed)");
}

static void release(struct vmm_vm *vm, enum vmm_vm_state state)
{
    pthread_mutex_lock(&vm->lock);
    vm->state = state;
    pthread_mutex_unlock(&vm->lock);
}

static int can_snapshot(struct vmm_vm *vm)
{
    if (!vm->ops->vcpu_save || !vm->ops->vcpu_load)
        return vmm__set_error(vm, VMM_ENOTSUP, "the %s backend cannot save vCPU state (snapshots need soft)",
                              vm->ops->name);
    if (!vm->irqchip->ops->save)
        return vmm__set_error(vm, VMM_ENOTSUP, "the %s interrupt controller cannot be snapshotted",
                              vm->irqchip->ops->name);
    if (vm->machine.incomplete)
        return vmm__set_error(vm, VMM_ENOMEM, "a device call could not be recorded (out of memory): no snapshot");
    return 0;
}

static int save_locked(struct vmm_vm *vm, const char *path)
{
    struct vmm_snap s;
    struct extent *e = NULL;
    uint32_t n = 0;
    char tmp[4200];
    int fd, err;

    if ((err = can_snapshot(vm)))
        return err;
    vmm__snap_init_save(&s);
    vmm__machine_save(vm, &s);
    if (!vmm__snap_error(&s))
        core_sections(vm, &s);
    if ((err = vmm__snap_error(&s))) {
        vmm__set_error(vm, err, "snapshot: %s", s.errmsg);
        vmm__snap_free(&s);
        return err;
    }
    if (find_extents(vm, &e, &n)) {
        vmm__snap_free(&s);
        return vmm__set_error(vm, VMM_ENOMEM, "snapshot: out of memory");
    }
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp || (fd = mkstemp(tmp)) < 0) {
        err = vmm__set_error(vm, errno == ENOENT ? VMM_ENOENT : VMM_EIO, "%s: cannot create the snapshot: %s", path,
                             strerror(errno));
    } else {
        int werr = write_file(vm, fd, &s, e, n);
        if (close(fd) && !werr)
            werr = errno;
        if (!werr && rename(tmp, path))
            werr = errno;
        if (werr) {
            unlink(tmp);
            err = vmm__set_error(vm, VMM_EIO, "%s: cannot write the snapshot: %s", path, strerror(werr));
        }
    }
    free(e);
    vmm__snap_free(&s);
    return err;
}

VMM_EXPORT int vmm_snapshot_save(vmm_vm *vm, const char *path)
{
    if (!vm || !path || !*path)
        return vm ? vmm__set_error(vm, VMM_EINVAL, "snapshot: no path") : VMM_EINVAL;
    enum vmm_vm_state state;
    int rc = claim(vm, &state);
    if (rc)
        return rc;
    rc = save_locked(vm, path);
    release(vm, state);
    if (!rc)
        vmm__log(vm, VMM_LOG_DEBUG, "snapshot", "saved %s", path);
    return rc;
}

/* ---- restoring ---- */

struct restore {
    const char *path;
    int fd;
    uint64_t size; /* of the file */
    struct snap_header h;
    uint8_t *stream;
    struct extent *e;
    char *err; /* caller's buffer */
    size_t errlen;
};

static int fail(struct restore *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct restore *r, int code, const char *fmt, ...)
{
    va_list ap;
    char msg[VMM_ERRMSG_LEN];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->err && r->errlen)
        snprintf(r->err, r->errlen, "%s: %s", r->path, msg);
    return code;
}

static int read_all(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* The header: what the file is, and that its parts lie inside it. */
static int check_header(struct restore *r)
{
    uint8_t b[HDR_BYTES];
    struct snap_header *h = &r->h;

    if (r->size < HDR_BYTES || read_all(r->fd, b, sizeof b, 0))
        return fail(r, VMM_EFORMAT, "not a vmmpy snapshot (%llu bytes)", (unsigned long long)r->size);
    if (memcmp(b, SNAP_MAGIC, 8))
        return fail(r, VMM_EFORMAT, "not a vmmpy snapshot");
    if (get32(b + 148) != (uint32_t)crc32(0L, b, 148))
        return fail(r, VMM_EFORMAT, "the snapshot header is corrupt (checksum mismatch)");
    header_decode(b, h);
    if (h->format != SNAP_FORMAT)
        return fail(r, VMM_ENOTSUP, "snapshot format version %u; this libvmm (%s) reads version %d", h->format,
                    SNAP_WRITER, SNAP_FORMAT);
    if (strcmp(h->arch, "aarch64"))
        return fail(r, VMM_EARCH, "a snapshot of an %s machine; this libvmm runs aarch64", h->arch);
    if (h->file_size > r->size)
        return fail(r, VMM_EFORMAT, "truncated: %llu bytes, the header says %llu", (unsigned long long)r->size,
                    (unsigned long long)h->file_size);
    if (h->file_size < HDR_SIZE || h->header_size != HDR_SIZE || h->stream_off != HDR_SIZE || h->page_size != PAGE ||
        !h->ncpus || h->ncpus > VMM_MAX_CPUS || h->deterministic > 1 || !h->ram_size || h->ram_size % PAGE ||
        h->ram_size > LAYOUT_RAM_MAX || h->stream_len > MAX_STREAM || h->stream_len > h->file_size - HDR_SIZE ||
        h->extents_off < HDR_SIZE + h->stream_len || h->extents_off > h->file_size ||
        h->nextents > h->ram_size / PAGE || (uint64_t)h->nextents * EXTENT_BYTES > h->file_size - h->extents_off)
        return fail(r, VMM_EFORMAT, "the snapshot header is inconsistent (corrupt)");
    return 0;
}

/* The extent list: ascending, page-granular runs inside RAM whose data lies inside the file. */
static int read_extents(struct restore *r)
{
    const struct snap_header *h = &r->h;
    size_t len = (size_t)h->nextents * EXTENT_BYTES;
    uint8_t *b = malloc(len ? len : 1);
    uint64_t next_gpa = 0;

    r->e = calloc(h->nextents ? h->nextents : 1, sizeof *r->e);
    if (!b || !r->e) {
        free(b);
        return fail(r, VMM_ENOMEM, "out of memory");
    }
    int rc = read_all(r->fd, b, len, h->extents_off) ? fail(r, VMM_EIO, "cannot read the RAM extent list") : 0;
    if (!rc && (uint32_t)crc32(0L, b, (uInt)len) != h->extents_crc)
        rc = fail(r, VMM_EFORMAT, "the RAM extent list is corrupt (checksum mismatch)");
    for (uint32_t i = 0; i < h->nextents && !rc; i++) {
        struct extent *e = &r->e[i];
        e->gpa_off = get64(b + (size_t)i * EXTENT_BYTES);
        e->len = get64(b + (size_t)i * EXTENT_BYTES + 8);
        e->file_off = get64(b + (size_t)i * EXTENT_BYTES + 16);
        if (!e->len || e->gpa_off % PAGE || e->len % PAGE || e->file_off % PAGE || e->gpa_off < next_gpa ||
            e->gpa_off > h->ram_size || e->len > h->ram_size - e->gpa_off)
            rc = fail(r, VMM_EFORMAT, "RAM extent %u is not inside guest RAM (corrupt)", i);
        else if (e->file_off < h->extents_off + len || e->file_off > h->file_size ||
                 e->len > h->file_size - e->file_off)
            rc = fail(r, VMM_EFORMAT, "RAM extent %u lies beyond the end of the file (truncated or corrupt)", i);
        next_gpa = e->gpa_off + e->len;
    }
    free(b);
    return rc;
}

/* Guest RAM from the file: mapped copy-on-write where host pages line up, read where they do not. */
static int map_ram(struct restore *r, struct vmm_vm *vm)
{
    size_t hps = vmm__host_page_size();

    for (uint32_t i = 0; i < r->h.nextents; i++) {
        const struct extent *e = &r->e[i];
        uint64_t a = (e->gpa_off + hps - 1) / hps * hps, b = (e->gpa_off + e->len) / hps * hps;
        bool mappable = a < b && (e->file_off + (a - e->gpa_off)) % hps == 0;
        if (!mappable)
            a = b = e->gpa_off + e->len; /* all of it read below */
        int merr =
            mappable ? vmm__host_ram_map_file(vm->ram + a, (size_t)(b - a), r->fd, e->file_off + (a - e->gpa_off)) : 0;
        if (merr)
            return fail(r, VMM_EIO, "cannot map guest RAM from the snapshot: %s", strerror(merr));
        if (read_all(r->fd, vm->ram + e->gpa_off, (size_t)(a - e->gpa_off), e->file_off) ||
            read_all(r->fd, vm->ram + b, (size_t)(e->gpa_off + e->len - b), e->file_off + (b - e->gpa_off)))
            return fail(r, VMM_EIO, "cannot read guest RAM from the snapshot");
    }
    vm->ram_from_file = r->h.nextents != 0;
    return 0;
}

static const char * override(const char *const *paths, uint32_t n, unsigned i, const char *recorded)
{
    return paths && i < n && paths[i] ? paths[i] : recorded;
}

/* Paths given at restore replace the recorded ones (by index among disks / shares). */
static int apply_overrides(struct vmm_machine *m, const struct vmm_restore_config *rc)
{
    unsigned disk = 0, share = 0;
    for (unsigned i = 0; rc && i < m->n; i++) {
        struct vmm_machine_dev *d = &m->dev[i];
        const char *p = d->kind == VMM_MK_DISK    ? override(rc->disk_paths, rc->ndisk_paths, disk++, d->path)
                        : d->kind == VMM_MK_SHARE ? override(rc->share_paths, rc->nshare_paths, share++, d->path)
                                                  : d->path;
        if (p != d->path) {
            char *np = strdup(p);
            if (!np)
                return VMM_ENOMEM;
            free(d->path);
            d->path = np;
        }
    }
    return 0;
}

/* The recorded machine, checked against the header and the caller's wishes. */
static int load_machine(struct restore *r, struct vmm_snap *s, const struct vmm_restore_config *rc,
                        struct vmm_machine_cfg *cfg, struct vmm_machine *m)
{
    if (vmm__machine_load(s, cfg, m))
        return fail(r, vmm__snap_error(s), "%s", s->errmsg);
    if (cfg->ram_size != r->h.ram_size || cfg->ncpus != r->h.ncpus || cfg->deterministic != r->h.deterministic ||
        strcmp(cfg->backend, r->h.backend))
        return fail(r, VMM_EFORMAT, "the machine section disagrees with the header (corrupt)");
    const char *want = rc ? rc->backend : NULL;
    if (want && *want && strcmp(want, "auto") && strcmp(want, cfg->backend))
        return fail(r, VMM_ENOBACKEND, "the snapshot was made on the %s backend; it cannot be restored on %s",
                    cfg->backend, want);
    if (apply_overrides(m, rc))
        return fail(r, VMM_ENOMEM, "out of memory");
    return 0;
}

/* Create the VM as recorded and add its devices (RAM and state come after). */
static int build_vm(struct restore *r, const struct vmm_machine_cfg *cfg, const struct vmm_machine *m,
                    const struct vmm_restore_config *rc, struct vmm_vm **out)
{
    struct vmm_config c = { .size = sizeof c,
                            .ncpus = cfg->ncpus,
                            .ram_size = cfg->ram_size,
                            .backend = cfg->backend,
                            .cpu_model = cfg->cpu_model,
                            .deterministic = cfg->deterministic,
                            .transport = cfg->transport,
                            .its = cfg->its };
    char msg[VMM_ERRMSG_LEN];
    int err;

    if (rc) {
        c.log_fn = rc->log_fn;
        c.log_opaque = rc->log_opaque;
        c.log_level = rc->log_level;
    }
    if ((err = vmm_create(&c, out, msg, sizeof msg)))
        return fail(r, err, "%s", msg);
    if ((err = vmm__machine_replay(*out, m))) {
        fail(r, err, "%s", vmm_last_error(*out));
        vmm_destroy(*out);
        *out = NULL;
    }
    return err;
}

static int restore_state(struct restore *r, struct vmm_vm *vm, struct vmm_snap *s)
{
    int err;

    if ((err = can_snapshot(vm)))
        return fail(r, err, "%s", vm->errmsg);
    if ((err = map_ram(r, vm)))
        return err;
    if ((err = core_sections(vm, s)))
        return fail(r, err, "%s", s->errmsg);
    vm->state = VM_STATE_PAUSED;
    return 0;
}

static int restore(struct restore *r, const struct vmm_restore_config *rc, struct vmm_vm **out)
{
    struct vmm_machine_cfg cfg;
    struct vmm_machine m = { 0 };
    struct vmm_snap s;
    struct stat st;
    int err;

    if (fstat(r->fd, &st) || !S_ISREG(st.st_mode))
        return fail(r, VMM_EFORMAT, "not a regular file");
    r->size = (uint64_t)st.st_size;
    if ((err = check_header(r)) || (err = read_extents(r)))
        return err;
    if (!(r->stream = malloc(r->h.stream_len ? r->h.stream_len : 1)))
        return fail(r, VMM_ENOMEM, "out of memory for %llu bytes of state", (unsigned long long)r->h.stream_len);
    if (read_all(r->fd, r->stream, r->h.stream_len, r->h.stream_off))
        return fail(r, VMM_EIO, "cannot read the snapshot");
    vmm__snap_init_load(&s, r->stream, r->h.stream_len);
    if ((err = load_machine(r, &s, rc, &cfg, &m)) || (err = build_vm(r, &cfg, &m, rc, out))) {
        vmm__machine_free(&m);
        return err;
    }
    vmm__machine_free(&m);
    if ((err = restore_state(r, *out, &s))) {
        vmm_destroy(*out);
        *out = NULL;
    }
    return err;
}

VMM_EXPORT int vmm_snapshot_restore(const char *path, const struct vmm_restore_config *rc, vmm_vm **out, char *errbuf,
                                    size_t errlen)
{
    struct restore r = { .path = path, .err = errbuf, .errlen = errlen, .fd = -1 };
    struct vmm_restore_config c = { 0 };

    if (!out)
        return VMM_EINVAL;
    *out = NULL;
    if (!path || !*path)
        return fail(&r, VMM_EINVAL, "no snapshot path");
    if (rc && (rc->size < sizeof(uint32_t) || rc->size > 4096))
        return fail(&r, VMM_EINVAL, "struct vmm_restore_config: set .size = sizeof(struct vmm_restore_config)");
    if (rc) {
        memcpy(&c, rc, rc->size < sizeof c ? rc->size : sizeof c);
        rc = &c;
    }
    if ((r.fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return fail(&r, errno == ENOENT ? VMM_ENOENT : VMM_EIO, "cannot open the snapshot: %s", strerror(errno));
    int err = restore(&r, rc, out);
    close(r.fd); /* the mappings keep the file */
    free(r.stream);
    free(r.e);
    return err;
}
