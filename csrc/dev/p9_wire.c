/* p9_wire.c - 9P2000.L wire encoding (little-endian, bounds-checked). */
#include <string.h>

#include "p9_wire.h"

static const uint8_t *take(struct p9_rd *r, size_t n)
{
    const uint8_t *at;

    if (r->err || n > r->len - r->off) {
        r->err = true;
        return NULL;
    }
    at = r->p + r->off;
    r->off += n;
    return at;
}

uint8_t p9_r8(struct p9_rd *r)
{
    const uint8_t *b = take(r, 1);
    return b ? b[0] : 0;
}

uint16_t p9_r16(struct p9_rd *r)
{
    const uint8_t *b = take(r, 2);
    return b ? p9_get16(b) : 0;
}

uint32_t p9_r32(struct p9_rd *r)
{
    const uint8_t *b = take(r, 4);
    return b ? p9_get32(b) : 0;
}

uint64_t p9_r64(struct p9_rd *r)
{
    const uint8_t *b = take(r, 8);
    return b ? (uint64_t)p9_get32(b) | (uint64_t)p9_get32(b + 4) << 32 : 0;
}

const char *p9_rstr(struct p9_rd *r, uint16_t *len)
{
    uint16_t n = p9_r16(r);
    const uint8_t *b = take(r, n);

    *len = b ? n : 0;
    return (const char *)b;
}

const uint8_t *p9_rbytes(struct p9_rd *r, size_t n)
{
    return take(r, n);
}

size_t p9_rleft(const struct p9_rd *r)
{
    return r->err ? 0 : r->len - r->off;
}

uint8_t *p9_wreserve(struct p9_wr *w, size_t n)
{
    uint8_t *at;

    if (w->err || n > w->cap - w->off) {
        w->err = true;
        return NULL;
    }
    at = w->p + w->off;
    w->off += n;
    return at;
}

size_t p9_wleft(const struct p9_wr *w)
{
    return w->err ? 0 : w->cap - w->off;
}

void p9_w8(struct p9_wr *w, uint8_t v)
{
    uint8_t *b = p9_wreserve(w, 1);
    if (b)
        b[0] = v;
}

void p9_w16(struct p9_wr *w, uint16_t v)
{
    uint8_t *b = p9_wreserve(w, 2);
    if (b)
        p9_put16(b, v);
}

void p9_w32(struct p9_wr *w, uint32_t v)
{
    uint8_t *b = p9_wreserve(w, 4);
    if (b)
        p9_put32(b, v);
}

void p9_w64(struct p9_wr *w, uint64_t v)
{
    uint8_t *b = p9_wreserve(w, 8);
    if (b) {
        p9_put32(b, (uint32_t)v);
        p9_put32(b + 4, (uint32_t)(v >> 32));
    }
}

void p9_wstr(struct p9_wr *w, const char *s, size_t len)
{
    uint8_t *b;

    if (len > 0xffff) {
        w->err = true;
        return;
    }
    if ((b = p9_wreserve(w, 2 + len))) {
        p9_put16(b, (uint16_t)len);
        if (len)
            memcpy(b + 2, s, len);
    }
}

void p9_wbytes(struct p9_wr *w, const void *d, size_t n)
{
    uint8_t *b = p9_wreserve(w, n);
    if (b && n)
        memcpy(b, d, n);
}

void p9_wqid(struct p9_wr *w, const struct p9_qid *q)
{
    p9_w8(w, q->type);
    p9_w32(w, q->version);
    p9_w64(w, q->path);
}

void p9_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void p9_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

uint16_t p9_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

uint32_t p9_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
