/*
 * fuzz_loader.c - libFuzzer target: the kernel loader (ELF, arm64 Image raw and gzip, raw binaries),
 * initrd placement, the boot layout and the device tree (vmm_prepare).
 *
 * Input: a 12-byte header, then the kernel, then (if the header says so) the initrd.
 *   byte 0: bits 0-1 the format (AUTO, ELF, IMAGE, RAW); bit 2: the harness gzips the kernel bytes
 *           first (so mutations of a valid Image stay valid gzip); bit 3: an initrd; bit 4: a command
 *           line; bit 5: pass no kernel_opts (NULL); bits 6-7: RAM 32, 64, 2 or 128 MiB
 *   bytes 1-4: the RAW load address as an offset from RAM (< 2^31; 0 = "not given")
 *   bytes 5-8: the RAW entry as an offset from the load address
 *   bytes 9-11: the initrd's length, up to 16 MiB (the last that many bytes of the input; more than
 *               there are: the rest is zeros)
 * One VM per input (32 MiB of RAM by default, a kernel loads only once); the initrd reaches
 * vmm_load_initrd through a memfd's /proc/self/fd path (no files, nothing to clean up). Any return
 * code is fine; ASan/UBSan watch for the rest, and the heap after vmm_destroy must be back where it
 * was (no leak per input).
 */
#define _GNU_SOURCE
#include <sanitizer/allocator_interface.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "vmm.h"

#define RAM 0x40000000ull

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* gzip data[0..len) into a malloc'd buffer; NULL on failure */
static uint8_t *gzip(const uint8_t *data, size_t len, size_t *out_len)
{
    z_stream zs = { 0 };
    size_t cap = len + len / 100 + 64;
    uint8_t *buf = malloc(cap);

    if (!buf || deflateInit2(&zs, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(buf);
        return NULL;
    }
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)len;
    zs.next_out = buf;
    zs.avail_out = (uInt)cap;
    int zr = deflate(&zs, Z_FINISH);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    if (zr != Z_STREAM_END) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int initrd_fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t ram_mib[4] = { 32, 64, 2, 128 };
    uint8_t *packed = NULL;
    vmm_vm *vm;

    if (size < 12)
        return 0;
    uint8_t flags = data[0];
    uint64_t load = le32(data + 1) & 0x7fffffffu, entry = le32(data + 5) & 0x7fffffffu;
    size_t ilen = (size_t)data[9] | (size_t)data[10] << 8 | (size_t)data[11] << 16;
    data += 12;
    size -= 12;
    size_t itail = flags & 8 ? (ilen < size ? ilen : size) : 0; /* initrd bytes from the input */
    size_t klen = size - itail;

    struct vmm_config c = {
        .size = sizeof c, .ram_size = ram_mib[flags >> 6] << 20, .log_level = VMM_LOG_ERROR, .backend = "soft"
    };
    struct vmm_kernel_opts o = { .size = sizeof o, .format = flags & 3 };
    if (load)
        o.load_addr = RAM + load;
    if (entry)
        o.entry = o.load_addr + entry;

    size_t heap0 = __sanitizer_get_current_allocated_bytes();
    if (vmm_create(&c, &vm, NULL, 0))
        return 0;
    const uint8_t *k = data;
    size_t kn = klen;
    if (flags & 4 && (packed = gzip(data, klen, &kn)))
        k = packed;
    else
        kn = klen;
    vmm_load_kernel_mem(vm, k, kn, "fuzz", flags & 0x20 ? NULL : &o);
    free(packed);
    if (flags & 8) {
        char path[64];
        if (initrd_fd < 0 && (initrd_fd = memfd_create("fuzz_initrd", MFD_CLOEXEC)) < 0)
            abort();
        if (ftruncate(initrd_fd, 0) || ftruncate(initrd_fd, (off_t)(ilen > itail ? ilen : itail)) ||
            pwrite(initrd_fd, data + klen, itail, 0) != (ssize_t)itail)
            abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", initrd_fd);
        vmm_load_initrd(vm, path);
    }
    if (flags & 0x10)
        vmm_set_cmdline(vm, "console=ttyAMA0 earlycon rdinit=/init");
    if (!vmm_prepare(vm)) {
        struct vmm_boot_info bi = { .size = sizeof bi };
        size_t dlen = 0;
        static uint8_t dtb[1 << 16];
        if (vmm_boot_info(vm, &bi))
            abort();
        /* where things landed is inside RAM and does not overlap */
        uint64_t end = bi.ram_base + bi.ram_size;
        if (bi.kernel_end < bi.kernel_start || bi.kernel_end > end || bi.kernel_start < bi.ram_base ||
            bi.entry < bi.ram_base || bi.entry >= end || bi.dtb_addr < bi.ram_base || bi.dtb_addr + bi.dtb_size > end ||
            (bi.initrd_end && (bi.initrd_start < bi.ram_base || bi.initrd_end > end ||
                               (bi.initrd_start < bi.kernel_end && bi.kernel_start < bi.initrd_end) ||
                               (bi.initrd_start < bi.dtb_addr + bi.dtb_size && bi.dtb_addr < bi.initrd_end))) ||
            (bi.dtb_addr < bi.kernel_end && bi.kernel_start < bi.dtb_addr + bi.dtb_size)) {
            fprintf(
                stderr,
                "fuzz_loader: bad layout: RAM 0x%llx+0x%llx kernel 0x%llx-0x%llx entry 0x%llx initrd 0x%llx-0x%llx "
                "dtb 0x%llx+0x%llx\n",
                (unsigned long long)bi.ram_base, (unsigned long long)bi.ram_size, (unsigned long long)bi.kernel_start,
                (unsigned long long)bi.kernel_end, (unsigned long long)bi.entry, (unsigned long long)bi.initrd_start,
                (unsigned long long)bi.initrd_end, (unsigned long long)bi.dtb_addr, (unsigned long long)bi.dtb_size);
            abort();
        }
        vmm_get_dtb(vm, dtb, sizeof dtb, &dlen);
    }
    vmm_destroy(vm);
    size_t heap = __sanitizer_get_current_allocated_bytes();
    if (heap > heap0 + (1u << 20)) { /* a leak per input (a small slack for the allocator's own caches) */
        fprintf(stderr, "fuzz_loader: %zu bytes more heap after vmm_destroy\n", heap - heap0);
        abort();
    }
    return 0;
}
