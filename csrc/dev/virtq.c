/* virtq.c - split virtqueues (virtio 1.2 §2.7): chain walking with hard limits, used ring, EVENT_IDX. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../core/snapshot.h"
#include "virtq.h"

/*
 * The guest owns the rings and may rewrite them at any time, from another
 * vCPU: every field is read once into a local copy and checked there. Ring
 * indexes are accessed with acquire/release atomics (§2.7.13: the driver
 * writes the ring entry before the index; the device the used element
 * before the used index).
 */

#define AVAIL_FLAGS 0
#define AVAIL_IDX 1
#define AVAIL_RING 2 /* in uint16_t units */
#define USED_IDX 1

static uint16_t load16_acquire(const uint16_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static uint16_t load16(const uint16_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void store16_release(uint16_t *p, uint16_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static uint16_t *used_event(struct vmm_virtq *q)
{
    return &q->avail[AVAIL_RING + q->num];
}

static uint16_t *avail_event(struct vmm_virtq *q)
{
    /* after flags, idx and num 8-byte elements */
    return (uint16_t *)((uint8_t *)q->used + 4 + 8 * (size_t)q->num);
}

static const char *virtq_map(struct vmm_virtq *q, struct vmm_vm *vm);

void vmm__virtq_init(struct vmm_virtq *q, struct vmm_virtio *v, unsigned index, uint16_t num_max)
{
    memset(q, 0, sizeof *q);
    q->v = v;
    q->index = index;
    q->num_max = num_max;
    vmm__virtq_reset(q);
}

void vmm__virtq_reset(struct vmm_virtq *q)
{
    q->num = q->num_max;
    q->ready = false;
    q->desc_gpa = q->avail_gpa = q->used_gpa = 0;
    q->desc = NULL;
    q->avail = q->used = NULL;
    q->last_avail = q->used_idx = q->signalled_used = 0;
    q->signalled_valid = false;
}

const char *vmm__virtq_enable(struct vmm_virtq *q, struct vmm_vm *vm)
{
    const char *why = virtq_map(q, vm);

    if (why)
        return why;
    /* the device area is ours: start it from zero whatever the guest left there */
    q->last_avail = q->used_idx = q->signalled_used = 0;
    store16_release(&q->used[0], 0);
    store16_release(&q->used[USED_IDX], 0);
    q->signalled_valid = false;
    q->ready = true;
    return NULL;
}

/* Point desc/avail/used at RAM; NULL or why not (the checks of QueueReady, §2.7). */
static const char *virtq_map(struct vmm_virtq *q, struct vmm_vm *vm)
{
    uint64_t n = q->num;

    /* §2.7: Queue Size is a power of 2, at most QueueNumMax */
    if (!n || n > q->num_max || (n & (n - 1)))
        return "QueueNum is not a power of 2 no larger than QueueNumMax";
    /* §2.7 table "Virtqueue Part Alignment" */
    if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3))
        return "a ring part is misaligned (descriptors: 16, driver area: 2, device area: 4 bytes)";
    q->desc = vmm__gpa_ptr(vm, q->desc_gpa, 16 * n);
    q->avail = vmm__gpa_ptr(vm, q->avail_gpa, 6 + 2 * n);
    q->used = vmm__gpa_ptr(vm, q->used_gpa, 6 + 8 * n);
    if (!q->desc || !q->avail || !q->used) {
        q->desc = NULL;
        q->avail = q->used = NULL;
        return "a ring part lies outside guest RAM";
    }
    return NULL;
}

void vmm__virtq_snap(struct vmm_virtq *q, struct vmm_vm *vm, struct vmm_snap *s)
{
    uint16_t num_max = q->num_max;

    vmm__snap_u16(s, &num_max);
    vmm__snap_u16(s, &q->num);
    vmm__snap_bool(s, &q->ready);
    vmm__snap_u64(s, &q->desc_gpa);
    vmm__snap_u64(s, &q->avail_gpa);
    vmm__snap_u64(s, &q->used_gpa);
    vmm__snap_u16(s, &q->last_avail);
    vmm__snap_u16(s, &q->used_idx);
    vmm__snap_u16(s, &q->signalled_used);
    vmm__snap_bool(s, &q->signalled_valid);
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    q->desc = NULL;
    q->avail = q->used = NULL;
    if (num_max != q->num_max) {
        vmm__snap_fail(s, "queue %u: its maximum size was %u, this device offers %u", q->index, num_max, q->num_max);
        return;
    }
    if (q->ready) {
        const char *why = virtq_map(q, vm);
        if (why) {
            q->ready = false;
            vmm__snap_fail(s, "queue %u is live but %s", q->index, why);
        }
    }
}

bool vmm__virtq_ready(const struct vmm_virtq *q)
{
    return q && q->ready;
}

uint16_t vmm__virtq_size(const struct vmm_virtq *q)
{
    return q && q->ready ? q->num : 0;
}

/* Refuse the chain: the queue is broken until the driver resets the device. */
static int broken(struct vmm_virtq *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int broken(struct vmm_virtq *q, const char *fmt, ...)
{
    char why[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    vmm__virtio_needs_reset(q->v, why);
    return -1;
}

/*
 * Resolve the chain at `head` into c. Limits (§2.7.5.3, §2.7.4.2): a direct
 * chain visits at most num descriptors (so a loop ends in an error), an
 * indirect table at most its own length; one indirect table per chain, not
 * nested and not followed by more descriptors; writable buffers only after
 * readable ones; every buffer inside RAM; at most VIRTQ_MAX_SEGS buffers.
 */
static int walk_chain(struct vmm_virtq *q, uint16_t head, struct virtq_chain *c, bool indirect_ok)
{
    struct vmm_vm *vm = vmm__virtio_vm(q->v);
    const uint8_t *table = q->desc;
    uint32_t table_n = q->num, idx = head, visited = 0;
    bool in_indirect = false;

    c->head = head;
    c->nread = c->nwrite = 0;
    c->read_len = c->write_len = 0;
    c->ndesc = 0;
    for (;;) {
        struct virtq_desc d;

        if (idx >= table_n)
            return broken(q, "queue %u: descriptor index %" PRIu32 " out of range (table of %" PRIu32 ")", q->index,
                          idx, table_n);
        if (++visited > table_n)
            return broken(q, "queue %u: descriptor chain at head %u loops or is longer than its table (%" PRIu32 ")",
                          q->index, head, table_n);
        memcpy(&d, table + 16 * (size_t)idx, sizeof d); /* one snapshot: the guest may change it meanwhile */
        if (!in_indirect)
            c->ndesc++;

        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (!indirect_ok)
                return broken(q, "queue %u: indirect descriptor without VIRTIO_F_INDIRECT_DESC", q->index);
            if (in_indirect)
                return broken(q, "queue %u: nested indirect descriptor table", q->index);
            if (d.flags & VIRTQ_DESC_F_NEXT)
                return broken(q, "queue %u: indirect descriptor with NEXT set", q->index);
            if (c->nread || c->nwrite)
                return broken(q, "queue %u: indirect descriptor after direct buffers", q->index);
            if (!d.len || d.len % 16)
                return broken(q, "queue %u: indirect table length %" PRIu32 " is not a multiple of 16", q->index,
                              d.len);
            table = vmm__gpa_ptr(vm, d.addr, d.len);
            if (!table)
                return broken(q, "queue %u: indirect table 0x%" PRIx64 "+0x%" PRIx32 " is outside guest RAM", q->index,
                              d.addr, d.len);
            table_n = d.len / 16;
            idx = 0;
            visited = 0;
            in_indirect = true;
            continue;
        }
        if (d.flags & VIRTQ_DESC_F_WRITE) {
            c->write_len += d.len;
        } else {
            if (c->nwrite)
                return broken(q, "queue %u: readable buffer after a writable one in the chain at head %u", q->index,
                              head);
            c->read_len += d.len;
        }
        if (d.len) {
            uint8_t *host = vmm__gpa_ptr(vm, d.addr, d.len);
            if (!host)
                return broken(q, "queue %u: buffer 0x%" PRIx64 "+0x%" PRIx32 " is outside guest RAM", q->index, d.addr,
                              d.len);
            if (c->nread + c->nwrite >= VIRTQ_MAX_SEGS)
                return broken(q, "queue %u: chain at head %u has more than %d buffers", q->index, head, VIRTQ_MAX_SEGS);
            c->seg[c->nread + c->nwrite] = (struct virtq_seg){ .host = host, .len = d.len };
            if (d.flags & VIRTQ_DESC_F_WRITE)
                c->nwrite++;
            else
                c->nread++;
        }
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        idx = d.next;
    }
}

int vmm__virtq_pop(struct vmm_virtq *q, struct virtq_chain *c)
{
    struct vmm_virtio *v = q->v;
    uint64_t features;
    uint16_t avail_idx, pending, head;
    int rc = 0;

    vmm__virtio_lock(v);
    if (vmm__virtio_broken(v)) {
        rc = -1;
        goto out;
    }
    if (!q->ready || !vmm__virtio_live(v))
        goto out;
    features = vmm__virtio_features(v);
    avail_idx = load16_acquire(&q->avail[AVAIL_IDX]);
    pending = (uint16_t)(avail_idx - q->last_avail);
    if (pending > q->num) {
        rc = broken(q, "queue %u: avail index %u is %u entries ahead of the device (queue size %u)", q->index,
                    avail_idx, pending, q->num);
        goto out;
    }
    if (!pending) {
        if (features >> VIRTIO_F_EVENT_IDX & 1)
            store16_release(avail_event(q), q->last_avail);
        goto out;
    }
    head = load16(&q->avail[AVAIL_RING + q->last_avail % q->num]);
    if ((rc = walk_chain(q, head, c, features >> VIRTIO_F_INDIRECT_DESC & 1)) < 0)
        goto out;
    q->last_avail++;
    if (features >> VIRTIO_F_EVENT_IDX & 1)
        store16_release(avail_event(q), q->last_avail); /* notify me when you add past what I consumed */
    rc = 1;
out:
    vmm__virtio_unlock(v);
    return rc;
}

void vmm__virtq_unpop(struct vmm_virtq *q, uint16_t n)
{
    struct vmm_virtio *v = q->v;

    vmm__virtio_lock(v);
    q->last_avail = (uint16_t)(q->last_avail - n);
    /* avail_event stays: the pops left it at the avail index they saw (an empty pop stores it), so the
     * driver notifies when it adds a buffer the device has not seen. Lowering it to last_avail would name
     * an entry already added: vring_need_event() would then be false for every later one (§2.7.10). */
    vmm__virtio_unlock(v);
}

void vmm__virtq_push(struct vmm_virtq *q, const struct virtq_chain *c, uint32_t written)
{
    struct vmm_virtio *v = q->v;

    vmm__virtio_lock(v);
    if (q->ready && vmm__virtio_live(v)) {
        uint32_t elem[2] = { c->head, written < c->write_len ? written : (uint32_t)c->write_len };
        memcpy((uint8_t *)q->used + 4 + 8 * (size_t)(q->used_idx % q->num), elem, sizeof elem);
        q->used_idx++;
        store16_release(&q->used[USED_IDX], q->used_idx);
    }
    vmm__virtio_unlock(v);
}

/* vring_need_event(): has the index passed `event` since `old`? (§2.7.10) */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

bool vmm__virtq_should_interrupt(struct vmm_virtq *q, bool event_idx)
{
    uint16_t old = q->signalled_used;
    bool valid = q->signalled_valid;

    if (!q->ready)
        return false;
    /* the used index store must be visible before we read the driver's suppression state */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    q->signalled_used = q->used_idx;
    q->signalled_valid = true;
    if (!event_idx)
        return !(load16(&q->avail[AVAIL_FLAGS]) & VIRTQ_AVAIL_F_NO_INTERRUPT);
    if (!valid)
        return true;
    return need_event(load16(used_event(q)), q->used_idx, old);
}

size_t vmm__virtq_read(const struct virtq_chain *c, uint64_t off, void *buf, size_t len)
{
    uint8_t *out = buf;
    size_t done = 0;

    for (unsigned i = 0; i < c->nread && done < len; i++) {
        const struct virtq_seg *s = &c->seg[i];
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        size_t n = s->len - off < len - done ? s->len - off : len - done;
        memcpy(out + done, s->host + off, n);
        done += n;
        off = 0;
    }
    return done;
}

size_t vmm__virtq_write(const struct virtq_chain *c, uint64_t off, const void *buf, size_t len)
{
    const uint8_t *in = buf;
    size_t done = 0;

    for (unsigned i = c->nread; i < c->nread + c->nwrite && done < len; i++) {
        const struct virtq_seg *s = &c->seg[i];
        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        size_t n = s->len - off < len - done ? s->len - off : len - done;
        memcpy(s->host + off, in + done, n);
        done += n;
        off = 0;
    }
    return done;
}
