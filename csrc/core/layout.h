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
 *  0x1000_0000 +------------------------------+
 *              | PCI 32-bit MMIO window       |  (--transport pci only: BARs the guest
 *              |   0x2EFF_0000 bytes          |   programs; INTA-D: SPI 3-6, INTID 35-38)
 *  0x3EFF_0000 +------------------------------+
 *              |   (no PCI I/O window)        |
 *  0x3F00_0000 +------------------------------+
 *              | PCI ECAM, 16 MiB: buses 0-15 |  (QEMU virt's low ECAM, highmem=off)
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

/*
 * The PCIe host bridge (dev/pci_host.c), QEMU virt's "low" layout: its 16 MiB ECAM (virt's
 * VIRT_PCIE_ECAM) and 32-bit MMIO window (VIRT_PCIE_MMIO) sit in the device window below RAM. No
 * 64-bit window: virt's 0x80_0000_0000 lies inside our RAM range (RAM may reach 0x80_4000_0000,
 * LAYOUT_RAM_MAX), and our BARs are 32-bit. No I/O window (virt's VIRT_PCIE_PIO): no I/O BARs.
 */
#define LAYOUT_PCI_ECAM_BASE 0x3F000000ULL
#define LAYOUT_PCI_ECAM_SIZE 0x01000000ULL /* 1 MiB per bus */
#define LAYOUT_PCI_BUSES 16
#define LAYOUT_PCI_MMIO_BASE 0x10000000ULL
#define LAYOUT_PCI_MMIO_SIZE 0x2EFF0000ULL
#define LAYOUT_PCI_SPI0 3 /* INTA..INTD of slot 0: SPI 3..6 (INTID 35..38), swizzled by slot */

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
