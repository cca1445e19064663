/* virtio_input.c - virtio-input devices (virtio 1.2 §5.8): a keyboard and an absolute tablet, fed by the host. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../core/run.h"
#include "../core/timeq.h"
#include "../core/board.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "virtio.h"
#include "virtio_input.h"
#include "virtq.h"

/*
 * Two devices (device id 18), each with the §5.8.4 config space:
 *   0 select, 1 subsel (RW), 2 size (RO), 3..7 reserved, 8..135 u (RO)
 * A write to select or subsel recomputes size and u:
 *   ID_NAME     "vmmpy keyboard" / "vmmpy tablet"
 *   ID_SERIAL   "vmmpy-kbd-0" / "vmmpy-tablet-0"
 *   ID_DEVIDS   bustype BUS_VIRTUAL (6), vendor 0x766d ("vm"), product 1 (keyboard) / 2 (tablet), version 1
 *   PROP_BITS   none (size 0) for both: like QEMU's virtio-tablet, the tablet is a pointer with absolute
 *               axes, not a touchscreen (INPUT_PROP_DIRECT would make desktops treat it as touch)
 *   EV_BITS     keyboard: EV_SYN {SYN_REPORT}, EV_KEY {KEY_ESC (1) .. KEY_MICMUTE (248)},
 *               EV_LED {NUML, CAPSL, SCROLLL}, EV_REP (size 1, no codes: the guest repeats in software)
 *               tablet: EV_SYN {SYN_REPORT}, EV_KEY {BTN_LEFT, BTN_RIGHT, BTN_MIDDLE},
 *               EV_REL {REL_HWHEEL, REL_WHEEL}, EV_ABS {ABS_X, ABS_Y}
 *   ABS_INFO    tablet ABS_X, ABS_Y: min 0, max 32767 (like QEMU), fuzz 0, flat 0, res 0; the host scales
 *               screen pixels to this range (vmmpy/input.py)
 * Queue 0 (eventq) carries 8-byte events {le16 type, le16 code, le32 value} to the driver; queue 1
 * (statusq) carries events from the driver: EV_LED events set the keyboard's LED state, others are
 * returned and ignored.
 *
 * Host events (vmm_input_event, any thread) wait in a per-device ring of INPUT_PENDING_MAX events.
 * Only complete reports (up to and including a SYN_REPORT) are delivered, into the buffers the driver
 * posted; the rest waits for more buffers (a queue notify or DRIVER_OK delivers). When the ring is
 * full the oldest complete report is dropped (or, with no complete report in it, the oldest event),
 * and the `dropped` counter says how many events went.
 *
 * Deterministic mode: vmm_input_event_at() keeps events in a per-device list sorted by virtual time
 * (stable), and the run loop moves the due ones into the ring between rounds (input_advance, its board hook), so
 * they reach the guest at the same point of its execution every run; vmm_input_event() is "at 0", i.e.
 * at the next round boundary. Only whole reports that fit in the ring's free space move: the rest waits
 * for a later round (the guest drains the ring deterministically), so deterministic input is never
 * dropped.
 *
 * Locking: all device state is guarded by the device's transport lock (recursive), which the transport
 * holds around every callback; vmm_input_* take it too. A single lock for both sides means a host
 * thread delivering and a vCPU in the device's registers never see each other half-way, and there is
 * no device lock to order against the transport's.
 */

#define INPUT_QUEUE_MAX 64
#define INPUT_PENDING_MAX 4096
#define INPUT_SCHED_MAX 65536 /* deterministic mode: events waiting for their virtual time, per device */

/* §5.8.2 select values */
#define CFG_UNSET 0x00
#define CFG_ID_NAME 0x01
#define CFG_ID_SERIAL 0x02
#define CFG_ID_DEVIDS 0x03
#define CFG_PROP_BITS 0x10
#define CFG_EV_BITS 0x11
#define CFG_ABS_INFO 0x12

