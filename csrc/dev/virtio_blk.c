/* virtio_blk.c - virtio-blk (virtio 1.2 §5.2) over a raw image file: vmm_add_disk(). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/board.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "../host/host.h"
#include "virtio.h"

/*
 * One request queue; requests are served synchronously on the vCPU thread
 * that notifies (pread/pwrite straight into and out of guest RAM). Sectors
 * are 512 bytes; the image size must be a multiple of that. A read-only
 * disk is opened O_RDONLY and offers VIRTIO_BLK_F_RO; every write-like
 * request on it fails with IOERR. The image is flock()ed (shared when
 * read-only, exclusive otherwise) so that two VMs cannot write one image.
 *
 * Malformed chains: no writable byte for the status -> DEVICE_NEEDS_RESET
 * (nothing can be reported); a header shorter than 16 bytes, or data not a
 * whole number of sectors -> IOERR; unknown request types -> UNSUPP.
 */

#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_WZ_F_UNMAP 1u

#define BLK_SECTOR 512u
#define BLK_QUEUE_MAX 256
#define BLK_SEG_MAX (VIRTQ_MAX_SEGS - 2) /* data segments: the chain less header and status */
#define BLK_DWZ_SECTORS_MAX (1u << 22)   /* 2 GiB per discard / write-zeroes segment */
#define BLK_DWZ_SEG_MAX 64u              /* segments per discard / write-zeroes request */
#define BLK_DISCARD_ALIGN 8u             /* sectors (4 KiB) */

/* §5.2.4, up to and including write_zeroes_may_unmap (little-endian host: stored as is) */
struct blk_config {
    uint64_t capacity;
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads, sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp, alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
    uint8_t writeback, unused0;
    uint16_t num_queues;
    uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
    uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap, unused1[3];
} __attribute__((packed));

struct blk_req_hdr {
    uint32_t type, reserved;
    uint64_t sector;
};

struct blk_dwz_seg {
    uint64_t sector;
    uint32_t num_sectors, flags;
};

/* Snapshot identity of a writable disk (blk_snap below): chunks of at least 1 MiB, at most this many. */
#define BLK_CHUNK_SHIFT_MIN 20
#define BLK_CHUNKS_MAX (1u << 16)

struct vmm_virtio_blk {
    struct vmm_vm *vm;
    struct vmm_virtio *v;
    int fd;
    bool readonly;
    uint64_t capacity;   /* sectors */
    char path[PATH_MAX]; /* as given to vmm_add_disk: named in snapshot errors */
    /* writable disks: the chunks the guest wrote (a bit per 1 << chunk_shift bytes), for the snapshot hash */
    unsigned chunk_shift;
    uint64_t *written;
    struct blk_config cfg;
    char id[VIRTIO_BLK_ID_BYTES];
    struct virtq_chain chain;
};

static const uint8_t zeros[64 * 1024];

static void blk_config_read(void *dev, uint32_t off, void *buf, uint32_t len)
{
    struct vmm_virtio_blk *b = dev;
    memcpy(buf, (uint8_t *)&b->cfg + off, len);
}

/* Is [sector, sector + n) inside the disk? (overflow-safe) */
static bool blk_range_ok(const struct vmm_virtio_blk *b, uint64_t sector, uint64_t n)
{
    return sector <= b->capacity && n <= b->capacity - sector;
}

/* The guest wrote (or discarded, zeroed) [pos, pos + len): mark its chunks for the snapshot hash. */
static void blk_mark(struct vmm_virtio_blk *b, uint64_t pos, uint64_t len)
{
    if (!len || !b->written)
        return;
    for (uint64_t c = pos >> b->chunk_shift, last = (pos + len - 1) >> b->chunk_shift; c <= last; c++)
        b->written[c / 64] |= 1ULL << (c % 64);
}

/*
 * Move `len` bytes between the file at `pos` and the chain's segments
 * [first, first + nseg), starting `skip` bytes into them. Returns false on
 * an I/O error or a short transfer.
 */
