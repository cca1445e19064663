/*
 * snap_stream.c - the section stream devices save into and load from (snapshot.h).
 *
 * Layout of one section (little-endian):
 *     u32 magic "SECT" | char name[32] (NUL-padded) | u32 version | u64 payload length |
 *     u32 CRC-32 of the payload | u32 zero | payload
 * A stream is sections back to back. Loading looks a section up by name, so the order of devices
 * may change between versions; names are unique (the board appends the device's index).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vmm.h"
#include "snapshot.h"

#define SECT_MAGIC 0x54434553u /* "SECT" */
#define SECT_HDR (4 + VMM_SNAP_NAME_LEN + 4 + 8 + 4 + 4)

void vmm__snap_init_save(struct vmm_snap *s)
{
    memset(s, 0, sizeof(*s));
}

void vmm__snap_init_load(struct vmm_snap *s, const void *buf, size_t len)
{
    memset(s, 0, sizeof(*s));
    s->loading = true;
    s->buf = (uint8_t *)buf;
    s->len = len;
}

void vmm__snap_free(struct vmm_snap *s)
{
    if (!s->loading)
        free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

static int vfail(struct vmm_snap *s, int code, const char *fmt, va_list ap)
{
    if (s->err)
        return s->err;
    s->err = code;
    int n = 0;
    if (s->in_section)
        n = snprintf(s->errmsg, sizeof(s->errmsg), "section %s: ", s->sec_name);
    if (n < 0 || (size_t)n >= sizeof(s->errmsg))
        n = 0;
    vsnprintf(s->errmsg + n, sizeof(s->errmsg) - (size_t)n, fmt, ap);
    return code;
}

int vmm__snap_fail(struct vmm_snap *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vfail(s, VMM_EFORMAT, fmt, ap);
    va_end(ap);
    return r;
}

int vmm__snap_fail_code(struct vmm_snap *s, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vfail(s, code, fmt, ap);
    va_end(ap);
    return r;
}

/* Saving: append len bytes (or reserve them when p is NULL). */
static uint8_t *put(struct vmm_snap *s, const void *p, size_t len)
{
    if (s->err)
        return NULL;
    if (s->in_section && s->len - s->sec_start + len > VMM_SNAP_MAX_SECTION) {
        vmm__snap_fail_code(s, VMM_ERANGE, "larger than %u MiB", VMM_SNAP_MAX_SECTION >> 20);
        return NULL;
    }
    if (s->cap - s->len < len) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap - s->len < len)
            cap *= 2;
        uint8_t *nb = realloc(s->buf, cap);
        if (!nb) {
            vmm__snap_fail_code(s, VMM_ENOMEM, "out of memory");
            return NULL;
        }
        s->buf = nb;
        s->cap = cap;
    }
    uint8_t *at = s->buf + s->len;
    if (p)
        memcpy(at, p, len);
    else
        memset(at, 0, len);
    s->len += len;
    return at;
}

/* Loading: the next len bytes of the open section, or NULL (error set). */
static const uint8_t *get(struct vmm_snap *s, size_t len)
{
    if (s->err)
        return NULL;
    size_t end = s->in_section ? s->sec_end : s->len;
    if (len > end - s->pos) {
        vmm__snap_fail(s, "truncated (%zu bytes wanted, %zu left)", len, end - s->pos);
        return NULL;
    }
    const uint8_t *at = s->buf + s->pos;
    s->pos += len;
    return at;
}