/* Linux input-event-codes.h */
#define EV_SYN 0x00
#define EV_KEY 0x01
#define EV_REL 0x02
#define EV_ABS 0x03
#define EV_LED 0x11
#define EV_REP 0x14
#define SYN_REPORT 0
#define KEY_ESC 1
#define KEY_MICMUTE 248
#define BTN_LEFT 0x110
#define BTN_MIDDLE 0x112
#define REL_HWHEEL 0x06
#define REL_WHEEL 0x08
#define ABS_X 0x00
#define ABS_Y 0x01
#define LED_NUML 0x00
#define LED_SCROLLL 0x02
#define LED_MAX 0x0f
#define BUS_VIRTUAL 0x06

#define INPUT_VENDOR 0x766d
#define TABLET_ABS_MAX 32767

struct input_config {
    uint8_t select, subsel, size, reserved[5];
    uint8_t u[128];
};

struct input_event {
    uint16_t type, code;
    uint32_t value;
};

struct vmm_input {
    struct vmm_virtio *v;
    int kind; /* VMM_INPUT_KEYBOARD or VMM_INPUT_TABLET */
    struct input_config cfg;
    /* pending host events: a ring; the first `complete` of them end with a SYN_REPORT */
    struct input_event pend[INPUT_PENDING_MAX];
    unsigned head, count, complete;
    uint64_t delivered, dropped;
    uint32_t leds; /* keyboard: bit n = LED n on, as last set by the driver */
    struct virtq_chain chain;
    /* deterministic mode: events waiting for their virtual time, sorted by time (stable) */
    struct vmm_timeq sched; /* of struct input_event */
};

/* The codes of one event type this device supports, as a bitmap; returns its size (0: type unsupported). */
static unsigned ev_bits(const struct vmm_input *d, unsigned type, uint8_t bm[128])
{
    unsigned lo = 1, hi = 0;

    memset(bm, 0, 128);
    switch (type) {
    case EV_SYN:
        lo = hi = SYN_REPORT;
        break;
    case EV_KEY:
        if (d->kind == VMM_INPUT_KEYBOARD)
            lo = KEY_ESC, hi = KEY_MICMUTE;
        else
            lo = BTN_LEFT, hi = BTN_MIDDLE;
        break;
    case EV_REL:
        if (d->kind == VMM_INPUT_TABLET) {
            bm[REL_HWHEEL / 8] |= 1u << (REL_HWHEEL % 8);
            bm[REL_WHEEL / 8] |= 1u << (REL_WHEEL % 8);
            return REL_WHEEL / 8 + 1;
        }
        break;
    case EV_ABS:
        if (d->kind == VMM_INPUT_TABLET)
            lo = ABS_X, hi = ABS_Y;
        break;
    case EV_LED:
        if (d->kind == VMM_INPUT_KEYBOARD)
            lo = LED_NUML, hi = LED_SCROLLL;
        break;
    case EV_REP:
        return d->kind == VMM_INPUT_KEYBOARD ? 1 : 0; /* supported, no codes */
    }
    if (lo > hi)
        return 0;
    for (unsigned c = lo; c <= hi; c++)
        bm[c / 8] |= (uint8_t)(1u << (c % 8));
    return hi / 8 + 1;
}

static bool has_code(const struct vmm_input *d, unsigned type, unsigned code)
{
    uint8_t bm[128];
    unsigned n = type < 32 ? ev_bits(d, type, bm) : 0;
    return code < n * 8 && (bm[code / 8] >> (code % 8) & 1);
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    put_le16(p, (uint16_t)v);
    put_le16(p + 2, (uint16_t)(v >> 16));
}

static unsigned put_string(uint8_t *u, const char *s)
{
    size_t n = strlen(s);
    memcpy(u, s, n); /* no terminator: size says how long (§5.8.4) */
    return (unsigned)n;
}

