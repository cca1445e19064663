/* layout.h - the guest physical memory map (QEMU "virt" compatible). */
#ifndef VMM_LAYOUT_H
#define VMM_LAYOUT_H

/*
 *  0x0000_0000 +------------------------------+
 *              |   (unmapped: RAZ/WI + log)   |
 *  0x0800_0000 +------------------------------+
 *              | GICv3 distributor     64 KiB |
 *  0x0808_0000 +------------------------------+
 *              | GICv3 ITS            128 KiB |  (control frame, translation frame)
 *  0x080A_0000 +------------------------------+
 *              | GICv3 redistributors         |
 *              |   128 KiB per vCPU           |
 *  0x0900_0000 +------------------------------+
 *              | PL011 UART   4 KiB  SPI 1    |  (INTID 33)
 *  0x0A00_0000 +------------------------------+
 *              | virtio-mmio slots 32 x 0x200 |  (slot n: SPI 16+n, INTID 48+n)
 *  0x0A00_4000 +------------------------------+
 *              |   (unmapped: RAZ/WI + log)   |
 *  0x4000_0000 +------------------------------+
 *              | RAM (default 256 MiB)        |
 *              +------------------------------+
 *              |  above RAM: external abort   |
 */
#define LAYOUT_DEV_BASE 0x00000000ULL /* start of the low device window */
#define LAYOUT_DEV_END 0x40000000ULL

#define LAYOUT_GICD_BASE 0x08000000ULL
#define LAYOUT_GICD_SIZE 0x00010000ULL
#define LAYOUT_GITS_BASE 0x08080000ULL
#define LAYOUT_GITS_SIZE 0x00020000ULL
#define LAYOUT_GITS_TRANSLATER (LAYOUT_GITS_BASE + 0x10040ULL) /* the MSI doorbell (vmm__irq_msi) */
#define LAYOUT_GICR_BASE 0x080A0000ULL
#define LAYOUT_GICR_STRIDE 0x00020000ULL

#define LAYOUT_UART_BASE 0x09000000ULL
#define LAYOUT_UART_SIZE 0x00001000ULL
#define LAYOUT_UART_SPI 1

#define LAYOUT_VIRTIO_BASE 0x0A000000ULL
#define LAYOUT_VIRTIO_STRIDE 0x200ULL
#define LAYOUT_VIRTIO_SLOTS 32
#define LAYOUT_VIRTIO_SPI0 16

#define LAYOUT_RAM_BASE 0x40000000ULL
#define LAYOUT_RAM_DEFAULT (256ULL << 20)
#define LAYOUT_RAM_MAX (1ULL << 39) /* 512 GiB: bounds ram_size checks */

/* Timer PPIs (INTIDs). */
#define LAYOUT_PPI_HYP_TIMER 26
#define LAYOUT_PPI_VIRT_TIMER 27
#define LAYOUT_PPI_SEC_TIMER 29
#define LAYOUT_PPI_PHYS_TIMER 30

/* GIC INTID of SPI n. */
#define LAYOUT_SPI_INTID(n) (32 + (n))

#endif
