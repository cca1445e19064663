/* net_switch.c - an in-process L2 switch (a learning bridge) between the NICs of VMs of one process. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/vm.h"
#include "net.h"

/*
 * Ports are NICs (at most SW_MAX_PORTS at a time). A frame from a port teaches the switch that
 * its source MAC lives there (a table of SW_FDB entries, the oldest replaced first); it goes to
 * the port its destination MAC was learnt on, or to every other port when the destination is
 * broadcast, multicast or unknown (IEEE 802.1D forwarding, no ageing, no spanning tree: a switch
 * has no loops). Delivery copies the frame into each receiving NIC's bounded queue
 * (vmm__net_nic_receive), so a flooding guest costs the others at most their queues.
 *
 * Locking: sw->lock is held while forwarding, which runs on the sending VM's vCPU thread with
 * its NIC's device lock held; under it only the receivers' queue locks and run-loop wake-ups are
 * taken (never another VM's device lock), so two VMs sending to each other cannot deadlock. A
 * port detaches under sw->lock (vmm_destroy's quiesce), after which no sender reaches its NIC.
 *
 * Time: each VM has its own clock; in deterministic mode a frame enters the receiver at its next
 * round boundary (a VM's own run stays reproducible given the frames it gets, but when they arrive
 * depends on how the VMs' threads interleave). Captures are stamped with the sender's clock.
 */
#define SW_MAX_PORTS 64
#define SW_FDB 256

struct sw_port {
    struct vmm_net_switch *sw;
    struct vmm_net_nic *nic;
    unsigned index;
};

struct vmm_net_switch {
    pthread_mutex_t lock;
    atomic_uint refs;
    struct sw_port *port[SW_MAX_PORTS];
    unsigned next_index; /* port numbers are handed out in attach order, never reused */
    struct {
        uint8_t mac[6];
        struct sw_port *port; /* NULL: free */
    } fdb[SW_FDB];
    unsigned fdb_next;
    struct vmm_pcap *pcap;
    uint64_t forwarded, cap_dropped;
};

static void sw_unref(struct vmm_net_switch *sw)
{
    if (atomic_fetch_sub(&sw->refs, 1) != 1)
        return;
    vmm__pcap_close(sw->pcap);
    pthread_mutex_destroy(&sw->lock);
    free(sw);
}

VMM_EXPORT int vmm_net_switch_create(vmm_net_switch **out, const char *capture, char *errbuf, size_t errlen)
{
    struct vmm_net_switch *sw;
    int e;

    if (!out)
        return VMM_EINVAL;
    *out = NULL;
    if (!(sw = calloc(1, sizeof *sw))) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "out of memory for a network switch");
        return VMM_ENOMEM;
    }
    if (capture && (e = vmm__pcap_open(capture, VMM_PCAP_MAX_BYTES, &sw->pcap))) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "%s: cannot write a capture: %s", capture, strerror(e));
        free(sw);
        return VMM_EIO;
    }
    pthread_mutex_init(&sw->lock, NULL);
    atomic_init(&sw->refs, 1);
    *out = sw;
    return 0;
}

VMM_EXPORT void vmm_net_switch_release(vmm_net_switch *sw)
{
    if (sw)
        sw_unref(sw);
}

VMM_EXPORT int vmm_net_switch_counts(vmm_net_switch *sw, uint64_t *forwarded, uint64_t *capture_dropped)
{
    if (!sw)
        return VMM_EINVAL;
    pthread_mutex_lock(&sw->lock);
    if (forwarded)
        *forwarded = sw->forwarded;
    if (capture_dropped)
        *capture_dropped = sw->cap_dropped;
    pthread_mutex_unlock(&sw->lock);
    return 0;
}

/* Remember that `mac` lives behind port p (sw->lock held). */
static void learn(struct vmm_net_switch *sw, const uint8_t *mac, struct sw_port *p)
{
    if (mac[0] & 1) /* a group address is never a source */
        return;
    for (unsigned i = 0; i < SW_FDB; i++) {
        if (sw->fdb[i].port && !memcmp(sw->fdb[i].mac, mac, 6)) {
            sw->fdb[i].port = p;
            return;
        }
    }
    memcpy(sw->fdb[sw->fdb_next].mac, mac, 6);
    sw->fdb[sw->fdb_next].port = p;
    sw->fdb_next = (sw->fdb_next + 1) % SW_FDB;
}

static struct sw_port *lookup(struct vmm_net_switch *sw, const uint8_t *mac)
{
    if (mac[0] & 1)
        return NULL;
    for (unsigned i = 0; i < SW_FDB; i++)
        if (sw->fdb[i].port && !memcmp(sw->fdb[i].mac, mac, 6))
            return sw->fdb[i].port;
    return NULL;
}

static void sw_send(void *be, const uint8_t *frame, size_t len)
{
    struct sw_port *p = be;
    struct vmm_net_switch *sw = p->sw;

    pthread_mutex_lock(&sw->lock);
    sw->forwarded++;
    if (sw->pcap && !vmm__pcap_write(sw->pcap, vmm__net_nic_clock(p->nic), frame, len))
        sw->cap_dropped++;
    learn(sw, frame + 6, p);
    struct sw_port *to = lookup(sw, frame);
    if (to) {
        if (to != p)
            vmm__net_nic_receive(to->nic, frame, len);
    } else {
        for (unsigned i = 0; i < SW_MAX_PORTS; i++)
            if (sw->port[i] && sw->port[i] != p)
                vmm__net_nic_receive(sw->port[i]->nic, frame, len);
    }
    pthread_mutex_unlock(&sw->lock);
}

static void sw_detach(void *be)
{
    struct sw_port *p = be;
    struct vmm_net_switch *sw = p->sw;

    pthread_mutex_lock(&sw->lock);
    for (unsigned i = 0; i < SW_MAX_PORTS; i++)
        if (sw->port[i] == p)
            sw->port[i] = NULL;
    for (unsigned i = 0; i < SW_FDB; i++)
        if (sw->fdb[i].port == p)
            sw->fdb[i].port = NULL;
    pthread_mutex_unlock(&sw->lock);
    free(p);
    sw_unref(sw);
}

static const struct vmm_net_backend_ops switch_ops = {
    .name = "switch",
    .send = sw_send,
    .destroy = sw_detach,
};

int vmm__net_switch_attach(struct vmm_vm *vm, struct vmm_net_switch *sw, struct vmm_net_nic *nic,
                           const struct vmm_net_backend_ops **ops, void **be, unsigned *port_index)
{
    struct sw_port *p;
    unsigned slot;

    if (!sw)
        return vmm__set_error(vm, VMM_EINVAL, "network switch: no switch given");
    if (!(p = calloc(1, sizeof *p)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for a switch port");
    pthread_mutex_lock(&sw->lock);
    for (slot = 0; slot < SW_MAX_PORTS && sw->port[slot]; slot++)
        ;
    if (slot == SW_MAX_PORTS) {
        pthread_mutex_unlock(&sw->lock);
        free(p);
        return vmm__set_error(vm, VMM_ENOMEM, "the network switch has %d ports, all in use", SW_MAX_PORTS);
    }
    *p = (struct sw_port){ .sw = sw, .nic = nic, .index = sw->next_index++ };
    sw->port[slot] = p;
    atomic_fetch_add(&sw->refs, 1);
    pthread_mutex_unlock(&sw->lock);
    *ops = &switch_ops;
    *be = p;
    *port_index = p->index;
    return 0;
}