/* Recompute size and u for the current select/subsel. */
static void config_update(struct vmm_input *d)
{
    struct input_config *c = &d->cfg;
    bool kbd = d->kind == VMM_INPUT_KEYBOARD;
    unsigned size = 0;

    memset(c->u, 0, sizeof c->u);
    switch (c->select) {
    case CFG_ID_NAME:
        if (!c->subsel)
            size = put_string(c->u, kbd ? "vmmpy keyboard" : "vmmpy tablet");
        break;
    case CFG_ID_SERIAL:
        if (!c->subsel)
            size = put_string(c->u, kbd ? "vmmpy-kbd-0" : "vmmpy-tablet-0");
        break;
    case CFG_ID_DEVIDS:
        if (!c->subsel) {
            put_le16(c->u, BUS_VIRTUAL);
            put_le16(c->u + 2, INPUT_VENDOR);
            put_le16(c->u + 4, kbd ? 1 : 2);
            put_le16(c->u + 6, 1);
            size = 8;
        }
        break;
    case CFG_PROP_BITS:
        break; /* no properties (see above) */
    case CFG_EV_BITS:
        size = ev_bits(d, c->subsel, c->u);
        break;
    case CFG_ABS_INFO:
        if (!kbd && (c->subsel == ABS_X || c->subsel == ABS_Y)) {
            put_le32(c->u, 0);
            put_le32(c->u + 4, TABLET_ABS_MAX);
            size = 20; /* min, max, fuzz, flat, res */
        }
        break;
    }
    c->size = (uint8_t)size;
}

static void input_config_read(void *dev, uint32_t off, void *buf, uint32_t len)
{
    struct vmm_input *d = dev;
    memcpy(buf, (uint8_t *)&d->cfg + off, len);
}

static void input_config_write(void *dev, uint32_t off, const void *buf, uint32_t len)
{
    struct vmm_input *d = dev;
    bool changed = false;

    for (uint32_t i = 0; i < len; i++) {
        if (off + i == offsetof(struct input_config, select)) {
            d->cfg.select = ((const uint8_t *)buf)[i];
            changed = true;
        } else if (off + i == offsetof(struct input_config, subsel)) {
            d->cfg.subsel = ((const uint8_t *)buf)[i];
            changed = true;
        }
        /* the rest is read-only for the driver (§5.8.4): ignored */
    }
    if (changed)
        config_update(d);
}

/* Deliver complete reports into posted eventq buffers. Transport lock held. */
static void deliver_locked(struct vmm_input *d)
{
    struct vmm_virtq *q = vmm__virtio_queue(d->v, 0);
    bool pushed = false;

    if (!vmm__virtio_live(d->v) || !q || !vmm__virtq_ready(q))
        return;
    while (d->complete) {
        struct virtq_chain *c = &d->chain;
        const struct input_event *e = &d->pend[d->head];
        uint8_t raw[8];

        if (vmm__virtq_pop(q, c) <= 0)
            break;
        if (c->write_len < sizeof raw) {
            vmm__virtq_push(q, c, 0);
            pushed = true;
            vmm__virtio_needs_reset(d->v, "virtio-input eventq buffer shorter than 8 writable bytes");
            break;
        }
        put_le16(raw, e->type);
        put_le16(raw + 2, e->code);
        put_le32(raw + 4, e->value);
        vmm__virtq_push(q, c, (uint32_t)vmm__virtq_write(c, 0, raw, sizeof raw));
        pushed = true;
        d->head = (d->head + 1) % INPUT_PENDING_MAX;
        d->count--;
        d->complete--;
        d->delivered++;
    }
    if (pushed)
        vmm__virtio_notify(d->v, 0);
}

/* Drop the oldest complete report (or event) to make room. Transport lock held, count == max. */
static void drop_oldest_locked(struct vmm_input *d)
{
    unsigned n = 1;

    for (unsigned i = 0; i < d->complete; i++) {
        const struct input_event *e = &d->pend[(d->head + i) % INPUT_PENDING_MAX];
        if (e->type == EV_SYN && e->code == SYN_REPORT) {
            n = i + 1;
            break;
        }
    }
    d->head = (d->head + n) % INPUT_PENDING_MAX;
    d->count -= n;
    d->complete = d->complete > n ? d->complete - n : 0;
    d->dropped += n;
}

