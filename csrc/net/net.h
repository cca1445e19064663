/*
 * net.h - between a virtio-net NIC (dev/virtio_net.c) and its back-end: user networking through
 * libslirp (net_user.c), a host tap interface (net_tap.c) or an in-process switch (net_switch.c),
 * and the pcap writer (pcap.c) any of them can feed.
 *
 * Frames are whole Ethernet frames without FCS. Guest -> back-end: ops->send, called on the
 * thread that serves the guest's TX queue with the NIC's device lock held; it copies or drops,
 * never blocks. Back-end -> guest: vmm__net_nic_receive() from any thread, holding no lock the
 * NIC takes (it copies the frame into the NIC's bounded queue and schedules the delivery).
 */
#ifndef VMM_NET_H
#define VMM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmm_vm;
struct vmm_net_nic;
struct vmm_net_config;

/* The largest frame either way: a 64 KiB IP packet in an Ethernet frame with a VLAN tag. */
#define VMM_NET_FRAME_MAX (65535u + 18u)
#define VMM_NET_FRAME_MIN 14u /* an Ethernet header */

struct vmm_net_backend_ops {
    const char *name; /* "user", "tap", "switch" */
    void (*send)(void *be, const uint8_t *frame, size_t len);
    /* Deterministic mode, between rounds (run thread): fire the back-end's timers due by now_ns;
     * returns the next one (UINT64_MAX: none). May be NULL. */
    uint64_t (*advance)(void *be, uint64_t now_ns);
    /* Detach and free. The I/O thread is stopped or no longer calls the back-end. */
    void (*destroy)(void *be);
};

/* NIC side, for back-ends (virtio_net.c). */
void vmm__net_nic_receive(struct vmm_net_nic *nic, const void *frame, size_t len);
struct vmm_vm *vmm__net_nic_vm(struct vmm_net_nic *nic);
/* The VM's clock now, as the thread calling may read it (the vCPU's own in deterministic mode). */
uint64_t vmm__net_nic_clock(struct vmm_net_nic *nic);

/* Back-end constructors: *be and *ops, or a VMM_E* with the VM's error message set. */
int vmm__net_user_create(struct vmm_vm *vm, struct vmm_net_nic *nic, const struct vmm_net_config *cfg,
                         const struct vmm_net_backend_ops **ops, void **be);
int vmm__net_tap_create(struct vmm_vm *vm, struct vmm_net_nic *nic, const char *name,
                        const struct vmm_net_backend_ops **ops, void **be);
struct vmm_net_switch;
/* *port_index: the port's number on the switch (for the default MAC). */
int vmm__net_switch_attach(struct vmm_vm *vm, struct vmm_net_switch *sw, struct vmm_net_nic *nic,
                           const struct vmm_net_backend_ops **ops, void **be, unsigned *port_index);

/*
 * pcap files (the classic format with nanosecond timestamps, magic 0xa1b23c4d, link type 1
 * Ethernet): what tcpdump -r and Wireshark read. Writes stop (counted, one log line by the
 * caller) when the file would pass max_bytes. Thread-safe.
 */
struct vmm_pcap;
int vmm__pcap_open(const char *path, uint64_t max_bytes, struct vmm_pcap **out); /* 0 or an errno */
/* false when the frame was not written (the cap, or a write error) */
bool vmm__pcap_write(struct vmm_pcap *p, uint64_t ts_ns, const void *frame, size_t len);
void vmm__pcap_close(struct vmm_pcap *p);

#define VMM_PCAP_MAX_BYTES (1ull << 30) /* a capture grows to 1 GiB at most */

#endif
