/* virtio_net.c - virtio-net (virtio 1.2 §5.1): one RX/TX queue pair on a back-end (net/net.h); vmm_add_net(). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../core/board.h"
#include "../core/iothread.h"
#include "../core/run.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "../net/net.h"
#include "virtio.h"

/*
 * Features (§5.1.3): MAC (config space mac), STATUS (config space status: link up/down, a
 * configuration change when it moves), MRG_RXBUF (a received frame may span several receive
 * chains; num_buffers says how many), CSUM (the guest may leave a TCP/UDP checksum to us:
 * NEEDS_CSUM, §5.1.6.2: we complete it before the frame leaves, so back-ends and other VMs only ever
 * see complete frames) and GUEST_CSUM (frames from a back-end whose checksums are known good, user
 * networking and tap, are marked DATA_VALID, §5.1.6.4, so the guest skips checking them; frames from
 * another VM on a switch are not). No segmentation offload (GSO).
 *
 * Every chain carries struct virtio_net_hdr (12 bytes with VERSION_1, num_buffers included,
 * §5.1.6) before the frame. Transmit (queue 1): a chain's readable bytes are the header and one
 * frame; a header that asks for an offload we did not offer (flags, gso_type), a frame shorter
 * than an Ethernet header or longer than VMM_NET_FRAME_MAX, a checksum position outside the frame, is refused (counted
 * in tx_malformed, a rate-limited guest error) and the chain returned. Receive (queue 0): frames from the back-end wait
 * in a queue of RXQ_FRAMES (copied; beyond that they are dropped, counted in rx_dropped) until the guest has posted
 * buffers for the whole frame. A receive chain with no room for the header breaks §5.1.6.3.1: NEEDS_RESET. Without
 * MRG_RXBUF a frame larger than the chain at the head of the queue is dropped (counted) and the chain stays for the
 * next one.
 *
 * Threads: TX runs on the vCPU that notified (device lock held, the back-end's send copies or
 * drops). Frames for the guest arrive on any thread (vmm__net_nic_receive: the queue's own leaf
 * lock) and enter the guest's buffers with the device lock held: on the I/O thread in real-time
 * mode (a work item), between rounds in deterministic mode (the advance hook), and at once when
 * the guest posts receive buffers or transmits. Lock order: device lock -> back-end -> rxq lock.
 */
#define NET_F_CSUM 0
#define NET_F_GUEST_CSUM 1
#define NET_F_MAC 5
#define NET_F_MRG_RXBUF 15
#define NET_F_STATUS 16
#define NET_S_LINK_UP 1u
#define NET_HDR_LEN 12u
#define NET_HDR_F_NEEDS_CSUM 1u
#define NET_HDR_F_DATA_VALID 2u
#define NET_QUEUE_MAX 256
#define RXQ_FRAMES 256u
enum { RXQ = 0, TXQ = 1 };

struct net_config {
    uint8_t mac[6];
    uint16_t status;
    uint16_t max_virtqueue_pairs; /* read only with MQ; 1 */
};

struct rx_frame {
    uint8_t *data;
    uint32_t len;
};

struct vmm_net_nic {
    struct vmm_vm *vm;
    struct vmm_virtio *v;
    unsigned index; /* the n-th NIC of the VM */
    const struct vmm_net_backend_ops *be_ops;
    void *be;
    bool be_csum_valid; /* the back-end's frames carry correct checksums (user, tap): DATA_VALID */
    struct vmm_pcap *pcap;
    struct vmm_io_work rx_work;
    bool work_added;
    uint8_t mac[6];
    atomic_bool link_up;
    /* frames for the guest, under rxq_lock (a leaf) */
    pthread_mutex_t rxq_lock;
    struct rx_frame rxq[RXQ_FRAMES];
    unsigned rx_head, rx_n;
    uint64_t rxq_bytes;
    atomic_uint_fast64_t tx_frames, tx_bytes, rx_frames, rx_bytes, tx_dropped, tx_malformed, rx_dropped, cap_dropped;
    /* device lock: the chains being served */
    struct virtq_chain first, cur;
    uint16_t heads[NET_QUEUE_MAX];
    uint32_t lens[NET_QUEUE_MAX];
    uint8_t txbuf[NET_HDR_LEN + VMM_NET_FRAME_MAX];
};

