/* input_echo.c - virtio-input: find the keyboard and the tablet, post event buffers, print every event
   as "input: kbd|tab type=T code=C value=V", light CAPSL through the keyboard's statusq, and end with
   "PASS input_echo" once KEY_ESC is pressed. Keyboard and tablet are told apart by their EV_BITS
   (the tablet has EV_ABS), so it runs on vmmpy and on QEMU (virtio-keyboard/tablet-device).
   With a virtio-gpu it also shows frames: frame 1 (black) once ready, then one frame after every batch of
   events it printed ("input_echo: frame N at T us", T the guest clock). The tablet's pointer is a green crosshair
   (XORed, arms of 6 pixels) and a left click leaves a 5x5 white square there. */
#include "rt.h"

#define VIRTIO_ID_INPUT 18
#define CFG_EV_BITS 0x11
#define EV_SYN 0
#define EV_KEY 1
#define EV_ABS 3
#define EV_LED 0x11
#define KEY_ESC 1
#define LED_CAPSL 1
#define MMIO_QUEUE_NOTIFY 0x050
#define DESC_F_WRITE 2
#define WAIT_MS 120000
#define VIRTIO_ID_GPU 16
#define FB_BASE 0x41000000UL /* 16 MiB into RAM, far above the image */
#define FB_MAX (64u << 20)
#define ABS_X 0
#define ABS_Y 1
#define BTN_LEFT 0x110
#define ABS_MAX 32767

struct input {
    struct virtio_dev dev;
    const char *name;
    uint8_t buf[VIRTQ_SIZE][8] __attribute__((aligned(8)));
};

static struct input kbd = { .name = "kbd" }, tab = { .name = "tab" };
static uint8_t led_msg[8] __attribute__((aligned(8)));

static struct gpu gpu;
static int have_gpu, frame;
static uint32_t ptr_x, ptr_y; /* the tablet's pointer, in pixels */
static int have_ptr;          /* the tablet has reported a position */
static int dot;               /* a left click since the last frame: draw it */

#define ARM 6 /* the cursor: a crosshair with arms of ARM pixels, XORed in green so drawing it twice erases it */
#define CURSOR_XOR GPU_RGB(0, 255, 0)

static int cursor_shown; /* the crosshair is drawn at cursor_x/y */
static uint32_t cursor_x, cursor_y;

static void xor_px(uint32_t x, uint32_t y)
{
    if (x < gpu.width && y < gpu.height)
        gpu.fb[y * gpu.width + x] ^= CURSOR_XOR;
}

static void xor_cursor(uint32_t cx, uint32_t cy)
{
    for (uint32_t d = 0; d <= 2 * ARM; d++) {
        xor_px(cx - ARM + d, cy); /* wraps to a huge value off the left edge: skipped */
        if (d != ARM)
            xor_px(cx, cy - ARM + d);
    }
}

/* Grow the damage rectangle [x0,x1) x [y0,y1) by the box of side 2r+1 around (cx, cy), clipped. */
static void damage(uint32_t *x0, uint32_t *y0, uint32_t *x1, uint32_t *y1, uint32_t cx, uint32_t cy, uint32_t r)
{
    uint32_t l = cx >= r ? cx - r : 0, t = cy >= r ? cy - r : 0;
    uint32_t rr = cx + r + 1 < gpu.width ? cx + r + 1 : gpu.width, b = cy + r + 1 < gpu.height ? cy + r + 1 : gpu.height;
    *x0 = l < *x0 ? l : *x0;
    *y0 = t < *y0 ? t : *y0;
    *x1 = rr > *x1 ? rr : *x1;
    *y1 = b > *y1 ? b : *y1;
}

/*
 * One frame: erase the cursor, draw the click's dot (a 5x5 white square), draw the cursor at the
 * tablet's pointer; flush what changed (the top-left pixel if nothing did).
 */
