/* bench_gpu.c - virtio-gpu 2D benchmark, timed in the guest with CNTVCT_EL0: full-frame TRANSFER_TO_HOST_2D +
   RESOURCE_FLUSH pairs (the framebuffer changes a little before each), and the same pair for a small SMALL x SMALL
   rectangle (mostly the per-command cost). The display size is the one GET_DISPLAY_INFO reports (the host picks
   it: 1280x800 in bench/gpu.py). Each BENCH line carries bytes= (pixels transferred per iteration), so the
   host can compute MB/s. */
#include "rt.h"

#ifndef N
#define N 100 /* full-frame transfer + flush pairs per measurement */
#endif
#ifndef N_SMALL
#define N_SMALL (10 * N) /* small-rectangle pairs per measurement */
#endif
#define SMALL 64
#define REPEATS 3            /* the host keeps the minimum */
#define FB_BASE 0x41000000UL /* 16 MiB into RAM, far above the image (as gpu_demo) */
#define FB_MAX (16UL << 20)
#define MAX_DIM 4096
#define MARK 16 /* side of the square changed before each full-frame transfer */

static uint64_t freq;
static uint32_t W, H;
static uint32_t *fb;
static struct gpu gpu_dev;

static uint64_t counter(void)
{
    uint64_t t;
    __asm__ volatile("isb\n mrs %0, cntvct_el0\n isb" : "=r"(t)::"memory");
    return t;
}

static void bench_line(const char *name, unsigned iters, uint64_t ticks, uint64_t bytes)
{
    printf("BENCH name=%s iters=%u ticks=%lu freq=%lu bytes=%lu\n", name, iters, ticks, freq, bytes);
}

/* a MARK x MARK square whose place and colour depend on i: the frame is never the same twice in a row */
static void touch(unsigned i, uint32_t x0, uint32_t y0, uint32_t w, uint32_t h)
{
    uint32_t x = x0 + (i * 37) % (w - MARK + 1), y = y0 + (i * 23) % (h - MARK + 1);
    uint32_t c = GPU_RGB((i * 7) & 0xff, (255 - i * 3) & 0xff, (i * 13) & 0xff);

    for (uint32_t j = 0; j < MARK; j++)
        for (uint32_t k = 0; k < MARK; k++)
            fb[(y + j) * W + x + k] = c;
}

/* 0, or -1 once a command failed (a FAIL line says which) */
static int full_frame(void)
{
    uint64_t t0 = counter();
    for (unsigned i = 0; i < N; i++) {
        touch(i, 0, 0, W, H);
        if (gpu_flush(&gpu_dev, 0, 0, W, H))
            return -1;
    }
    bench_line("gpu_transfer_flush", N, counter() - t0, (uint64_t)W * H * 4);
    return 0;
}

static int small_rect(void)
{
    uint64_t t0 = counter();
    for (unsigned i = 0; i < N_SMALL; i++) {
        uint32_t x = (i * 67) % (W - SMALL + 1), y = (i * 41) % (H - SMALL + 1);
        touch(i, x, y, SMALL, SMALL);
        if (gpu_flush(&gpu_dev, x, y, SMALL, SMALL))
            return -1;
    }
    bench_line("gpu_small_flush", N_SMALL, counter() - t0, SMALL * SMALL * 4);
    return 0;
}

int main(uint64_t dtb)
{
    (void)dtb;
    test_begin("bench_gpu");
    mmu_enable(NULL); /* Normal memory: fast pixel writes (and check.c's spinlock) */
    freq = timer_freq();
    if (gpu_init(&gpu_dev))
        return test_end();
    W = gpu_dev.width;
    H = gpu_dev.height;
    if (!test_check(W >= SMALL && H >= SMALL && W <= MAX_DIM && H <= MAX_DIM && (uint64_t)W * H * 4 <= FB_MAX,
                    "display %ux%u not supported (64x64 up to 16 MiB of pixels)", W, H))
        return test_end();
    fb = (uint32_t *)FB_BASE;
    for (uint32_t j = 0; j < H; j++)
        for (uint32_t i = 0; i < W; i++)
            fb[j * W + i] = GPU_RGB(i * 255 / W, 64, j * 255 / H);
    if (gpu_setup_framebuffer(&gpu_dev, fb) || gpu_flush(&gpu_dev, 0, 0, W, H))
        return test_end();
    printf("gpu: %ux%u, %u full frames and %u %ux%u rectangles per measurement, %u repeats\n", W, H, (unsigned)N,
           (unsigned)N_SMALL, SMALL, SMALL, REPEATS);
    for (int rep = 0; rep < REPEATS; rep++)
        if (full_frame() || small_rect())
            return test_end();
    printf("BENCH done\n");
    return test_end();
}