static bool blk_xfer(struct vmm_virtio_blk *b, bool write, const struct virtq_chain *c, unsigned first, unsigned nseg,
                     uint64_t skip, uint64_t len, uint64_t pos)
{
    if (write)
        blk_mark(b, pos, len); /* before: a short write changed the file too */
    for (unsigned i = first; i < first + nseg && len; i++) {
        uint64_t seglen = c->seg[i].len;
        if (skip >= seglen) {
            skip -= seglen;
            continue;
        }
        uint8_t *p = c->seg[i].host + skip;
        uint64_t n = seglen - skip;
        skip = 0;
        if (n > len)
            n = len;
        while (n) {
            size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
            ssize_t r = write ? pwrite(b->fd, p, chunk, (off_t)pos) : pread(b->fd, p, chunk, (off_t)pos);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return false;
            p += r;
            pos += (uint64_t)r;
            n -= (uint64_t)r;
            len -= (uint64_t)r;
        }
    }
    return len == 0;
}

static bool blk_write_zeros(struct vmm_virtio_blk *b, uint64_t pos, uint64_t len)
{
    while (len) {
        size_t chunk = len > sizeof zeros ? sizeof zeros : (size_t)len;
        ssize_t r = pwrite(b->fd, zeros, chunk, (off_t)pos);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        pos += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return true;
}

/* DISCARD and WRITE_ZEROES: an array of 16-byte segments after the header. */
static uint8_t blk_dwz(struct vmm_virtio_blk *b, const struct virtq_chain *c, bool discard)
{
    uint64_t data = c->read_len - sizeof(struct blk_req_hdr);
    uint64_t nseg = data / sizeof(struct blk_dwz_seg);

    if (b->readonly)
        return VIRTIO_BLK_S_IOERR;
    if (data % sizeof(struct blk_dwz_seg) || !nseg || nseg > BLK_DWZ_SEG_MAX)
        return VIRTIO_BLK_S_UNSUPP;
    for (uint64_t i = 0; i < nseg; i++) {
        struct blk_dwz_seg s;
        if (vmm__virtq_read(c, sizeof(struct blk_req_hdr) + i * sizeof s, &s, sizeof s) != sizeof s)
            return VIRTIO_BLK_S_IOERR;
        if (s.flags & ~VIRTIO_BLK_WZ_F_UNMAP || (discard && s.flags))
            return VIRTIO_BLK_S_UNSUPP;
        if (s.num_sectors > BLK_DWZ_SECTORS_MAX || !blk_range_ok(b, s.sector, s.num_sectors))
            return VIRTIO_BLK_S_IOERR;
        off_t pos = (off_t)(s.sector * BLK_SECTOR), len = (off_t)s.num_sectors * BLK_SECTOR;
        if (!len)
            continue;
        blk_mark(b, (uint64_t)pos, (uint64_t)len);
        if (discard) {
            /* advisory: the contents of discarded sectors are undefined, so failing to punch is fine */
            (void)vmm__host_punch_hole(b->fd, pos, len);
            continue;
        }
        /* both leave the range reading as zeros; where the host can do neither, write them */
        int e = s.flags & VIRTIO_BLK_WZ_F_UNMAP ? vmm__host_punch_hole(b->fd, pos, len)
                                                : vmm__host_zero_range(b->fd, pos, len);
        if (e && !blk_write_zeros(b, (uint64_t)pos, (uint64_t)len))
            return VIRTIO_BLK_S_IOERR;
    }
    return VIRTIO_BLK_S_OK;
}

/* Serve one chain; returns the bytes written into it (data + status), or -1 for a chain with no status byte. */
static int64_t blk_request(struct vmm_virtio_blk *b, const struct virtq_chain *c)
{
    struct blk_req_hdr h;
    uint8_t status = VIRTIO_BLK_S_OK;
    uint64_t written = 0;

    if (!c->write_len)
        return -1;
    uint64_t data_in = c->write_len - 1; /* writable bytes before the status byte */
    if (vmm__virtq_read(c, 0, &h, sizeof h) != sizeof h) {
        vmm__guest_error(b->vm, "virtio-blk", "request header shorter than %zu bytes", sizeof h);
        status = VIRTIO_BLK_S_IOERR;
        goto done;
    }
    uint64_t data_out = c->read_len - sizeof h; /* readable bytes after the header */
    switch (h.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool out = h.type == VIRTIO_BLK_T_OUT;
        uint64_t len = out ? data_out : data_in;
        if (len % BLK_SECTOR || !blk_range_ok(b, h.sector, len / BLK_SECTOR) || (out && b->readonly)) {
            status = VIRTIO_BLK_S_IOERR;
            break;
        }
        if (out ? !blk_xfer(b, true, c, 0, c->nread, sizeof h, len, h.sector * BLK_SECTOR)
                : !blk_xfer(b, false, c, c->nread, c->nwrite, 0, len, h.sector * BLK_SECTOR))
            status = VIRTIO_BLK_S_IOERR;
        else if (!out)
            written = len;
        break;
    }
    case VIRTIO_BLK_T_FLUSH:
        if (!b->readonly && fsync(b->fd))
            status = VIRTIO_BLK_S_IOERR;
        break;
    case VIRTIO_BLK_T_GET_ID: {
        size_t n = data_in < VIRTIO_BLK_ID_BYTES ? (size_t)data_in : VIRTIO_BLK_ID_BYTES;
        written = vmm__virtq_write(c, 0, b->id, n);
        break;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        status = blk_dwz(b, c, h.type == VIRTIO_BLK_T_DISCARD);
        break;
    default:
        status = VIRTIO_BLK_S_UNSUPP;
        break;
    }
done:
    vmm__virtq_write(c, c->write_len - 1, &status, 1);
    return (int64_t)written + 1;
}

static void blk_queue_notify(void *dev, unsigned qi)
{
    struct vmm_virtio_blk *b = dev;
    struct vmm_virtq *q = vmm__virtio_queue(b->v, qi);
    struct virtq_chain *c = &b->chain;
    bool pushed = false;

    while (vmm__virtq_pop(q, c) > 0) {
        int64_t written = blk_request(b, c);
        if (written < 0) {
            vmm__virtio_needs_reset(b->v, "virtio-blk: request without a writable status byte");
            break;
        }
        vmm__virtq_push(q, c, written > UINT32_MAX ? UINT32_MAX : (uint32_t)written);
        pushed = true;
    }
    if (pushed)
        vmm__virtio_notify(b->v, qi);
}

static void blk_destroy(void *dev)
{
    struct vmm_virtio_blk *b = dev;
    if (!b)
        return;
    if (b->fd >= 0) {
        if (!b->readonly)
            fsync(b->fd); /* nothing written is lost */
        close(b->fd);
    }
    free(b->written);
    free(b);
}

/*
 * ---- snapshots ----
 *
 * The request queue is served completely when notified, so a snapshot has no request in flight: the
 * section is the virtio core's state plus what identifies the disk. Design (docs/snapshots.md, "Disks"):
 *
 * - A writable disk is fsync()ed at save. The snapshot records its path, size, mtime (ns) and a 64-bit
 *   hash of the chunks the guest wrote during the VM's life (a bitmap kept by every write, discard and
 *   write-zeroes, itself saved so it spans restores) plus the first chunk (the partition table and
 *   superblock: a different image of the same size shows there). Restore re-opens the disk by path
 *   (vmm_add_disk, replayed) and refuses it, with one line naming it, if its size, mtime or hash differ:
 *   anything that wrote it since, the original VM included, changed its mtime; a copy that kept the
 *   mtime (cp -p) but not the guest's writes fails the hash. Cost: hashing what the guest wrote (not the
 *   whole image: restore must stay fast), and storing nothing of the disk's contents in the snapshot.
 *   What it cannot see: a change that keeps size and mtime in a chunk the guest never wrote.
 * - A read-only disk is re-attached by path (the host may point it elsewhere): only its capacity, which
 *   the guest saw in config space, must match.
 */
static uint64_t blk_hash_mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

/* The hash of chunk 0 and every written chunk, read back from the file. 0 or an errno. */
static int blk_hash(struct vmm_virtio_blk *b, uint64_t size, uint64_t *out)
{
    static const size_t bufsz = 1u << BLK_CHUNK_SHIFT_MIN;
    uint64_t h = blk_hash_mix(0x766d6d7079626c6bULL, size),
             nchunks = (size + (1ULL << b->chunk_shift) - 1) >> b->chunk_shift;
    uint8_t *buf = malloc(bufsz);

    if (!buf)
        return ENOMEM;
    for (uint64_t c = 0; c < nchunks; c++) {
        if (c && !(b->written[c / 64] >> (c % 64) & 1))
            continue;
        h = blk_hash_mix(h, c);
        uint64_t pos = c << b->chunk_shift, end = pos + (1ULL << b->chunk_shift);
        if (end > size)
            end = size;
        while (pos < end) {
            size_t want = end - pos < bufsz ? (size_t)(end - pos) : bufsz;
            ssize_t r = pread(b->fd, buf, want, (off_t)pos);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                int e = r < 0 ? errno : EIO;
                free(buf);
                return e;
            }
            size_t i = 0;
            for (; i + 8 <= (size_t)r; i += 8) {
                uint64_t w;
                memcpy(&w, buf + i, 8);
                h = blk_hash_mix(h, w);
            }
            for (; i < (size_t)r; i++)
                h = blk_hash_mix(h, buf[i]);
            pos += (uint64_t)r;
        }
    }
    free(buf);
    *out = h;
    return 0;
}

