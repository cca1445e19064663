/*
 * virtio_ids.h - virtio device IDs: the one list (virtio 1.2 §5 "Device
 * Types", table of Device IDs). Tests spell the same numbers in
 * tests/virtio_driver.py.
 */
#ifndef VMM_VIRTIO_IDS_H
#define VMM_VIRTIO_IDS_H

#define VIRTIO_ID_NET 1        /* §5.1 network device */
#define VIRTIO_ID_BLOCK 2      /* §5.2 block device */
#define VIRTIO_ID_CONSOLE 3    /* §5.3 console */
#define VIRTIO_ID_ENTROPY 4    /* §5.4 entropy source */
#define VIRTIO_ID_9P 9         /* 9P transport (in §5's table only; the protocol is 9P2000.L) */
#define VIRTIO_ID_GPU 16       /* §5.7 GPU device */
#define VIRTIO_ID_INPUT 18     /* §5.8 input device */
#define VIRTIO_ID_DUMMY 0xfff0 /* ours, outside §5's range: the transport conformance device (virtio_dummy.c) */

#endif
