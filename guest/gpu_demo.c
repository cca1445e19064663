/* gpu_demo.c - virtio-gpu 2D: a test picture (gradient, title, colour bars, circles, lines, text) at the size
   GET_DISPLAY_INFO reports, then an animation (a moving box and a frame counter), one flush per frame.
   Frame N's pixels depend only on N and the display size. After frame HOLD_FRAME it waits up to HOLD_MS
   for a byte on the UART, so a host can take a screenshot of a known frame (tools/qemu_ref.py). */
#include "rt.h"

#define FRAMES 30
#define HOLD_FRAME 10
#define HOLD_MS 10000
#define FB_BASE 0x41000000UL /* 16 MiB into RAM, far above the image */
#define FB_MAX (16UL << 20)  /* up to 16 MiB of pixels (2048 x 2048) */
#define MAX_DIM 4096

/* colours (0x00RRGGBB, B8G8R8X8 in memory) */
#define WHITE GPU_RGB(255, 255, 255)
#define BLACK GPU_RGB(0, 0, 0)
#define TITLE_BG GPU_RGB(32, 32, 32)
#define TRACK GPU_RGB(48, 48, 64)
#define OUTLINE GPU_RGB(255, 255, 0)

static uint32_t W, H;
static uint32_t *fb;

struct rect {
    int x, y, w, h;
};
static struct rect clip; /* every drawing primitive stays inside it */

/* ---- the layout, shared with tests/test_gpu_demo.py (keep them in step) ---- */
#define TITLE_H 72
#define TITLE_SCALE 6
#define BAR_Y 96
#define BAR_H ((int)H / 5)
#define CIRCLE_R ((int)H / 10)
#define CIRCLE_Y (BAR_Y + BAR_H + 40 + CIRCLE_R)
#define CIRCLE_X(i) ((int)W * (2 * (i) + 1) / 10) /* i = 0, 1, 2 */
#define FAN_X ((int)W * 4 / 5)
#define FAN_L ((int)H / 8)
#define BAND_Y ((int)H - 232) /* the animated band: redrawn every frame */
#define BAND_H 192
#define BOX 64
#define BOX_X(n) (24 + ((n)-1) * ((int)W - 48 - BOX) / (FRAMES - 1))
#define BOX_Y (BAND_Y + 24)
#define COUNTER_SCALE 5

static const uint32_t bars[8] = {
    GPU_RGB(255, 255, 255), GPU_RGB(255, 255, 0), GPU_RGB(0, 255, 255), GPU_RGB(0, 255, 0),
    GPU_RGB(255, 0, 255),   GPU_RGB(255, 0, 0),   GPU_RGB(0, 0, 255),   GPU_RGB(0, 0, 0),
};
static const uint32_t circles[3] = { GPU_RGB(255, 0, 0), GPU_RGB(0, 255, 0), GPU_RGB(0, 0, 255) };

static uint32_t box_color(int n)
{
    return GPU_RGB(255, (n * 8) & 0xff, 64);
}

static uint32_t background(int x, int y)
{
    return GPU_RGB(16 + x * 64 / (int)W, 32, 64 + y * 128 / (int)H);
}

/* ---- primitives, clipped ---- */
static int imax(int a, int b)
{
    return a > b ? a : b;
}

static int imin(int a, int b)
{
    return a < b ? a : b;
}

static void pixel(int x, int y, uint32_t c)
{
    if (x >= clip.x && x < clip.x + clip.w && y >= clip.y && y < clip.y + clip.h)
        fb[(uint32_t)y * W + (uint32_t)x] = c;
}

static void fill_rect(int x, int y, int w, int h, uint32_t c)
{
    int x0 = imax(x, clip.x), x1 = imin(x + w, clip.x + clip.w);
    int y0 = imax(y, clip.y), y1 = imin(y + h, clip.y + clip.h);

    for (int j = y0; j < y1; j++) {
        uint32_t *row = fb + (uint32_t)j * W;
        for (int i = x0; i < x1; i++)
            row[i] = c;
    }
}

static void outline_rect(int x, int y, int w, int h, int t, uint32_t c)
{
    fill_rect(x, y, w, t, c);
    fill_rect(x, y + h - t, w, t, c);
    fill_rect(x, y, t, h, c);
    fill_rect(x + w - t, y, t, h, c);
}

static void fill_background(void)
{
    for (int j = clip.y; j < clip.y + clip.h; j++)
        for (int i = clip.x; i < clip.x + clip.w; i++)
            fb[(uint32_t)j * W + (uint32_t)i] = background(i, j);
}

static void fill_circle(int cx, int cy, int r, uint32_t c)
{
    int y0 = imax(cy - r, clip.y), y1 = imin(cy + r + 1, clip.y + clip.h);

    for (int y = y0; y < y1; y++) {
        int dy = y - cy, dx = 0;
        while ((dx + 1) * (dx + 1) + dy * dy <= r * r)
            dx++;
        fill_rect(cx - dx, y, 2 * dx + 1, 1, c);
    }
}

/* Bresenham, 2 pixels thick */
static void line(int x0, int y0, int x1, int y1, uint32_t c)
{
    int dx = x1 > x0 ? x1 - x0 : x0 - x1, sx = x0 < x1 ? 1 : -1;
    int dy = y1 > y0 ? y0 - y1 : y1 - y0, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;

    for (;;) {
        pixel(x0, y0, c);
        pixel(x0 + 1, y0, c);
        pixel(x0, y0 + 1, c);
        if (x0 == x1 && y0 == y1)
            break;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            err += dx;
            y0 += sy;
        }
    }
}