static uint64_t blk_mtime_ns(const struct stat *st)
{
    struct timespec t[3];
    vmm__host_stat_times(st, t);
    return (uint64_t)t[1].tv_sec * 1000000000ULL + (uint64_t)t[1].tv_nsec;
}

static int blk_snap(void *dev, struct vmm_snap *s)
{
    struct vmm_virtio_blk *b = dev;
    bool loading = vmm__snap_loading(s);
    char path[PATH_MAX];
    bool readonly = b->readonly;
    uint64_t capacity = b->capacity, size = 0, mtime = 0, hash = 0;
    uint32_t chunk_shift = b->chunk_shift;
    uint64_t nwords = b->written ? ((b->capacity * BLK_SECTOR >> b->chunk_shift) + 64) / 64 : 0;
    struct stat st;
    int e;

    if (vmm__virtio_snap(b->v, s))
        return vmm__snap_error(s);
    vmm__virtio_lock(b->v);
    if (!loading) {
        snprintf(path, sizeof path, "%s", b->path);
        if (!readonly) {
            if (fsync(b->fd) || fstat(b->fd, &st)) {
                e = errno;
                vmm__virtio_unlock(b->v);
                return vmm__snap_fail_code(s, VMM_EIO, "disk %s: cannot flush it: %s", b->path, strerror(e));
            }
            size = (uint64_t)st.st_size;
            mtime = blk_mtime_ns(&st);
            if ((e = blk_hash(b, size, &hash))) {
                vmm__virtio_unlock(b->v);
                return vmm__snap_fail_code(s, VMM_EIO, "disk %s: cannot read it back: %s", b->path, strerror(e));
            }
        }
    }
    vmm__snap_str(s, path, sizeof path);
    vmm__snap_bool(s, &readonly);
    vmm__snap_u64(s, &capacity);
    vmm__snap_u64(s, &size);
    vmm__snap_u64(s, &mtime);
    vmm__snap_u32(s, &chunk_shift);
    vmm__snap_u64(s, &hash);
    if (!loading) {
        if (nwords)
            vmm__snap_bytes(s, b->written, nwords * 8);
        vmm__virtio_unlock(b->v);
        return vmm__snap_error(s);
    }
    if (!vmm__snap_error(s)) {
        /* what the guest saw must not change under it */
        if (readonly != b->readonly)
            vmm__snap_fail(s, "disk %s was %s, it is now attached %s", path, readonly ? "read-only" : "writable",
                           b->readonly ? "read-only" : "writable");
        else if (capacity != b->capacity)
            vmm__snap_fail(s, "disk %s had %" PRIu64 " sectors, %s has %" PRIu64, path, capacity, b->path, b->capacity);
        else if (!readonly && chunk_shift != b->chunk_shift)
            vmm__snap_fail(s, "disk %s: bad chunk size 2^%" PRIu32, path, chunk_shift);
    }
    if (!readonly && nwords && !vmm__snap_error(s))
        vmm__snap_bytes(s, b->written, nwords * 8);
    if (!readonly && !vmm__snap_error(s)) {
        uint64_t now = 0;
        if (fstat(b->fd, &st))
            vmm__snap_fail_code(s, VMM_EIO, "disk %s: cannot stat it: %s", b->path, strerror(errno));
        else if ((uint64_t)st.st_size != size || blk_mtime_ns(&st) != mtime || (e = blk_hash(b, size, &now)) ||
                 now != hash)
            vmm__snap_fail_code(s, VMM_ESTATE, "disk %s changed since the snapshot was taken (%s); refusing to restore",
                                b->path,
                                (uint64_t)st.st_size != size ? "its size differs"
                                : blk_mtime_ns(&st) != mtime ? "it was modified after the snapshot"
                                                             : "its contents differ");
    }
    vmm__virtio_unlock(b->v);
    return vmm__snap_error(s);
}

