/* p9_wire.h - 9P2000.L wire encoding: bounds-checked little-endian readers and writers. */
#ifndef VMM_P9_WIRE_H
#define VMM_P9_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define P9_HDR_SIZE 7 /* size[4] type[1] tag[2] */
#define P9_QID_SIZE 13
#define P9_NOTAG 0xffffu
#define P9_NOFID 0xffffffffu

/* qid types */
#define P9_QTDIR 0x80
#define P9_QTSYMLINK 0x02
#define P9_QTFILE 0x00

struct p9_qid {
    uint8_t type;
    uint32_t version;
    uint64_t path;
};

/* A reader over [p, p + len). Every read checks the remaining length; a short read sets err and yields 0. */
struct p9_rd {
    const uint8_t *p;
    size_t len, off;
    bool err;
};

/* A writer into [p, p + cap). A write that does not fit sets err and writes nothing. */
struct p9_wr {
    uint8_t *p;
    size_t cap, off;
    bool err;
};

uint8_t p9_r8(struct p9_rd *r);
uint16_t p9_r16(struct p9_rd *r);
uint32_t p9_r32(struct p9_rd *r);
uint64_t p9_r64(struct p9_rd *r);
/* A string: len[2] bytes[len]. *s points into the message (not NUL-terminated); NULL on error. */
const char *p9_rstr(struct p9_rd *r, uint16_t *len);
/* n raw bytes; NULL on error. */
const uint8_t *p9_rbytes(struct p9_rd *r, size_t n);
size_t p9_rleft(const struct p9_rd *r);

void p9_w8(struct p9_wr *w, uint8_t v);
void p9_w16(struct p9_wr *w, uint16_t v);
void p9_w32(struct p9_wr *w, uint32_t v);
void p9_w64(struct p9_wr *w, uint64_t v);
void p9_wstr(struct p9_wr *w, const char *s, size_t len); /* len > 65535 sets err */
void p9_wbytes(struct p9_wr *w, const void *b, size_t n);
void p9_wqid(struct p9_wr *w, const struct p9_qid *q);
/* Reserve n bytes and return where they start (NULL and err if they do not fit). */
uint8_t *p9_wreserve(struct p9_wr *w, size_t n);
size_t p9_wleft(const struct p9_wr *w);

/* Little-endian stores for patching a header. */
void p9_put16(uint8_t *p, uint16_t v);
void p9_put32(uint8_t *p, uint32_t v);
uint32_t p9_get32(const uint8_t *p);
uint16_t p9_get16(const uint8_t *p);

#endif