static void show(void)
{
    uint32_t x0 = UINT32_MAX, y0 = UINT32_MAX, x1 = 0, y1 = 0;

    if (!have_gpu)
        return;
    if (cursor_shown && (cursor_x != ptr_x || cursor_y != ptr_y || dot)) {
        xor_cursor(cursor_x, cursor_y);
        damage(&x0, &y0, &x1, &y1, cursor_x, cursor_y, ARM);
        cursor_shown = 0;
    }
    if (dot) {
        for (uint32_t j = ptr_y >= 2 ? ptr_y - 2 : 0; j <= ptr_y + 2 && j < gpu.height; j++)
            for (uint32_t i = ptr_x >= 2 ? ptr_x - 2 : 0; i <= ptr_x + 2 && i < gpu.width; i++)
                gpu.fb[j * gpu.width + i] = GPU_RGB(255, 255, 255);
        damage(&x0, &y0, &x1, &y1, ptr_x, ptr_y, 2);
        dot = 0;
    }
    if (have_ptr && !cursor_shown) {
        cursor_x = ptr_x;
        cursor_y = ptr_y;
        xor_cursor(cursor_x, cursor_y);
        damage(&x0, &y0, &x1, &y1, cursor_x, cursor_y, ARM);
        cursor_shown = 1;
    }
    if (x1 <= x0 || y1 <= y0)
        x0 = y0 = 0, x1 = y1 = 1;
    if (gpu_flush(&gpu, x0, y0, x1 - x0, y1 - y0) == 0)
        printf("input_echo: frame %d at %lu us\n", ++frame, (unsigned long)timer_ticks_to_us(timer_now()));
}

static void kick(struct input *in, unsigned q)
{
    dsb(sy); /* the ring in memory before the notification */
    mmio_write32(in->dev.base + MMIO_QUEUE_NOTIFY, q);
}

static void post(struct input *in, uint16_t id)
{
    struct virtq *q = &in->dev.queue[0];

    q->desc[id] = (struct virtq_desc){ (uintptr_t)in->buf[id], 8, DESC_F_WRITE, 0 };
    q->avail.ring[q->avail.idx % q->size] = id;
    dmb(ish); /* the descriptor and ring entry before the index */
    q->avail.idx = (uint16_t)(q->avail.idx + 1);
}

/* Size of the EV_BITS bitmap for event type `type` (0: unsupported). */
static unsigned ev_bits_size(struct input *in, unsigned type)
{
    virtio_config_write32(&in->dev, 0, CFG_EV_BITS | type << 8);
    return virtio_config_read32(&in->dev, 0) >> 16 & 0xff;
}

static int start(struct input *in, int slot)
{
    if (virtio_init(&in->dev, slot, 0) || virtio_queue_setup(&in->dev, 0) || virtio_queue_setup(&in->dev, 1) ||
        virtio_driver_ok(&in->dev))
        return -1;
    for (uint16_t i = 0; i < in->dev.queue[0].size; i++)
        post(in, i);
    kick(in, 0);
    return 0;
}

/*
 * Print the events the device has returned and give the buffers back; 1 once KEY_ESC was pressed and its
 * SYN_REPORT has come (the two can arrive in different drains when the ring was short of buffers).
 */
static int drain(struct input *in, int *any_out)
{
    struct virtq *q = &in->dev.queue[0];
    volatile uint16_t *used_idx = &q->used.idx;
    static int esc_down;
    int esc = 0, any = 0;

    while (*used_idx != q->last_used) {
        dmb(ish); /* the element after the index */
        struct virtq_used_elem e = q->used.ring[q->last_used % q->size];
        q->last_used = (uint16_t)(q->last_used + 1);
        if (e.id >= q->size || e.len != 8) {
            printf("input_echo: %s: bad used element id %u len %u\n", in->name, e.id, e.len);
            continue;
        }
        const uint8_t *b = in->buf[e.id];
        unsigned type = b[0] | b[1] << 8, code = b[2] | b[3] << 8;
        int32_t value = (int32_t)(b[4] | b[5] << 8 | b[6] << 16 | (uint32_t)b[7] << 24);
        printf("input: %s type=%u code=%u value=%d\n", in->name, type, code, (int)value);
        if (in == &tab && type == EV_ABS && (code == ABS_X || code == ABS_Y) && have_gpu) {
            uint32_t extent = code == ABS_X ? gpu.width : gpu.height;
            uint32_t px = (uint32_t)(((uint64_t)(uint32_t)value * (extent - 1) + ABS_MAX / 2) / ABS_MAX);
            *(code == ABS_X ? &ptr_x : &ptr_y) = px < extent ? px : extent - 1;
            have_ptr = 1;
        }
        if (in == &tab && type == EV_KEY && code == BTN_LEFT && value == 1)
            dot = 1;
        if (in == &kbd && type == EV_KEY && code == KEY_ESC && value == 1)
            esc_down = 1;
        else if (in == &kbd && type == EV_SYN && esc_down)
            esc = 1;
        post(in, (uint16_t)e.id);
        any = 1;
    }
    if (any)
        kick(in, 0);
    *any_out |= any;
    return esc;
}