static const struct vmm_virtio_ops blk_ops_rw = {
    .name = "blk",
    .device_id = VIRTIO_ID_BLOCK,
    .features = (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_FLUSH) |
                (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES),
    .num_queues = 1,
    .queue_max = BLK_QUEUE_MAX,
    .config_size = sizeof(struct blk_config),
    .config_read = blk_config_read,
    .queue_notify = blk_queue_notify,
};

static const struct vmm_virtio_ops blk_ops_ro = {
    .name = "blk",
    .device_id = VIRTIO_ID_BLOCK,
    .features = (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_FLUSH) |
                (1ULL << VIRTIO_BLK_F_RO),
    .num_queues = 1,
    .queue_max = BLK_QUEUE_MAX,
    .config_size = sizeof(struct blk_config),
    .config_read = blk_config_read,
    .queue_notify = blk_queue_notify,
};

static const struct vmm_device_ops blk_device = {
    .name = "virtio-blk",
    .save = blk_snap,
    .load = blk_snap,
    .snap_version = 1,
    .destroy = blk_destroy,
};

/* The serial (GET_ID): the image's file name, printable ASCII, at most 20 bytes (NUL-padded). */
static void blk_make_id(struct vmm_virtio_blk *b, const char *path)
{
    const char *name = strrchr(path, '/');
    name = name ? name + 1 : path;
    for (size_t i = 0; i < VIRTIO_BLK_ID_BYTES && name[i]; i++) {
        unsigned char ch = (unsigned char)name[i];
        b->id[i] = ch > ' ' && ch < 0x7f ? (char)ch : '_';
    }
}