struct vmm_vm *vmm__net_nic_vm(struct vmm_net_nic *nic)
{
    return nic->vm;
}

uint64_t vmm__net_nic_clock(struct vmm_net_nic *nic)
{
    struct vmm_vm *vm = nic->vm;
    /* deterministic: the vCPU running now when called on the run thread, else the round's start (in
     * real-time mode the vCPU does not matter: host time) */
    bool run_thread = vm->run_thread_valid && pthread_equal(pthread_self(), vm->run_thread);
    return vmm__clock_ns(vm, run_thread ? vm->current : NULL);
}

static void capture(struct vmm_net_nic *nic, const void *frame, size_t len)
{
    if (nic->pcap && !vmm__pcap_write(nic->pcap, vmm__net_nic_clock(nic), frame, len))
        atomic_fetch_add(&nic->cap_dropped, 1);
}

/* ---- receive: host -> guest ---- */

void vmm__net_nic_receive(struct vmm_net_nic *nic, const void *frame, size_t len)
{
    uint8_t *copy;

    if (!atomic_load(&nic->link_up) || len < VMM_NET_FRAME_MIN || len > VMM_NET_FRAME_MAX) {
        atomic_fetch_add(&nic->rx_dropped, 1);
        return;
    }
    pthread_mutex_lock(&nic->rxq_lock);
    if (nic->rx_n >= RXQ_FRAMES || !(copy = malloc(len))) {
        pthread_mutex_unlock(&nic->rxq_lock);
        atomic_fetch_add(&nic->rx_dropped, 1);
        return;
    }
    memcpy(copy, frame, len);
    nic->rxq[(nic->rx_head + nic->rx_n++) % RXQ_FRAMES] = (struct rx_frame){ copy, (uint32_t)len };
    nic->rxq_bytes += len;
    pthread_mutex_unlock(&nic->rxq_lock);
    if (nic->vm->deterministic)
        vmm__wake_run_loop(nic->vm); /* the frame enters at the next round boundary (net_advance) */
    else if (nic->vm->iothread)
        vmm__iothread_schedule(nic->vm->iothread, &nic->rx_work);
}

/* The frame at the head of the queue (rxq lock held by the caller), or false. */
static bool rxq_peek(struct vmm_net_nic *nic, struct rx_frame *f)
{
    if (!nic->rx_n)
        return false;
    *f = nic->rxq[nic->rx_head];
    return true;
}

static void rxq_pop(struct vmm_net_nic *nic)
{
    struct rx_frame *f = &nic->rxq[nic->rx_head];
    nic->rxq_bytes -= f->len;
    free(f->data);
    f->data = NULL;
    nic->rx_head = (nic->rx_head + 1) % RXQ_FRAMES;
    nic->rx_n--;
}

/* Copy bytes [off, off+n) of header||frame into chain c at chain offset coff. */
static void put_span(const struct virtq_chain *c, uint64_t coff, const uint8_t *hdr, const struct rx_frame *f,
                     uint64_t off, uint64_t n)
{
    if (off < NET_HDR_LEN) {
        uint64_t h = NET_HDR_LEN - off < n ? NET_HDR_LEN - off : n;
        vmm__virtq_write(c, coff, hdr + off, (size_t)h);
        coff += h;
        off += h;
        n -= h;
    }
    if (n)
        vmm__virtq_write(c, coff, f->data + (off - NET_HDR_LEN), (size_t)n);
}

/*
 * Place one frame in receive chains: 1 done, 0 not enough buffers (nothing consumed), -1 the queue
 * broke, 2 the frame was dropped: too big for a chain without MRG_RXBUF, or, with it, for the chains
 * of every descriptor of the ring (no buffer can come before these are used: waiting would stall the
 * queue for good). Device lock held.
 */