static void status_queue_locked(struct vmm_input *d)
{
    struct vmm_virtq *q = vmm__virtio_queue(d->v, 1);
    struct virtq_chain *c = &d->chain;
    bool pushed = false;

    while (q && vmm__virtq_pop(q, c) > 0) {
        uint8_t raw[8];
        if (vmm__virtq_read(c, 0, raw, sizeof raw) == sizeof raw) {
            uint16_t type = (uint16_t)(raw[0] | raw[1] << 8), code = (uint16_t)(raw[2] | raw[3] << 8);
            uint32_t value = raw[4] | (uint32_t)raw[5] << 8 | (uint32_t)raw[6] << 16 | (uint32_t)raw[7] << 24;
            if (type == EV_LED && d->kind == VMM_INPUT_KEYBOARD && code <= LED_MAX) {
                if (value)
                    d->leds |= 1u << code;
                else
                    d->leds &= ~(1u << code);
            }
        } else {
            vmm__guest_error(vmm__virtio_vm(d->v), "virtio-input", "statusq buffer of %" PRIu64 " bytes, not 8",
                             c->read_len);
        }
        vmm__virtq_push(q, c, 0);
        pushed = true;
    }
    if (pushed)
        vmm__virtio_notify(d->v, 1);
}

static void input_queue_notify(void *dev, unsigned qi)
{
    struct vmm_input *d = dev;

    if (qi == 0)
        deliver_locked(d);
    else
        status_queue_locked(d);
}

static void input_driver_ok(void *dev)
{
    deliver_locked(dev);
}

static void input_reset(void *dev)
{
    struct vmm_input *d = dev;
    /* pending host events stay: they are delivered once a driver posts buffers again */
    d->cfg.select = d->cfg.subsel = 0;
    config_update(d);
    d->leds = 0;
}

static void input_destroy(void *dev)
{
    struct vmm_input *d = dev;
    vmm__timeq_free(&d->sched);
    free(d);
}

static const struct vmm_virtio_ops input_ops = {
    .name = "input",
    .device_id = VIRTIO_ID_INPUT,
    .num_queues = 2,
    .queue_max = INPUT_QUEUE_MAX,
    .config_size = sizeof(struct input_config),
    .config_read = input_config_read,
    .config_write = input_config_write,
    .driver_ok = input_driver_ok,
    .queue_notify = input_queue_notify,
    .reset = input_reset,
};

static uint64_t input_advance(void *dev, uint64_t now_ns);
static int input_snap(void *dev, struct vmm_snap *s);

static const struct vmm_device_ops input_device = {
    .name = "virtio-input",
    .advance = input_advance,
    .save = input_snap,
    .load = input_snap,
    .snap_version = 1,
    .destroy = input_destroy,
};

/* The keyboard, then the tablet, on the next virtio slots. */
int vmm__dev_add_input(struct vmm_vm *vm)
{
    if (!vm)
        return VMM_EINVAL;
    if (vmm__board_find(vm, &input_device, 0))
        return vmm__set_error(vm, VMM_ESTATE, "the VM already has its keyboard and tablet");
    for (int k = 0; k < VMM_INPUT_DEVICES; k++) {
        struct vmm_input *d = calloc(1, sizeof *d);
        int rc;

        if (!d)
            return vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-input");
        d->kind = k;
        vmm__timeq_init(&d->sched, sizeof(struct input_event), INPUT_SCHED_MAX);
        config_update(d);
        if ((rc = vmm__virtio_add(vm, &input_ops, &input_device, d, &d->v))) {
            input_destroy(d);
            return rc;
        }
    }
    return 0;
}

static struct vmm_input *input_dev(vmm_vm *vm, int device, int *rc)
{
    struct vmm_input *d = NULL;

    *rc = 0;
    if (!vm || device < 0 || device >= VMM_INPUT_DEVICES) {
        *rc = VMM_EINVAL;
        return NULL;
    }
    for (unsigned i = 0; (d = vmm__board_find(vm, &input_device, i)) && d->kind != device; i++)
        ;
    if (!d)
        *rc = vmm__set_error(vm, VMM_ENOTSUP, "the VM has no input devices (vmm_add_input)");
    return d;
}

/* Append one event to the pending ring and deliver a completed report. Transport lock held. */
static void enqueue_locked(struct vmm_input *d, const struct input_event *e)
{
    if (d->count == INPUT_PENDING_MAX)
        drop_oldest_locked(d);
    d->pend[(d->head + d->count) % INPUT_PENDING_MAX] = *e;
    d->count++;
    if (e->type == EV_SYN && e->code == SYN_REPORT) {
        d->complete = d->count;
        deliver_locked(d);
    }
}

static bool is_syn(const struct input_event *e)
{
    return e->type == EV_SYN && e->code == SYN_REPORT;
}

