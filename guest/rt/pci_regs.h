/* pci_regs.h - PCI config-space offsets, command bits, the MSI-X capability (PCI Local Bus 3.0 §6.8.2) and
   the virtio-pci IDs (virtio 1.2 §4.1.2), shared by rt/pci.c and the PCI guests. */
#ifndef RT_PCI_REGS_H
#define RT_PCI_REGS_H

#define VENDOR_VIRTIO 0x1af4
#define DEVICE_RNG 0x1044 /* 0x1040 + virtio device type 4 */

#define PCI_COMMAND 0x04
#define CMD_MEM 0x2
#define CMD_MASTER 0x4

#define CAP_MSIX 0x11
#define MSIX_CTRL 2  /* Message Control, from the capability */
#define MSIX_TABLE 4 /* Table Offset / BIR */
#define MSIX_PBA 8   /* PBA Offset / BIR */
#define MSIX_ENABLE 0x8000
#define MSIX_MASKALL 0x4000

#endif
