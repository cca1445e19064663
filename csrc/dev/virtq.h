/* virtq.h - split virtqueue state shared by the virtio core (virtio.c) and virtq.c (not for devices). */
#ifndef VMM_VIRTQ_H
#define VMM_VIRTQ_H

#include "../core/vm.h"
#include "virtio_transport.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "virtio rings are little-endian: libvmm assumes a little-endian host"
#endif

/* Ring layouts, virtio 1.2 §2.7.5-2.7.8 (little-endian). */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct vmm_virtq {
    struct vmm_virtio *v;
    unsigned index;
    /* set up by the driver through the transport (§4.2.2, §4.1.4.3) */
    uint16_t num_max, num;
    bool ready;
    uint64_t desc_gpa, avail_gpa, used_gpa;
    /* resolved when the queue goes live (RAM mappings never move) */
    uint8_t *desc;   /* num x struct virtq_desc */
    uint16_t *avail; /* flags, idx, ring[num], used_event */
    uint16_t *used;  /* flags, idx, ring[num] x {le32 id, le32 len}, avail_event */
    /* device-side state */
    uint16_t last_avail;     /* next avail ring entry to consume */
    uint16_t used_idx;       /* shadow of used->idx */
    uint16_t signalled_used; /* used_idx when the core last decided about an interrupt */
    bool signalled_valid;
};

/* Core -> queue */
void vmm__virtq_init(struct vmm_virtq *q, struct vmm_virtio *v, unsigned index, uint16_t num_max);
void vmm__virtq_reset(struct vmm_virtq *q);
/* QueueReady written 1: check and map the rings. NULL on success, else why it was refused. */
const char *vmm__virtq_enable(struct vmm_virtq *q, struct vmm_vm *vm);
/* After pushing: does the driver want a used-buffer notification (EVENT_IDX / NO_INTERRUPT)? */
bool vmm__virtq_should_interrupt(struct vmm_virtq *q, bool event_idx);
/*
 * Snapshots: the queue's setup and progress (snapshot.h sync). Loading checks what a register write and
 * QueueReady would (size, alignment, rings inside RAM) and re-resolves the rings without touching them
 * (the guest's RAM holds their contents). Device lock held.
 */
struct vmm_snap;
void vmm__virtq_snap(struct vmm_virtq *q, struct vmm_vm *vm, struct vmm_snap *s);

#endif
