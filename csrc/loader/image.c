/* image.c - arm64 Linux Image loader (Documentation/arch/arm64/booting.rst), raw or gzip-compressed. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../core/layout.h"
#include "loader.h"

#define IMAGE_MAGIC 0x644d5241u /* "ARM\x64" at offset 0x38 */
#define IMAGE_HDR_SIZE 64
#define IMAGE_FLAG_BE 1u
#define IMAGE_OLD_TEXT_OFFSET 0x80000u /* kernels before 3.17 have image_size 0 */

struct image_header {
    uint32_t code0, code1;
    uint64_t text_offset, image_size, flags;
    uint64_t res2, res3, res4;
    uint32_t magic, res5;
};

bool vmm__is_image(const uint8_t *data, size_t len)
{
    uint32_t magic;

    if (len < IMAGE_HDR_SIZE)
        return false;
    memcpy(&magic, data + 0x38, 4);
    return magic == IMAGE_MAGIC;
}

/* Inflate a gzip stream; the result may not exceed `limit` bytes. */
static int gunzip(struct vmm_vm *vm, const char *name, const uint8_t *in, size_t len, uint64_t limit, uint8_t **out,
                  size_t *out_len)
{
    z_stream zs;
    size_t cap = len * 4 < (16u << 20) ? (16u << 20) : len * 4;
    uint8_t *buf;
    int zr;

    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return vmm__set_error(vm, VMM_ENOMEM, "%s: cannot start gzip decompression", name);
    if (cap > limit + 1)
        cap = limit + 1;
    if (!(buf = malloc(cap))) {
        inflateEnd(&zs);
        return vmm__set_error(vm, VMM_ENOMEM, "%s: out of memory decompressing", name);
    }
    zs.next_in = (Bytef *)in;
    zs.avail_in = len > UINT32_MAX ? UINT32_MAX : (uInt)len;
    for (;;) {
        if (zs.total_out == cap) {
            if (cap > limit) {
                free(buf);
                inflateEnd(&zs);
                return vmm__set_error(vm, VMM_ERANGE, "%s: decompressed kernel is larger than guest RAM (%llu MiB)",
                                      name, (unsigned long long)(vm->ram_size >> 20));
            }
            size_t ncap = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
            uint8_t *n = realloc(buf, ncap);
            if (!n) {
                free(buf);
                inflateEnd(&zs);
                return vmm__set_error(vm, VMM_ENOMEM, "%s: out of memory decompressing", name);
            }
            buf = n;
            cap = ncap;
        }
        zs.next_out = buf + zs.total_out;
        zs.avail_out = (uInt)(cap - zs.total_out > UINT32_MAX ? UINT32_MAX : cap - zs.total_out);
        zr = inflate(&zs, Z_NO_FLUSH);
        if (zr == Z_STREAM_END)
            break;
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            free(buf);
            inflateEnd(&zs);
            return vmm__set_error(vm, VMM_EFORMAT, "%s: corrupt gzip data (%s)", name, zs.msg ? zs.msg : "error");
        }
        if (zr == Z_BUF_ERROR && zs.avail_in == 0) {
            free(buf);
            inflateEnd(&zs);
            return vmm__set_error(vm, VMM_EFORMAT, "%s: truncated gzip data", name);
        }
    }
    *out_len = zs.total_out;
    *out = buf;
    inflateEnd(&zs);
    return 0;
}

static int load_plain(struct vmm_vm *vm, const uint8_t *data, size_t len, const char *name)
{
    struct image_header h;
    uint64_t text_offset, image_size, at;
    int rc;

    if (len < IMAGE_HDR_SIZE)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: truncated arm64 Image header (%zu bytes)", name, len);
    memcpy(&h, data, sizeof h);
    if (h.magic != IMAGE_MAGIC)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: not an arm64 Image (no \"ARM\\x64\" magic at 0x38)", name);
    if (h.flags & IMAGE_FLAG_BE)
        return vmm__set_error(vm, VMM_EARCH, "%s: big-endian arm64 Image is not supported", name);
    text_offset = h.text_offset;
    image_size = h.image_size;
    if (image_size == 0) { /* pre-3.17 kernel: no size in the header */
        text_offset = IMAGE_OLD_TEXT_OFFSET;
        image_size = len;
    }
    if (image_size < len)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: header image_size %" PRIu64 " is smaller than the file (%zu)", name,
                              image_size, len);
    if (text_offset >= vm->ram_size || image_size > vm->ram_size - text_offset)
        return vmm__set_error(
            vm, VMM_ERANGE, "%s: kernel needs %" PRIu64 " MiB at offset 0x%" PRIx64 " but guest RAM is %llu MiB", name,
            (image_size + (1u << 20) - 1) >> 20, text_offset, (unsigned long long)(vm->ram_size >> 20));
    /* a 2 MiB aligned base (the start of RAM) plus text_offset, as booting.rst asks */
    at = LAYOUT_RAM_BASE + text_offset;
    if ((rc = vmm__load_bytes(vm, name, "Image", at, data, len, image_size)))
        return rc;
    vm->kernel = (struct vmm_loaded_kernel){ .present = true, .start = at, .end = at + image_size, .entry = at };
    vmm__log(vm, VMM_LOG_DEBUG, "loader", "%s: arm64 Image at 0x%" PRIx64 " (%" PRIu64 " bytes reserved)", name, at,
             image_size);
    return 0;
}

int vmm__load_image(struct vmm_vm *vm, const uint8_t *data, size_t len, const char *name)
{
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    int rc;

    if (!vmm__is_gzip(data, len))
        return load_plain(vm, data, len, name);
    if ((rc = gunzip(vm, name, data, len, vm->ram_size, &raw, &raw_len)))
        return rc;
    if (!vmm__is_image(raw, raw_len))
        rc = vmm__set_error(vm, VMM_EFORMAT, "%s: gzip data does not hold an arm64 Image", name);
    else
        rc = load_plain(vm, raw, raw_len, name);
    free(raw);
    return rc;
}