static void text(int x, int y, int scale, const char *s, uint32_t c)
{
    for (; *s; s++, x += FONT_W * scale)
        for (unsigned row = 0; row < FONT_GLYPH_H; row++) {
            unsigned bits = font_row(*s, row);
            for (unsigned col = 0; col < FONT_GLYPH_W; col++)
                if (bits & (1u << (FONT_GLYPH_W - 1 - col)))
                    fill_rect(x + (int)col * scale, y + (int)row * scale, scale, scale, c);
        }
}

/* decimal, at least `digits` digits */
static char *fmt_uint(char *p, unsigned v, int digits)
{
    char tmp[12];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v || n < digits);
    while (n)
        *p++ = tmp[--n];
    *p = 0;
    return p;
}

static char *append(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    *p = 0;
    return p;
}

/* ---- the scene ---- */
static void draw_static(void)
{
    char buf[64], *p;

    /* title bar */
    fill_rect(0, 0, (int)W, TITLE_H, TITLE_BG);
    text(24, (TITLE_H - FONT_GLYPH_H * TITLE_SCALE) / 2, TITLE_SCALE, "vmmpy GPU demo", WHITE);

    /* colour bars */
    for (int i = 0; i < 8; i++)
        fill_rect(i * (int)W / 8, BAR_Y, (i + 1) * (int)W / 8 - i * (int)W / 8, BAR_H, bars[i]);

    /* red, green, blue circles, each with a white centre dot */
    for (int i = 0; i < 3; i++) {
        fill_circle(CIRCLE_X(i), CIRCLE_Y, CIRCLE_R, circles[i]);
        fill_circle(CIRCLE_X(i), CIRCLE_Y, 6, WHITE);
    }

    /* a fan of lines inside a yellow frame */
    for (int i = 0; i <= 16; i++) {
        int t = -FAN_L + i * 2 * FAN_L / 16;
        uint32_t c = (i & 1) ? WHITE : GPU_RGB(0, 255, 255);
        line(FAN_X, CIRCLE_Y, FAN_X + t, CIRCLE_Y - FAN_L, c);
        line(FAN_X, CIRCLE_Y, FAN_X + t, CIRCLE_Y + FAN_L, c);
        line(FAN_X, CIRCLE_Y, FAN_X - FAN_L, CIRCLE_Y + t, c);
        line(FAN_X, CIRCLE_Y, FAN_X + FAN_L, CIRCLE_Y + t, c);
    }
    outline_rect(FAN_X - FAN_L - 8, CIRCLE_Y - FAN_L - 8, 2 * FAN_L + 18, 2 * FAN_L + 18, 3, OUTLINE);

    /* footer */
    p = append(buf, "virtio-gpu 2D ");
    p = fmt_uint(p, W, 1);
    p = append(p, "x");
    p = fmt_uint(p, H, 1);
    append(p, " B8G8R8X8  ASCII: !\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`{|}~");
    text(24, (int)H - 28, 2, buf, WHITE);
    text(24, (int)H - 28 - 3 * FONT_H, 2, "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz", WHITE);
}

static void draw_band(int n)
{
    char buf[32], *p;

    fill_rect(16, BAND_Y + 16, (int)W - 32, BOX + 16, TRACK);
    fill_rect(BOX_X(n), BOX_Y, BOX, BOX, box_color(n));
    outline_rect(BOX_X(n), BOX_Y, BOX, BOX, 2, BLACK);
    p = append(buf, "frame ");
    p = fmt_uint(p, (unsigned)n, 2);
    p = append(p, "/");
    fmt_uint(p, FRAMES, 2);
    text(24, BAND_Y + 112, COUNTER_SCALE, buf, WHITE);
}

/* frame n (1..FRAMES) inside r */
static void render(int n, struct rect r)
{
    clip = r;
    fill_background();
    draw_static();
    draw_band(n);
}

int main(uint64_t dtb)
{
    static struct gpu gpu;
    struct rect full, band;

    (void)dtb;
    test_begin("gpu_demo");
    mmu_enable(NULL); /* Normal memory: fast pixel writes (and check.c's spinlock) */
    if (gpu_init(&gpu))
        return test_end();
    W = gpu.width;
    H = gpu.height;
    if (!test_check(W >= 320 && H >= 240 && W <= MAX_DIM && H <= MAX_DIM && (uint64_t)W * H * 4 <= FB_MAX,
                    "display %ux%u not supported (320x240 up to 16 MiB of pixels)", W, H))
        return test_end();
    fb = (uint32_t *)FB_BASE;
    if (gpu_setup_framebuffer(&gpu, fb))
        return test_end();
    printf("gpu_demo: %ux%u framebuffer at 0x%lx, %d frames\n", W, H, FB_BASE, FRAMES);

    full = (struct rect){ 0, 0, (int)W, (int)H };
    band = (struct rect){ 0, BAND_Y, (int)W, BAND_H };
    for (int n = 1; n <= FRAMES; n++) {
        struct rect r = n == 1 ? full : band;
        render(n, r);
        if (gpu_flush(&gpu, (uint32_t)r.x, (uint32_t)r.y, (uint32_t)r.w, (uint32_t)r.h))
            return test_end();
        printf("gpu_demo: frame %d\n", n);
        if (n == HOLD_FRAME) {
            printf("gpu_demo: holding frame %d for up to %d ms: send a byte to go on\n", n, HOLD_MS);
            POLL_UNTIL(uart_trygetc() >= 0, HOLD_MS);
            while (uart_trygetc() >= 0)
                ;
        }
    }
    return test_end();
}