int vmm__dev_add_disk(struct vmm_vm *vm, const char *path, int readonly)
{
    struct vmm_virtio_blk *b;
    struct stat st;
    int rc, e;

    if (!vm)
        return VMM_EINVAL;
    if (!path || !*path)
        return vmm__set_error(vm, VMM_EINVAL, "virtio-blk: no image path");
    if (vm->state != VM_STATE_NEW)
        return vmm__set_error(vm, VMM_ESTATE, "%s: disks must be added before the VM is prepared", path);
    if (!(b = calloc(1, sizeof *b)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-blk");
    b->vm = vm;
    b->readonly = readonly != 0;
    /* O_NONBLOCK: opening a FIFO must not hang (it is refused below); no effect on a regular file */
    b->fd = open(path, (b->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (b->fd < 0) {
        int e = errno;
        rc = e == ENOENT   ? vmm__set_error(vm, VMM_ENOENT, "%s: no such disk image", path)
             : e == EISDIR ? vmm__set_error(vm, VMM_EINVAL, "%s: a disk image must be a regular file", path)
             : e == EACCES || e == EPERM || e == EROFS
                 ? vmm__set_error(vm, VMM_EIO, "%s: permission denied opening the disk image %s%s", path,
                                  b->readonly ? "read-only" : "read-write", b->readonly ? "" : " (add it read-only?)")
                 : vmm__set_error(vm, VMM_EIO, "%s: cannot open the disk image: %s", path, strerror(e));
        goto fail;
    }
    if (fstat(b->fd, &st)) {
        rc = vmm__set_error(vm, VMM_EIO, "%s: cannot stat the disk image: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = vmm__set_error(vm, VMM_EINVAL, "%s: a disk image must be a regular file", path);
        goto fail;
    }
    if (st.st_size % BLK_SECTOR) {
        rc = vmm__set_error(vm, VMM_EFORMAT, "%s: disk image size %lld is not a multiple of %u bytes", path,
                            (long long)st.st_size, BLK_SECTOR);
        goto fail;
    }
    if ((e = vmm__host_file_lock(b->fd, !b->readonly))) {
        rc = e == EWOULDBLOCK
                 ? vmm__set_error(vm, VMM_EIO, "%s: the disk image is in use (locked by another VM or program)", path)
                 : vmm__set_error(vm, VMM_EIO, "%s: cannot lock the disk image: %s", path, strerror(e));
        goto fail;
    }
    b->capacity = (uint64_t)st.st_size / BLK_SECTOR;
    b->cfg.capacity = b->capacity;
    b->cfg.seg_max = BLK_SEG_MAX;
    b->cfg.blk_size = BLK_SECTOR;
    if (!b->readonly) {
        b->cfg.max_discard_sectors = BLK_DWZ_SECTORS_MAX;
        b->cfg.max_discard_seg = BLK_DWZ_SEG_MAX;
        b->cfg.discard_sector_alignment = BLK_DISCARD_ALIGN;
        b->cfg.max_write_zeroes_sectors = BLK_DWZ_SECTORS_MAX;
        b->cfg.max_write_zeroes_seg = BLK_DWZ_SEG_MAX;
        b->cfg.write_zeroes_may_unmap = 1;
    }
    blk_make_id(b, path);
    if (strlen(path) >= sizeof b->path) {
        rc = vmm__set_error(vm, VMM_EINVAL, "disk image path longer than %zu bytes", sizeof b->path - 1);
        goto fail;
    }
    snprintf(b->path, sizeof b->path, "%s", path);
    if (!b->readonly) {
        uint64_t bytes = b->capacity * BLK_SECTOR;
        b->chunk_shift = BLK_CHUNK_SHIFT_MIN;
        while ((bytes >> b->chunk_shift) >= BLK_CHUNKS_MAX)
            b->chunk_shift++;
        if (!(b->written = calloc((bytes >> b->chunk_shift) / 64 + 1, 8))) {
            rc = vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-blk");
            goto fail;
        }
    }
    if ((rc = vmm__virtio_add(vm, b->readonly ? &blk_ops_ro : &blk_ops_rw, &blk_device, b, &b->v)))
        goto fail;
    return 0;
fail:
    if (b->fd >= 0)
        close(b->fd);
    free(b->written);
    free(b);
    return rc;
}