static uint64_t le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_le(struct vmm_snap *s, uint64_t v, unsigned n)
{
    uint8_t b[8];
    for (unsigned i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put(s, b, n);
}

static void sync_le(struct vmm_snap *s, uint64_t *v, unsigned n)
{
    if (!s->loading) {
        put_le(s, *v, n);
        return;
    }
    const uint8_t *p = get(s, n);
    *v = p ? le(p, n) : 0;
}

void vmm__snap_u8(struct vmm_snap *s, uint8_t *v)
{
    uint64_t x = *v;
    sync_le(s, &x, 1);
    *v = (uint8_t)x;
}

void vmm__snap_u16(struct vmm_snap *s, uint16_t *v)
{
    uint64_t x = *v;
    sync_le(s, &x, 2);
    *v = (uint16_t)x;
}

void vmm__snap_u32(struct vmm_snap *s, uint32_t *v)
{
    uint64_t x = *v;
    sync_le(s, &x, 4);
    *v = (uint32_t)x;
}

void vmm__snap_u64(struct vmm_snap *s, uint64_t *v)
{
    sync_le(s, v, 8);
}

void vmm__snap_bool(struct vmm_snap *s, bool *v)
{
    uint64_t x = *v;
    sync_le(s, &x, 1);
    if (s->loading && x > 1)
        vmm__snap_fail(s, "a flag is %llu", (unsigned long long)x);
    *v = x == 1;
}

void vmm__snap_int(struct vmm_snap *s, int *v)
{
    uint64_t x = (uint64_t)(int64_t)*v;
    sync_le(s, &x, 8);
    int64_t i = (int64_t)x;
    if (s->loading && (i < -2147483647 - 1 || i > 2147483647))
        vmm__snap_fail(s, "a value does not fit an int");
    *v = s->err ? 0 : (int)i;
}

void vmm__snap_unsigned(struct vmm_snap *s, unsigned *v)
{
    uint64_t x = *v;
    sync_le(s, &x, 8);
    if (s->loading && x > 0xffffffffu)
        vmm__snap_fail(s, "a value does not fit an unsigned int");
    *v = s->err ? 0 : (unsigned)x;
}

void vmm__snap_bytes(struct vmm_snap *s, void *p, size_t len)
{
    if (!s->loading) {
        put(s, p, len);
        return;
    }
    const uint8_t *at = get(s, len);
    if (at)
        memcpy(p, at, len);
    else
        memset(p, 0, len);
}

void vmm__snap_blob(struct vmm_snap *s, void **p, size_t *len, size_t max)
{
    uint64_t n = s->loading ? 0 : *len;
    sync_le(s, &n, 8);
    if (!s->loading) {
        put(s, *p, (size_t)n);
        return;
    }
    *p = NULL;
    *len = 0;
    if (s->err)
        return;
    if (n > max) {
        vmm__snap_fail(s, "%llu bytes where at most %zu fit", (unsigned long long)n, max);
        return;
    }
    const uint8_t *at = get(s, (size_t)n);
    if (!at || n == 0)
        return;
    void *b = malloc((size_t)n);
    if (!b) {
        vmm__snap_fail_code(s, VMM_ENOMEM, "out of memory");
        return;
    }
    memcpy(b, at, (size_t)n);
    *p = b;
    *len = (size_t)n;
}

void vmm__snap_str(struct vmm_snap *s, char *buf, size_t cap)
{
    uint64_t n = s->loading ? 0 : strnlen(buf, cap);
    if (!s->loading && n >= cap) {
        vmm__snap_fail(s, "a string is not terminated");
        return;
    }
    sync_le(s, &n, 2);
    if (!s->loading) {
        put(s, buf, (size_t)n);
        return;
    }
    if (!s->err && n >= cap) {
        vmm__snap_fail(s, "a string of %llu bytes where at most %zu fit", (unsigned long long)n, cap - 1);
        return;
    }
    const uint8_t *at = get(s, (size_t)n);
    if (!at) {
        if (cap)
            buf[0] = 0;
        return;
    }
    if (memchr(at, 0, (size_t)n)) {
        vmm__snap_fail(s, "a string holds a NUL byte");
        return;
    }
    memcpy(buf, at, (size_t)n);
    buf[n] = 0;
}

/* Loading: the offset of section `name`'s header, or -1. Walks the whole stream, checking links. */
static long long find(const struct vmm_snap *s, const char *name)
{
    size_t at = 0;
    while (s->len - at >= SECT_HDR) {
        const uint8_t *h = s->buf + at;
        if (le(h, 4) != SECT_MAGIC)
            return -2;
        uint64_t plen = le(h + 4 + VMM_SNAP_NAME_LEN + 4, 8);
        if (plen > s->len - at - SECT_HDR)
            return -2;
        if (strncmp((const char *)h + 4, name, VMM_SNAP_NAME_LEN) == 0)
            return (long long)at;
        at += SECT_HDR + (size_t)plen;
    }
    return -1;
}

bool vmm__snap_has(const struct vmm_snap *s, const char *name)
{
    return s->loading && find(s, name) >= 0;
}

int vmm__snap_begin(struct vmm_snap *s, const char *name, uint32_t *version)
{
    if (s->err)
        return s->err;
    if (s->in_section || strlen(name) >= VMM_SNAP_NAME_LEN)
        return vmm__snap_fail_code(s, VMM_EINVAL, "bad section name '%s'", name);
    snprintf(s->sec_name, sizeof(s->sec_name), "%s", name);
    if (!s->loading) {
        char nm[VMM_SNAP_NAME_LEN] = { 0 };
        memcpy(nm, name, strlen(name));
        put_le(s, SECT_MAGIC, 4);
        put(s, nm, sizeof(nm));
        put_le(s, *version, 4);
        put(s, NULL, 8 + 4 + 4); /* length and CRC: patched by end */
        s->sec_start = s->len;
        s->in_section = !s->err;
        return s->err;
    }
    long long at = find(s, name);
    if (at == -2)
        return vmm__snap_fail(s, "the section list is corrupt (looking for %s)", name);
    if (at < 0)
        return vmm__snap_fail(s, "no section %s", name);
    const uint8_t *h = s->buf + at;
    uint32_t v = (uint32_t)le(h + 4 + VMM_SNAP_NAME_LEN, 4);
    uint64_t plen = le(h + 4 + VMM_SNAP_NAME_LEN + 4, 8);
    uint32_t crc = (uint32_t)le(h + 4 + VMM_SNAP_NAME_LEN + 12, 4);
    s->sec_start = s->pos = (size_t)at + SECT_HDR;
    s->sec_end = s->sec_start + (size_t)plen;
    s->sec_version = v;
    s->in_section = true;
    if ((uint32_t)crc32(0L, s->buf + s->sec_start, (uInt)plen) != crc)
        return vmm__snap_fail(s, "checksum mismatch (the file is corrupt)");
    if (v > *version)
        return vmm__snap_fail_code(s, VMM_ENOTSUP, "format version %u is newer than this libvmm reads (%u)", v,
                                   *version);
    *version = v;
    return 0;
}

int vmm__snap_end(struct vmm_snap *s)
{
    if (s->err) {
        s->in_section = false;
        return s->err;
    }
    if (!s->in_section)
        return vmm__snap_fail_code(s, VMM_EINVAL, "no section is open");
    if (s->loading) {
        if (s->pos != s->sec_end)
            vmm__snap_fail(s, "%zu bytes left over", s->sec_end - s->pos);
    } else {
        size_t plen = s->len - s->sec_start;
        uint8_t *h = s->buf + s->sec_start - SECT_HDR;
        uint32_t crc = (uint32_t)crc32(0L, s->buf + s->sec_start, (uInt)plen);
        for (unsigned i = 0; i < 8; i++)
            h[4 + VMM_SNAP_NAME_LEN + 4 + i] = (uint8_t)((uint64_t)plen >> (8 * i));
        for (unsigned i = 0; i < 4; i++)
            h[4 + VMM_SNAP_NAME_LEN + 12 + i] = (uint8_t)(crc >> (8 * i));
    }
    s->in_section = false;
    return s->err;
}
