/* virtio_gpu.h - virtio-gpu 2D device (virtio_gpu.c) and the frame store behind the screen API (screen.c). */
#ifndef VMM_VIRTIO_GPU_H
#define VMM_VIRTIO_GPU_H

#include "../core/vm.h"

/* Largest resource and scanout side we accept (and largest configured mode: the EDID's 12-bit fields). */
#define GPU_MAX_DIM 16384u
#define GPU_MAX_MODE_DIM 4095u

/* The VM's GPU (vmm_add_gpu), or NULL. */
struct vmm_gpu *vmm__gpu_find(struct vmm_vm *vm);

/*
 * The frame store (screen.c): the RGBA image of scanout 0 as last flushed,
 * the frame counter, held frames and their waiters. It has its own lock,
 * taken inside the GPU's; every call below is thread-safe.
 */
struct vmm_screen;

/* Guest pixel formats (virtio 1.2 §5.7.6.8, byte order in memory) */
enum {
    GPU_FORMAT_B8G8R8A8_UNORM = 1,
    GPU_FORMAT_B8G8R8X8_UNORM = 2,
    GPU_FORMAT_A8R8G8B8_UNORM = 3,
    GPU_FORMAT_X8R8G8B8_UNORM = 4,
    GPU_FORMAT_R8G8B8A8_UNORM = 67,
    GPU_FORMAT_X8B8G8R8_UNORM = 68,
    GPU_FORMAT_A8B8G8R8_UNORM = 121,
    GPU_FORMAT_R8G8B8X8_UNORM = 134,
};
bool vmm__gpu_format_ok(uint32_t format);

struct vmm_budget;
/* The image and held frames are taken from mem (the GPU's budget): over it, a mode set fails and a hold is lost. */
int vmm__screen_create(struct vmm_screen **out, struct vmm_budget *mem);
size_t vmm__screen_size(void); /* of the screen's own state */
void vmm__screen_destroy(struct vmm_screen *s);
void vmm__screen_set_running(struct vmm_screen *s, bool running);
/* Scanout 0 now shows a w x h image (0 x 0: disabled); its content is black until drawn. VMM_ENOMEM. */
int vmm__screen_set_mode(struct vmm_screen *s, uint32_t w, uint32_t h);
/*
 * Convert a w x h rectangle of guest pixels (`format`, rows `stride` bytes
 * apart) into the image at (x, y); the caller has clipped it to the mode.
 */
void vmm__screen_draw(struct vmm_screen *s, uint32_t x, uint32_t y, uint32_t w, uint32_t h, const uint8_t *src,
                      size_t stride, uint32_t format);
/*
 * A flush: the rectangle (as for vmm__screen_draw) becomes part of the next
 * frame, which is counted, copied for a hold of its number, and announced to
 * waiters. The pixels are converted only when someone looks (or a hold needs
 * them): until then src is read later, so the GPU must call
 * vmm__screen_settle() before it writes or frees any of them.
 */
void vmm__screen_flush(struct vmm_screen *s, uint32_t x, uint32_t y, uint32_t w, uint32_t h, const uint8_t *src,
                       size_t stride, uint32_t format);
/* Whether the pending flush still reads guest pixels in [lo, hi). */
bool vmm__screen_reads(struct vmm_screen *s, const uint8_t *lo, const uint8_t *hi);
/* Convert the pending flush now if it reads guest pixels in [lo, hi): they are about to change or go. */
void vmm__screen_settle(struct vmm_screen *s, const uint8_t *lo, const uint8_t *hi);
struct vmm_screen *vmm__gpu_screen(struct vmm_gpu *g);
/*
 * Snapshots: the image as shown (mode and pixels), the frame counter, whether it changed since, and the
 * held frames, each taken from the budget again when loading (which fails cleanly over it). w x h must
 * be the mode the GPU's scanout expects (checked by the caller). GPU lock held.
 */
struct vmm_snap;
void vmm__screen_snap(struct vmm_screen *s, struct vmm_snap *snap);
void vmm__screen_mode(struct vmm_screen *s, uint32_t *w, uint32_t *h);
/* Deterministic run loop, at every round boundary: park there while a vmm_screen_pause_at() is due. */
uint64_t vmm__screen_frames(void *screen); /* frames so far: the run loop's park source */

#endif