static int rx_place(struct vmm_net_nic *nic, struct vmm_virtq *q, const struct rx_frame *f, bool mrg)
{
    uint8_t hdr[NET_HDR_LEN] = { 0 };
    if (nic->be_csum_valid && (vmm__virtio_features(nic->v) >> NET_F_GUEST_CSUM & 1))
        hdr[0] = NET_HDR_F_DATA_VALID;
    uint64_t total = NET_HDR_LEN + (uint64_t)f->len, off = 0;
    uint16_t used = 0, qsize = vmm__virtq_size(q);
    unsigned ndesc = 0; /* descriptors in the chains popped */

    while (off < total) {
        struct virtq_chain *c = used ? &nic->cur : &nic->first;
        int r = ndesc < qsize ? vmm__virtq_pop(q, c) : 0;
        if (r <= 0) {
            vmm__virtq_unpop(q, used);
            if (r == 0 && ndesc >= qsize) {
                vmm__virtio_guest_error(nic->v,
                                        "a %u-byte frame does not fit in the receive buffers of the whole "
                                        "ring (%u descriptors): dropped",
                                        f->len, qsize);
                return 2;
            }
            return r < 0 ? -1 : 0;
        }
        ndesc += c->ndesc;
        if (c->write_len < NET_HDR_LEN) { /* §5.1.6.3.1: every receive buffer holds at least a header */
            vmm__virtq_unpop(q, (uint16_t)(used + 1));
            vmm__virtio_needs_reset(nic->v, "receive buffer smaller than struct virtio_net_hdr");
            return -1;
        }
        if (!mrg && c->write_len < total) {
            vmm__virtq_unpop(q, 1);
            return 2;
        }
        uint64_t n = c->write_len < total - off ? c->write_len : total - off;
        put_span(c, 0, hdr, f, off, n);
        nic->heads[used] = c->head;
        nic->lens[used++] = (uint32_t)n;
        off += n;
    }
    uint16_t nb = used; /* num_buffers (§5.1.6.4): 1 without MRG_RXBUF */
    vmm__virtq_write(&nic->first, 10, &nb, sizeof nb);
    for (uint16_t i = 0; i < used; i++) {
        nic->cur.head = nic->heads[i];
        nic->cur.write_len = nic->lens[i];
        vmm__virtq_push(q, &nic->cur, nic->lens[i]);
    }
    return 1;
}

/* Move queued frames into the guest's receive buffers. Device lock held. */
static void rx_flush(struct vmm_net_nic *nic)
{
    struct vmm_virtq *q = vmm__virtio_queue(nic->v, RXQ);
    bool mrg = vmm__virtio_features(nic->v) >> NET_F_MRG_RXBUF & 1, pushed = false;
    struct rx_frame f;

    if (!vmm__virtio_live(nic->v) || !vmm__virtq_ready(q))
        return;
    for (;;) {
        pthread_mutex_lock(&nic->rxq_lock);
        bool have = rxq_peek(nic, &f);
        pthread_mutex_unlock(&nic->rxq_lock);
        if (!have)
            break;
        int r = rx_place(nic, q, &f, mrg);
        if (r <= 0)
            break;
        if (r == 1) {
            atomic_fetch_add(&nic->rx_frames, 1);
            atomic_fetch_add(&nic->rx_bytes, f.len);
            capture(nic, f.data, f.len);
            pushed = true;
        } else {
            atomic_fetch_add(&nic->rx_dropped, 1);
        }
        pthread_mutex_lock(&nic->rxq_lock); /* only this function, under the device lock, takes frames out */
        rxq_pop(nic);
        pthread_mutex_unlock(&nic->rxq_lock);
    }
    if (pushed)
        vmm__virtio_notify(nic->v, RXQ);
}

static void rx_work(void *opaque)
{
    struct vmm_net_nic *nic = opaque;

    vmm__virtio_lock(nic->v);
    rx_flush(nic);
    vmm__virtio_unlock(nic->v);
}

/* ---- transmit: guest -> host ---- */

/*
 * NEEDS_CSUM (§5.1.6.2): the Internet checksum (RFC 1071) of frame[csum_start..end) goes at
 * csum_start + csum_offset (that field holds the pseudo-header sum the driver put there). false if
 * the positions do not fit in the frame.
 */
