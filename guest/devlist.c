/* devlist.c - what the machine looks like from inside: the virtio-mmio devices (with a disk's capacity
   and a 9p share's tag), the device tree's /chosen bootargs and initrd (and the initrd's first bytes),
   and cpu@0's compatible. Lets the CLI's --disk, --share, --rng, --cmdline, --initrd and --cpu-model be
   checked from the guest's side. */
#include "rt.h"

#define MMIO_MAGIC 0x000
#define MMIO_VERSION 0x004
#define MMIO_DEVICE_ID 0x008
#define VIRTIO_MAGIC 0x74726976u /* "virt" */

static const char *kind(uint32_t id)
{
    switch (id) {
    case 1: return "net";
    case 2: return "blk";
    case 3: return "console";
    case 4: return "rng";
    case 9: return "9p";
    case 16: return "gpu";
    case 18: return "input";
    default: return "other";
    }
}

static uint64_t be(const uint8_t *p, uint32_t n)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void show_string(const char *what, uintptr_t fdt, const char *path, const char *prop)
{
    uint32_t len = 0;
    const char *s = fdt_getprop(fdt, path, prop, &len);
    if (s && len && s[len - 1] == 0)
        printf("devlist: %s: %s\n", what, s);
    else
        printf("devlist: %s: none\n", what);
}

static void show_initrd(uintptr_t fdt)
{
    uint32_t ls = 0, le = 0;
    const uint8_t *s = fdt_getprop(fdt, "/chosen", "linux,initrd-start", &ls);
    const uint8_t *e = fdt_getprop(fdt, "/chosen", "linux,initrd-end", &le);
    if (!s || !e || (ls != 4 && ls != 8) || (le != 4 && le != 8)) {
        printf("devlist: initrd: none\n");
        return;
    }
    uint64_t start = be(s, ls), end = be(e, le);
    char head[17];
    uint64_t n = end - start < 16 ? end - start : 16;
    for (uint64_t i = 0; i < n; i++) {
        char c = *(const volatile char *)(uintptr_t)(start + i);
        head[i] = c >= 0x20 && c < 0x7f ? c : '.';
    }
    head[n] = 0;
    printf("devlist: initrd: %lu bytes, begins \"%s\"\n", (unsigned long)(end - start), head);
}

static void show_device(int slot, uintptr_t base, uint32_t id)
{
    volatile uint8_t *cfg = (volatile uint8_t *)(base + VIRTIO_MMIO_CONFIG);
    printf("devlist: slot %d: %s (id %u)", slot, kind(id), id);
    if (id == 2) { /* virtio-blk: capacity in 512-byte sectors (le64 at 0) */
        uint64_t cap = 0;
        for (int i = 7; i >= 0; i--)
            cap = cap << 8 | cfg[i];
        printf(", %lu sectors", (unsigned long)cap);
    } else if (id == 9) { /* virtio-9p: tag_len (le16), tag */
        unsigned n = cfg[0] | cfg[1] << 8;
        char tag[65];
        n = n < 64 ? n : 64;
        for (unsigned i = 0; i < n; i++)
            tag[i] = (char)cfg[2 + i];
        tag[n] = 0;
        printf(", tag \"%s\"", tag);
    }
    printf("\n");
}

int main(uint64_t x0)
{
    uintptr_t fdt = fdt_find(x0);
    int n = 0;

    for (int slot = 0; slot < VIRTIO_MMIO_SLOTS; slot++) {
        uintptr_t base = VIRTIO_MMIO_BASE + (uintptr_t)slot * VIRTIO_MMIO_STRIDE;
        uint32_t magic = *(volatile uint32_t *)(base + MMIO_MAGIC);
        uint32_t id = *(volatile uint32_t *)(base + MMIO_DEVICE_ID);
        if (magic != VIRTIO_MAGIC || id == 0)
            continue;
        show_device(slot, base, id);
        n++;
    }
    printf("devlist: %d virtio devices\n", n);
    show_string("bootargs", fdt, "/chosen", "bootargs");
    show_string("cpu0", fdt, "/cpus/cpu@0", "compatible");
    show_initrd(fdt);
    printf("devlist done\n");
    return 0;
}
