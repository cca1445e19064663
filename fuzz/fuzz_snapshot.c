/*
 * fuzz_snapshot.c - libFuzzer target: the snapshot loader (vmm_snapshot_restore: header, extent list,
 * the section stream and every section's loader: machine, boot, clock, irqchip, vcpu.N, console,
 * devices).
 *
 * Input: one flags byte, then the file. Flags bit 0: the harness recomputes the header's, the extent
 * list's and every section's CRC-32 first (walking the section chain as far as it holds), so that
 * mutations reach the checks behind the checksums; bit 1: a restored VM runs for 2 ms (host time),
 * executing whatever vCPU state was accepted. The file reaches the loader through a memfd's
 * /proc/self/fd path. Any return code is fine; ASan/UBSan watch for the rest, and the heap after
 * vmm_destroy must be back where it was. Seeds: fuzz/corpus/snapshot (fuzz/make_corpus.py --snapshot).
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

#define HDR 4096
#define SECT_HDR (4 + 32 + 4 + 8 + 4 + 4)

static uint64_t le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Make the checksums match the (mutated) contents. */
static void fix_crcs(uint8_t *b, size_t n)
{
    if (n < 152)
        return;
    uint64_t slen = le(b + 112, 8), ext = le(b + 120, 8), next = le(b + 100, 4);
    for (uint64_t at = HDR; n >= HDR && slen <= n - HDR && at + SECT_HDR <= HDR + slen;) {
        uint64_t plen = le(b + at + 40, 8);
        if (plen > HDR + slen - at - SECT_HDR)
            break;
        put32(b + at + 48, (uint32_t)crc32(0L, b + at + SECT_HDR, (uInt)plen));
        at += SECT_HDR + plen;
    }
    if (ext <= n && next * 24 <= n - ext)
        put32(b + 144, (uint32_t)crc32(0L, b + ext, (uInt)(next * 24)));
    put32(b + 148, (uint32_t)crc32(0L, b, 148));
}

static int fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[256];
    vmm_vm *vm = NULL;

    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    uint8_t *file = malloc(size);
    if (!file)
        return 0;
    memcpy(file, data + 1, size - 1);
    if (flags & 1)
        fix_crcs(file, size - 1);
    if (fd < 0 && (fd = memfd_create("fuzz_snapshot", MFD_CLOEXEC)) < 0)
        abort();
    /* a fresh inode content each time: a restored VM's mappings of the last one are gone (destroyed) */
    if (ftruncate(fd, 0) || pwrite(fd, file, size - 1, 0) != (ssize_t)(size - 1))
        abort();
    free(file);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    struct vmm_restore_config rc = { .size = sizeof rc, .log_level = VMM_LOG_ERROR };
    size_t heap0 = __sanitizer_get_current_allocated_bytes();
    if (vmm_snapshot_restore(path, &rc, &vm, err, sizeof err) == 0) {
        if (flags & 2) {
            struct vmm_run_result res = { .size = sizeof res };
            vmm_run(vm, 2000000, &res);
        }
        vmm_destroy(vm);
    }
    size_t heap = __sanitizer_get_current_allocated_bytes();
    if (heap > heap0 + (1u << 20)) {
        fprintf(stderr, "fuzz_snapshot: %zu bytes more heap after vmm_destroy\n", heap - heap0);
        abort();
    }
    return 0;
}