static bool complete_csum(uint8_t *frame, size_t len, const uint8_t *hdr)
{
    size_t start = (size_t)(hdr[6] | hdr[7] << 8), off = (size_t)(hdr[8] | hdr[9] << 8);
    uint64_t sum = 0;

    if (start >= len || off + 2 > len - start)
        return false;
    for (size_t i = start; i + 1 < len; i += 2)
        sum += (uint32_t)frame[i] << 8 | frame[i + 1];
    if ((len - start) & 1)
        sum += (uint32_t)frame[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    uint16_t c = (uint16_t)~sum;
    frame[start + off] = (uint8_t)(c >> 8);
    frame[start + off + 1] = (uint8_t)c;
    return true;
}

/* One transmit chain: its frame to the back-end, or counted as refused. Device lock held. */
static void tx_one(struct vmm_net_nic *nic, const struct virtq_chain *c)
{
    uint8_t *p = nic->txbuf;

    if (c->read_len < NET_HDR_LEN + VMM_NET_FRAME_MIN || c->read_len > NET_HDR_LEN + VMM_NET_FRAME_MAX) {
        atomic_fetch_add(&nic->tx_malformed, 1);
        vmm__virtio_guest_error(nic->v, "transmit chain of %llu readable bytes (header %u, frame %u..%u)",
                                (unsigned long long)c->read_len, NET_HDR_LEN, VMM_NET_FRAME_MIN, VMM_NET_FRAME_MAX);
        return;
    }
    size_t len = vmm__virtq_read(c, 0, p, (size_t)c->read_len);
    if ((p[0] & ~NET_HDR_F_NEEDS_CSUM) || p[1] || (p[0] && !(vmm__virtio_features(nic->v) >> NET_F_CSUM & 1))) {
        atomic_fetch_add(&nic->tx_malformed, 1); /* §5.1.6.2.1: only what was negotiated; no GSO is offered */
        vmm__virtio_guest_error(nic->v, "transmit header asks for an offload not negotiated (flags 0x%x, gso_type %u)",
                                p[0], p[1]);
        return;
    }
    if (p[0] && !complete_csum(p + NET_HDR_LEN, len - NET_HDR_LEN, p)) {
        atomic_fetch_add(&nic->tx_malformed, 1);
        vmm__virtio_guest_error(nic->v, "transmit checksum at %u+%u lies outside the %zu-byte frame",
                                (unsigned)(p[6] | p[7] << 8), (unsigned)(p[8] | p[9] << 8), len - NET_HDR_LEN);
        return;
    }
    if (!atomic_load(&nic->link_up) || !nic->be_ops) {
        atomic_fetch_add(&nic->tx_dropped, 1);
        return;
    }
    atomic_fetch_add(&nic->tx_frames, 1);
    atomic_fetch_add(&nic->tx_bytes, len - NET_HDR_LEN);
    capture(nic, p + NET_HDR_LEN, len - NET_HDR_LEN);
    nic->be_ops->send(nic->be, p + NET_HDR_LEN, len - NET_HDR_LEN);
}

static void tx_flush(struct vmm_net_nic *nic)
{
    struct vmm_virtq *q = vmm__virtio_queue(nic->v, TXQ);
    struct virtq_chain *c = &nic->cur;
    bool pushed = false;

    while (vmm__virtq_pop(q, c) > 0) {
        tx_one(nic, c);
        vmm__virtq_push(q, c, 0); /* nothing written back */
        pushed = true;
    }
    if (pushed)
        vmm__virtio_notify(nic->v, TXQ);
}

static void net_queue_notify(void *dev, unsigned q)
{
    struct vmm_net_nic *nic = dev;

    if (q == TXQ)
        tx_flush(nic);
    rx_flush(nic); /* buffers were posted, or the back-end answered at once (ARP, DHCP) */
}

static void net_config_read(void *dev, uint32_t off, void *buf, uint32_t len)
{
    struct vmm_net_nic *nic = dev;
    struct net_config cfg = { .status = atomic_load(&nic->link_up) ? NET_S_LINK_UP : 0, .max_virtqueue_pairs = 1 };

    memcpy(cfg.mac, nic->mac, sizeof cfg.mac);
    memcpy(buf, (uint8_t *)&cfg + off, len); /* off + len <= config_size: checked by the core */
}

static void net_config_write(void *dev, uint32_t off, const void *buf, uint32_t len)
{
    struct vmm_net_nic *nic = dev;

    (void)buf;
    /* §5.1.4: mac is writable only with VIRTIO_NET_F_CTRL_MAC_ADDR's legacy path; we offer neither */
    vmm__virtio_guest_error(nic->v, "%u-byte write to read-only config field at 0x%x", len, off);
}

/* ---- the board's hooks ---- */

static uint64_t net_advance(void *dev, uint64_t now_ns)
{
    struct vmm_net_nic *nic = dev;
    uint64_t next = UINT64_MAX;

    if (nic->be_ops && nic->be_ops->advance)
        next = nic->be_ops->advance(nic->be, now_ns);
    rx_work(nic);
    return next;
}

static uint64_t net_host_mem(void *dev)
{
    struct vmm_net_nic *nic = dev;

    pthread_mutex_lock(&nic->rxq_lock);
    uint64_t n = sizeof *nic + nic->rxq_bytes;
    pthread_mutex_unlock(&nic->rxq_lock);
    return n;
}

/* Detach from the back-end and the I/O thread: nothing calls into the NIC afterwards. */
static void net_quiesce(void *dev)
{
    struct vmm_net_nic *nic = dev;

    if (nic->be_ops) {
        nic->be_ops->destroy(nic->be);
        nic->be_ops = NULL;
    }
    if (nic->work_added && nic->vm->iothread)
        vmm__iothread_remove(nic->vm->iothread, &nic->rx_work);
    nic->work_added = false;
}

static void net_destroy(void *dev)
{
    struct vmm_net_nic *nic = dev;

    net_quiesce(nic);
    vmm__pcap_close(nic->pcap);
    while (nic->rx_n)
        rxq_pop(nic);
    pthread_mutex_destroy(&nic->rxq_lock);
    free(nic);
}

/* Snapshots are refused: the back-end's connections (NAT state, host sockets, peers) are host state. */
static int net_save(void *dev, struct vmm_snap *s)
{
    struct vmm_net_nic *nic = dev;
    return vmm__snap_fail_code(s, VMM_ENOTSUP,
                               "a VM with a network card (virtio-net on %s) cannot be snapshotted: its back-end's "
                               "connections are host state",
                               nic->be_ops ? nic->be_ops->name : "no back-end");
}

static const struct vmm_virtio_ops net_ops = {
    .name = "net",
    .device_id = VIRTIO_ID_NET,
    .features = (1ULL << NET_F_CSUM) | (1ULL << NET_F_GUEST_CSUM) | (1ULL << NET_F_MAC) | (1ULL << NET_F_MRG_RXBUF) |
                (1ULL << NET_F_STATUS),
    .num_queues = 2,
    .queue_max = NET_QUEUE_MAX,
    .config_size = sizeof(struct net_config),
    .config_read = net_config_read,
    .config_write = net_config_write,
    .queue_notify = net_queue_notify,
};

static const struct vmm_device_ops net_device = {
    .name = "virtio-net",
    .advance = net_advance,
    .host_mem = net_host_mem,
    .quiesce = net_quiesce,
    .save = net_save,
    .snap_version = 1,
    .destroy = net_destroy,
};

/* ---- vmm_add_net() and the NIC calls ---- */

static int make_backend(struct vmm_vm *vm, struct vmm_net_nic *nic, const struct vmm_net_config *cfg)
{
    unsigned port = 0;
    int rc;

    switch (cfg->backend) {
    case VMM_NET_USER: /* slirp computes every checksum of what it sends */
        nic->be_csum_valid = true;
        return vmm__net_user_create(vm, nic, cfg, &nic->be_ops, &nic->be);
    case VMM_NET_TAP: /* a tap without IFF_VNET_HDR gets frames the host kernel completed */
        nic->be_csum_valid = true;
        return vmm__net_tap_create(vm, nic, cfg->tap, &nic->be_ops, &nic->be);
    case VMM_NET_SWITCH:
        if ((rc = vmm__net_switch_attach(vm, cfg->sw, nic, &nic->be_ops, &nic->be, &port)))
            return rc;
        if (!cfg->mac) { /* 52:54:00:12:35:p: distinct for every VM on the switch */
            nic->mac[4] = (uint8_t)(0x35 + (port >> 8));
            nic->mac[5] = (uint8_t)port;
        }
        return 0;
    }
    return vmm__set_error(vm, VMM_EINVAL, "network back-end %d is unknown (user 1, tap 2, switch 3)", cfg->backend);
}

static int nic_setup(struct vmm_vm *vm, struct vmm_net_nic *nic, const struct vmm_net_config *cfg)
{
    static const uint8_t base_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
    struct vmm_iothread *io;
    int rc, e;

    memcpy(nic->mac, cfg->mac ? cfg->mac : base_mac, 6);
    if (!cfg->mac)
        nic->mac[5] = (uint8_t)(nic->mac[5] + nic->index);
    if (nic->mac[0] & 1)
        return vmm__set_error(vm, VMM_EINVAL, "MAC %02x:%02x:%02x:%02x:%02x:%02x is a multicast address", nic->mac[0],
                              nic->mac[1], nic->mac[2], nic->mac[3], nic->mac[4], nic->mac[5]);
    if (cfg->capture && (e = vmm__pcap_open(cfg->capture, VMM_PCAP_MAX_BYTES, &nic->pcap)))
        return vmm__set_error(vm, VMM_EIO, "%s: cannot write a capture: %s", cfg->capture, strerror(e));
    if ((rc = vmm__iothread_get(vm, &io)) || (rc = vmm__iothread_add_work(io, &nic->rx_work)))
        return rc;
    nic->work_added = true;
    return make_backend(vm, nic, cfg);
}

int vmm__dev_add_net(struct vmm_vm *vm, const struct vmm_net_config *cfg)
{
    struct vmm_net_nic *nic;
    int rc;

    if (!vm)
        return VMM_EINVAL;
    if (!cfg || cfg->size < offsetof(struct vmm_net_config, capture) + sizeof cfg->capture)
        return vmm__set_error(vm, VMM_EINVAL, "vmm_add_net: cfg->size must be sizeof(struct vmm_net_config)");
    if (vm->state != VM_STATE_NEW)
        return vmm__set_error(vm, VMM_ESTATE, "virtio-net: devices must be added before the VM is prepared");
    if (!(nic = calloc(1, sizeof *nic)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-net");
    nic->vm = vm;
    while (vmm__board_find(vm, &net_device, nic->index))
        nic->index++;
    atomic_init(&nic->link_up, true);
    pthread_mutex_init(&nic->rxq_lock, NULL);
    nic->rx_work = (struct vmm_io_work){ .fn = rx_work, .opaque = nic };
    if ((rc = nic_setup(vm, nic, cfg)) || (rc = vmm__virtio_add(vm, &net_ops, &net_device, nic, &nic->v))) {
        net_destroy(nic);
        return rc;
    }
    return 0;
}

static struct vmm_net_nic *find_nic(struct vmm_vm *vm, unsigned n)
{
    struct vmm_net_nic *nic = vmm__board_find(vm, &net_device, n);
    if (!nic)
        vmm__set_error(vm, VMM_EINVAL, "the VM has no network card %u", n);
    return nic;
}

VMM_EXPORT int vmm_net_stats(vmm_vm *vm, unsigned n, struct vmm_net_stats *st)
{
    struct vmm_net_nic *nic;
    struct vmm_net_stats o = { .size = sizeof o };

    if (!vm || !st || st->size < sizeof(uint32_t))
        return VMM_EINVAL;
    if (!(nic = find_nic(vm, n)))
        return VMM_EINVAL;
    o.tx_frames = atomic_load(&nic->tx_frames);
    o.tx_bytes = atomic_load(&nic->tx_bytes);
    o.rx_frames = atomic_load(&nic->rx_frames);
    o.rx_bytes = atomic_load(&nic->rx_bytes);
    o.tx_dropped = atomic_load(&nic->tx_dropped);
    o.tx_malformed = atomic_load(&nic->tx_malformed);
    o.rx_dropped = atomic_load(&nic->rx_dropped);
    o.capture_dropped = atomic_load(&nic->cap_dropped);
    pthread_mutex_lock(&nic->rxq_lock);
    o.rx_queued = nic->rx_n;
    pthread_mutex_unlock(&nic->rxq_lock);
    o.link_up = atomic_load(&nic->link_up);
    memcpy(o.mac, nic->mac, 6);
    uint32_t len = st->size < sizeof o ? st->size : (uint32_t)sizeof o; /* an older caller's shorter struct */
    o.size = len;
    memcpy(st, &o, len);
    return 0;
}

VMM_EXPORT int vmm_net_set_link(vmm_vm *vm, unsigned n, int up)
{
    struct vmm_net_nic *nic;

    if (!vm)
        return VMM_EINVAL;
    if (!(nic = find_nic(vm, n)))
        return VMM_EINVAL;
    if (atomic_exchange(&nic->link_up, up != 0) == (up != 0))
        return 0;
    vmm__virtio_lock(nic->v);
    vmm__virtio_config_changed(nic->v); /* §5.1.4.2: the driver re-reads status */
    vmm__virtio_unlock(nic->v);
    return 0;
}