/*
 * Deterministic mode, between rounds: move the due events into the ring, whole reports (up to and
 * including their SYN_REPORT; a due tail without one goes as it is) and only as many as fit in its free
 * space, so nothing is dropped. What does not fit stays scheduled and is looked at again every round: the
 * ring only drains while the guest runs (it posts buffers), so an idle round cannot make room and such
 * events do not count as a next event (the next round after the guest ran moves them, at the same point
 * of its execution every run). A report larger than the whole ring goes into an empty ring anyway (the
 * ring drops its oldest events, as in real time). Returns the time of the next event to wait for.
 */
static uint64_t input_advance(void *dev, uint64_t now_ns)
{
    struct vmm_input *d = dev;
    uint64_t next = UINT64_MAX;
    size_t n = 0;
    bool blocked = false;

    vmm__virtio_lock(d->v);
    struct vmm_timeq *q = &d->sched;
    while (n < q->n && q->at[n] <= now_ns) {
        size_t end = n;
        while (end < q->n && q->at[end] <= now_ns && !is_syn(vmm__timeq_item(q, end)))
            end++;
        if (end < q->n && q->at[end] <= now_ns)
            end++; /* the SYN_REPORT closing the report */
        if (end - n > INPUT_PENDING_MAX - d->count && d->count) {
            blocked = true; /* waits for the guest to take some */
            break;
        }
        while (n < end)
            enqueue_locked(d, vmm__timeq_item(q, n++));
    }
    vmm__timeq_drop(q, n);
    if (!blocked)
        next = vmm__timeq_next(q);
    vmm__virtio_unlock(d->v);
    return next;
}

VMM_EXPORT int vmm_input_event_at(vmm_vm *vm, int device, uint64_t at_ns, uint16_t type, uint16_t code, int32_t value)
{
    int rc;
    struct vmm_input *d = input_dev(vm, device, &rc);
    struct input_event e = { type, code, (uint32_t)value };

    if (!d)
        return rc;
    if (type == EV_LED || type == EV_REP || !has_code(d, type, code))
        return vmm__set_error(vm, VMM_EINVAL, "virtio-input %s: event type %u code %u is not supported",
                              device ? "tablet" : "keyboard", type, code);
    if (type == EV_ABS && (value < 0 || value > TABLET_ABS_MAX))
        return vmm__set_error(vm, VMM_EINVAL, "virtio-input tablet: absolute value %" PRId32 " outside 0..%d", value,
                              TABLET_ABS_MAX);
    if (type == EV_KEY && (value < 0 || value > 2))
        return vmm__set_error(vm, VMM_EINVAL, "virtio-input: key value %" PRId32 " (0 release, 1 press, 2 repeat)",
                              value);
    vmm__virtio_lock(d->v);
    if (vm->deterministic)
        rc = vmm__timeq_add(&d->sched, at_ns, &e, 1); /* kept until the clock reaches at_ns */
    else
        enqueue_locked(d, &e);
    vmm__virtio_unlock(d->v);
    if (rc)
        return vmm__set_error(vm, rc, "virtio-input: more than %d events scheduled", INPUT_SCHED_MAX);
    if (vm->deterministic && type == EV_SYN)
        vmm__wake_run_loop(vm); /* it delivers the report */
    return 0;
}

VMM_EXPORT int vmm_input_event(vmm_vm *vm, int device, uint16_t type, uint16_t code, int32_t value)
{
    return vmm_input_event_at(vm, device, 0, type, code, value);
}

VMM_EXPORT int vmm_input_stats(vmm_vm *vm, int device, uint64_t *delivered, uint64_t *pending, uint64_t *dropped)
{
    int rc;
    struct vmm_input *d = input_dev(vm, device, &rc);

    if (!d)
        return rc;
    vmm__virtio_lock(d->v);
    if (delivered)
        *delivered = d->delivered;
    if (pending)
        *pending = d->count;
    if (dropped)
        *dropped = d->dropped;
    vmm__virtio_unlock(d->v);
    return 0;
}

