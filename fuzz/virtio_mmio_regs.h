/* virtio_mmio_regs.h - the virtio-mmio register offsets the fuzz targets drive (virtio 1.2 §4.2.2). */
#ifndef FUZZ_VIRTIO_MMIO_REGS_H
#define FUZZ_VIRTIO_MMIO_REGS_H

enum {
    MAGIC = 0x000,
    DEV_FEAT = 0x010,
    DEV_FEAT_SEL = 0x014,
    DRV_FEAT = 0x020,
    DRV_FEAT_SEL = 0x024,
    QSEL = 0x030,
    QNUM = 0x038,
    QREADY = 0x044,
    QNOTIFY = 0x050,
    STATUS = 0x070,
    QDESC = 0x080,
    QDRIVER = 0x090,
    QDEVICE = 0x0a0
};

#endif