static int set_capslock(void)
{
    struct virtq *q = &kbd.dev.queue[1];
    volatile uint16_t *used_idx = &q->used.idx;

    led_msg[0] = EV_LED;
    led_msg[2] = LED_CAPSL;
    led_msg[4] = 1;
    q->desc[0] = (struct virtq_desc){ (uintptr_t)led_msg, sizeof led_msg, 0, 0 };
    q->avail.ring[q->avail.idx % q->size] = 0;
    dmb(ish);
    q->avail.idx = (uint16_t)(q->avail.idx + 1);
    kick(&kbd, 1);
    if (!POLL_UNTIL(*used_idx != q->last_used, 5000))
        return -1;
    q->last_used = (uint16_t)(q->last_used + 1);
    return 0;
}

int main(uint64_t dtb)
{
    int slots[2], n = 0;
    struct deadline d;

    (void)dtb;
    for (int s = virtio_find(VIRTIO_ID_INPUT, 0); s >= 0 && n < 2; s = virtio_find(VIRTIO_ID_INPUT, s + 1))
        slots[n++] = s;
    if (n < 2) {
        printf("FAIL input_echo: %d virtio-input device(s), need a keyboard and a tablet\n", n);
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        struct input probe;
        probe.dev.base = VIRTIO_MMIO_BASE + (uintptr_t)slots[i] * VIRTIO_MMIO_STRIDE;
        int is_tablet = ev_bits_size(&probe, EV_ABS) != 0;
        if (start(is_tablet ? &tab : &kbd, slots[i])) {
            printf("FAIL input_echo: cannot start the device on slot %d\n", slots[i]);
            return 1;
        }
    }
    if (!kbd.dev.base || !tab.dev.base) {
        printf("FAIL input_echo: need one keyboard and one tablet\n");
        return 1;
    }
    if (set_capslock()) {
        printf("FAIL input_echo: statusq did not return the LED event\n");
        return 1;
    }
    if (virtio_find(VIRTIO_ID_GPU, 0) >= 0) {
        if (gpu_init(&gpu) || (uint64_t)gpu.width * gpu.height * 4 > FB_MAX ||
            gpu_setup_framebuffer(&gpu, (uint32_t *)FB_BASE)) {
            printf("FAIL input_echo: cannot set up the GPU\n");
            return 1;
        }
        have_gpu = 1;
    }
    printf("input_echo: ready\n");
    if (have_gpu) { /* frame 1: the (black) screen, after "ready" */
        if (gpu_flush(&gpu, 0, 0, gpu.width, gpu.height) == 0)
            printf("input_echo: frame %d at %lu us\n", ++frame, (unsigned long)timer_ticks_to_us(timer_now()));
    }
    deadline_set(&d, WAIT_MS);
    while (!deadline_passed(&d)) {
        int any = 0;
        int esc = drain(&kbd, &any);
        drain(&tab, &any);
        if (any)
            show();
        if (esc) {
            printf("PASS input_echo\n");
            return 0;
        }
    }
    printf("FAIL input_echo: no KEY_ESC within %d ms\n", WAIT_MS);
    return 1;
}