VMM_EXPORT int vmm_input_leds(vmm_vm *vm, uint32_t *leds)
{
    int rc;
    struct vmm_input *d = input_dev(vm, VMM_INPUT_KEYBOARD, &rc);

    if (!d || !leds)
        return d ? VMM_EINVAL : rc;
    vmm__virtio_lock(d->v);
    *leds = d->leds;
    vmm__virtio_unlock(d->v);
    return 0;
}

/* One event's fields (the ring and the schedule hold the same struct). */
static void snap_event(struct vmm_snap *s, struct input_event *e)
{
    vmm__snap_u16(s, &e->type);
    vmm__snap_u16(s, &e->code);
    vmm__snap_u32(s, &e->value);
}

/*
 * Snapshots: the virtio core's state, then the config selectors, the LEDs, the counters, the pending
 * ring (oldest first; events not yet delivered, complete reports first) and the deterministic schedule
 * with each event's virtual time. Nothing is in flight: an event leaves the ring only inside a chain
 * that is pushed at once.
 */
static int input_snap(void *dev, struct vmm_snap *s)
{
    struct vmm_input *d = dev;
    bool loading = vmm__snap_loading(s);
    uint32_t kind = (uint32_t)d->kind, count = d->count, complete = d->complete;
    uint64_t nsched = d->sched.n;

    if (vmm__virtio_snap(d->v, s))
        return vmm__snap_error(s);
    vmm__virtio_lock(d->v);
    vmm__snap_u32(s, &kind);
    vmm__snap_u8(s, &d->cfg.select);
    vmm__snap_u8(s, &d->cfg.subsel);
    vmm__snap_u32(s, &d->leds);
    vmm__snap_u64(s, &d->delivered);
    vmm__snap_u64(s, &d->dropped);
    vmm__snap_u32(s, &count);
    vmm__snap_u32(s, &complete);
    if (loading && !vmm__snap_error(s)) {
        if (kind != (uint32_t)d->kind)
            vmm__snap_fail(s, "saved input device kind %u, this one is %d", kind, d->kind);
        else if (d->leds >> (LED_MAX + 1))
            vmm__snap_fail(s, "LED state 0x%" PRIx32 " names LEDs beyond %d", d->leds, LED_MAX);
        else if (count > INPUT_PENDING_MAX || complete > count)
            vmm__snap_fail(s, "%" PRIu32 " pending events (%" PRIu32 " in complete reports): at most %d", count,
                           complete, INPUT_PENDING_MAX);
        if (!vmm__snap_error(s)) {
            config_update(d);
            d->head = 0;
            d->count = count;
            d->complete = complete;
        }
    }
    for (unsigned i = 0; i < count && !vmm__snap_error(s); i++)
        snap_event(s, &d->pend[(d->head + i) % INPUT_PENDING_MAX]);
    if (loading && complete && !vmm__snap_error(s) && !is_syn(&d->pend[complete - 1]))
        vmm__snap_fail(s, "the pending reports do not end with a SYN_REPORT");
    vmm__snap_u64(s, &nsched);
    if (loading && !vmm__snap_error(s)) {
        vmm__timeq_drop(&d->sched, d->sched.n);
        if (nsched > INPUT_SCHED_MAX)
            vmm__snap_fail(s, "%" PRIu64 " scheduled events: at most %d", nsched, INPUT_SCHED_MAX);
    }
    uint64_t last = 0;
    for (uint64_t i = 0; i < nsched && !vmm__snap_error(s); i++) {
        uint64_t at = loading ? 0 : d->sched.at[i];
        struct input_event e =
            loading ? (struct input_event){ 0 } : *(struct input_event *)vmm__timeq_item(&d->sched, i);
        vmm__snap_u64(s, &at);
        snap_event(s, &e);
        if (!loading || vmm__snap_error(s))
            continue;
        if (at < last)
            vmm__snap_fail(s, "scheduled event %" PRIu64 " is due before the one ahead of it", i);
        else if (vmm__timeq_add(&d->sched, at, &e, 1))
            vmm__snap_fail_code(s, VMM_ENOMEM, "out of memory for scheduled input");
        last = at;
    }
    if (loading && vmm__snap_error(s)) { /* no half-loaded state */
        d->head = d->count = d->complete = 0;
        vmm__timeq_drop(&d->sched, d->sched.n);
    }
    vmm__virtio_unlock(d->v);
    return vmm__snap_error(s);
}
