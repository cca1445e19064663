/*
 * snapshot.h - how state is written to and read from a snapshot (snap_stream.c), and the VM-level
 * save/restore (snapshot.c).
 *
 * A device describes its state once, with one function that both saves and loads: each
 * vmm__snap_* call writes the field when saving and fills it when loading. The same code runs
 * both ways, so what is saved is what is loaded, in the same order. Every value read back is
 * guest-controlled as far as we are concerned (a snapshot file can be hand-made): a device
 * checks what it loaded as it checks a register write, and fails with vmm__snap_fail().
 *
 * The stream is organised in sections, one per device (its board name and index, e.g.
 * "virtio-blk.0"), each with a format version of its own so a device can grow fields: a
 * loader that meets a newer version than it knows fails with one clear message.
 *
 *     static int blk_sync(struct vblk *b, struct vmm_snap *s)
 *     {
 *         vmm__snap_u64(s, &b->capacity);
 *         vmm__snap_u32(s, &b->status);
 *         if (vmm__snap_loading(s) && b->status > 0xff)
 *             return vmm__snap_fail(s, "status %u is not a byte", b->status);
 *         return vmm__snap_error(s);
 *     }
 *
 * Errors are sticky: after the first one every call is a no-op and vmm__snap_error() returns it,
 * so a sync function checks once at its end (and before it uses a loaded value as a size).
 */
#ifndef VMM_SNAPSHOT_H
#define VMM_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmm_vm;

/* Largest single section (RAM is not a section of this kind: snapshot.c maps it). */
#define VMM_SNAP_MAX_SECTION (64u << 20)
#define VMM_SNAP_NAME_LEN 32

struct vmm_snap {
    bool loading;
    int err;                   /* sticky: first error (VMM_E*) */
    char errmsg[256];          /* its message ("section virtio-blk.0: ...") */
    uint8_t *buf;              /* saving: the growing output; loading: the whole stream */
    size_t len, cap;           /* saving: bytes written / allocated; loading: stream length */
    size_t pos;                /* loading: read position */
    size_t sec_start, sec_end; /* the open section's payload [start, end) */
    char sec_name[VMM_SNAP_NAME_LEN];
    uint32_t sec_version; /* loading: the version found in the file */
    bool in_section;
};

/* A saving stream (empty) / a loading stream over buf[0..len) (not copied: must outlive s). */
void vmm__snap_init_save(struct vmm_snap *s);
void vmm__snap_init_load(struct vmm_snap *s, const void *buf, size_t len);
void vmm__snap_free(struct vmm_snap *s); /* saving: frees the buffer */

static inline bool vmm__snap_loading(const struct vmm_snap *s)
{
    return s->loading;
}
static inline int vmm__snap_error(const struct vmm_snap *s)
{
    return s->err;
}

/* Record the first error (VMM_EFORMAT) with a message naming the open section; returns it. */
int vmm__snap_fail(struct vmm_snap *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int vmm__snap_fail_code(struct vmm_snap *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Sections. Saving: begin writes the header, end patches its length and CRC. Loading: begin
 * finds the section by name (anywhere in the stream), checks its CRC and that its version is
 * <= max_version (*version gets the version found, so a sync can branch on it); end fails if
 * bytes are left over (a field added on one side only).
 */
int vmm__snap_begin(struct vmm_snap *s, const char *name, uint32_t *version);
int vmm__snap_end(struct vmm_snap *s);
/* Loading: whether a section exists (optional sections: a device that was not configured). */
bool vmm__snap_has(const struct vmm_snap *s, const char *name);

/* Fields: written when saving, read when loading (little-endian, fixed size). */
void vmm__snap_u8(struct vmm_snap *s, uint8_t *v);
void vmm__snap_u16(struct vmm_snap *s, uint16_t *v);
void vmm__snap_u32(struct vmm_snap *s, uint32_t *v);
void vmm__snap_u64(struct vmm_snap *s, uint64_t *v);
void vmm__snap_bool(struct vmm_snap *s, bool *v);
void vmm__snap_int(struct vmm_snap *s, int *v);           /* as int64, checked to fit */
void vmm__snap_unsigned(struct vmm_snap *s, unsigned *v); /* as u64, checked to fit */
/* Raw bytes of a known size (both sides agree on len). */
void vmm__snap_bytes(struct vmm_snap *s, void *p, size_t len);
/*
 * Variable-size data: saving writes *len and the bytes; loading checks the stored length is
 * <= max, allocates (malloc; *p NULL when 0) and fills *len. The caller owns *p.
 */
void vmm__snap_blob(struct vmm_snap *s, void **p, size_t *len, size_t max);
/* A NUL-terminated string into a fixed buffer of size cap (truncation when saving is an error). */
void vmm__snap_str(struct vmm_snap *s, char *buf, size_t cap);

/* A live VM's state without RAM (snapshot.c): reverse execution's checkpoints (checkpoint.c). */
int vmm__snapshot_live(struct vmm_vm *vm, struct vmm_snap *s);

#endif
