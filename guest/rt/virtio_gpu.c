/* virtio_gpu.c - virtio-gpu 2D over rt/virtio.c: display info, one B8G8R8X8 resource backed by guest RAM on
   a scanout, transfer + flush of rectangles. Every response type is checked (FAIL line otherwise). */
#include "rt.h"

#define GPU_TIMEOUT_MS 5000
#define CONTROLQ 0

/* config space */
#define GPU_CFG_EVENTS_READ 0
#define GPU_CFG_EVENTS_CLEAR 4
#define GPU_CFG_NUM_SCANOUTS 8

/* commands and responses (Virtio 1.1, 5.7.6.7) */
#define CMD_GET_DISPLAY_INFO 0x0100
#define CMD_RESOURCE_CREATE_2D 0x0101
#define CMD_SET_SCANOUT 0x0103
#define CMD_RESOURCE_FLUSH 0x0104
#define CMD_TRANSFER_TO_HOST_2D 0x0105
#define CMD_RESOURCE_ATTACH_BACKING 0x0106
#define RESP_OK_NODATA 0x1100
#define RESP_OK_DISPLAY_INFO 0x1101
#define MAX_SCANOUTS 16

struct ctrl_hdr {
    uint32_t type, flags;
    uint64_t fence_id;
    uint32_t ctx_id;
    uint8_t ring_idx, padding[3];
};
struct gpu_rect {
    uint32_t x, y, width, height;
};
struct resp_display_info {
    struct ctrl_hdr hdr;
    struct {
        struct gpu_rect r;
        uint32_t enabled, flags;
    } pmodes[MAX_SCANOUTS];
};
struct resource_create_2d {
    struct ctrl_hdr hdr;
    uint32_t resource_id, format, width, height;
};
struct set_scanout {
    struct ctrl_hdr hdr;
    struct gpu_rect r;
    uint32_t scanout_id, resource_id;
};
struct resource_flush {
    struct ctrl_hdr hdr;
    struct gpu_rect r;
    uint32_t resource_id, padding;
};
struct transfer_to_host_2d {
    struct ctrl_hdr hdr;
    struct gpu_rect r;
    uint64_t offset;
    uint32_t resource_id, padding;
};
struct attach_backing {
    struct ctrl_hdr hdr;
    uint32_t resource_id, nr_entries;
    struct {
        uint64_t addr;
        uint32_t length, padding;
    } entry; /* one entry: the framebuffer is contiguous */
};

/* requests and responses live here (static: their addresses go to the device) */
static union {
    struct ctrl_hdr hdr;
    struct resource_create_2d create;
    struct set_scanout scanout;
    struct resource_flush flush;
    struct transfer_to_host_2d transfer;
    struct attach_backing attach;
} req __attribute__((aligned(64)));
static union {
    struct ctrl_hdr hdr;
    struct resp_display_info info;
} resp __attribute__((aligned(64)));

static const char *cmd_name(uint32_t type)
{
    switch (type) {
    case CMD_GET_DISPLAY_INFO:
        return "GET_DISPLAY_INFO";
    case CMD_RESOURCE_CREATE_2D:
        return "RESOURCE_CREATE_2D";
    case CMD_SET_SCANOUT:
        return "SET_SCANOUT";
    case CMD_RESOURCE_FLUSH:
        return "RESOURCE_FLUSH";
    case CMD_TRANSFER_TO_HOST_2D:
        return "TRANSFER_TO_HOST_2D";
    case CMD_RESOURCE_ATTACH_BACKING:
        return "RESOURCE_ATTACH_BACKING";
    }
    return "?";
}

/* req (of len bytes, header type already set) to the control queue; the response must have type `want` */
static int command(struct gpu *g, uint32_t len, uint32_t resp_len, uint32_t want)
{
    uint32_t type = req.hdr.type;
    int n;

    req.hdr.flags = 0;
    req.hdr.fence_id = 0;
    req.hdr.ctx_id = 0;
    req.hdr.ring_idx = 0;
    resp.hdr.type = 0;
    n = virtio_request(&g->dev, CONTROLQ, &req, len, &resp, resp_len, GPU_TIMEOUT_MS);
    if (n < 0) {
        test_fail("virtio-gpu %s: no response", cmd_name(type));
        return -1;
    }
    if (resp.hdr.type != want || (uint32_t)n < sizeof(struct ctrl_hdr)) {
        test_fail("virtio-gpu %s: response type 0x%x (%d bytes), expected 0x%x", cmd_name(type), resp.hdr.type, n,
                  want);
        return -1;
    }
    return 0;
}

static void clear_req(void)
{
    uint8_t *p = (uint8_t *)&req;
    for (size_t i = 0; i < sizeof(req); i++)
        p[i] = 0;
}

int gpu_init(struct gpu *g)
{
    g->resource = 0;
    g->fb = 0;
    if (virtio_open(&g->dev, VIRTIO_ID_GPU, 0)) {
        test_fail("no virtio-gpu device (id %d) on a version 2 virtio-mmio transport or PCI", VIRTIO_ID_GPU);
        return -1;
    }
    if (virtio_queue_setup(&g->dev, CONTROLQ) || virtio_driver_ok(&g->dev)) {
        test_fail("virtio-gpu: initialisation failed");
        return -1;
    }
    g->num_scanouts = virtio_config_read32(&g->dev, GPU_CFG_NUM_SCANOUTS);
    if (g->dev.pci)
        printf("virtio-gpu: PCI 00:%02x.0, features 0x%lx, %u scanout(s), queue size %u\n", g->dev.slot,
               g->dev.features, g->num_scanouts, g->dev.queue[CONTROLQ].size);
    else
        printf("virtio-gpu: slot %d (INTID %d), features 0x%lx, %u scanout(s), queue size %u\n", g->dev.slot,
               VIRTIO_MMIO_INTID(g->dev.slot), g->dev.features, g->num_scanouts, g->dev.queue[CONTROLQ].size);
    uint32_t events = virtio_config_read32(&g->dev, GPU_CFG_EVENTS_READ);
    if (events)
        virtio_config_write32(&g->dev, GPU_CFG_EVENTS_CLEAR, events);

    clear_req();
    req.hdr.type = CMD_GET_DISPLAY_INFO;
    if (command(g, sizeof(struct ctrl_hdr), sizeof(struct resp_display_info), RESP_OK_DISPLAY_INFO))
        return -1;
    for (uint32_t i = 0; i < MAX_SCANOUTS && i < g->num_scanouts; i++) {
        if (!resp.info.pmodes[i].enabled)
            continue;
        g->scanout = i;
        g->width = resp.info.pmodes[i].r.width;
        g->height = resp.info.pmodes[i].r.height;
        printf("virtio-gpu: scanout %u: %ux%u\n", i, g->width, g->height);
        if (!g->width || !g->height) {
            test_fail("virtio-gpu: scanout %u enabled with an empty mode", i);
            return -1;
        }
        return 0;
    }
    test_fail("virtio-gpu: no enabled scanout among %u", g->num_scanouts);
    return -1;
}

int gpu_setup_framebuffer(struct gpu *g, uint32_t *fb)
{
    const uint32_t id = 1;

    clear_req();
    req.create.hdr.type = CMD_RESOURCE_CREATE_2D;
    req.create.resource_id = id;
    req.create.format = VIRTIO_GPU_FORMAT_B8G8R8X8;
    req.create.width = g->width;
    req.create.height = g->height;
    if (command(g, sizeof(req.create), sizeof(struct ctrl_hdr), RESP_OK_NODATA))
        return -1;

    clear_req();
    req.attach.hdr.type = CMD_RESOURCE_ATTACH_BACKING;
    req.attach.resource_id = id;
    req.attach.nr_entries = 1;
    req.attach.entry.addr = (uintptr_t)fb;
    req.attach.entry.length = g->width * g->height * 4;
    if (command(g, sizeof(req.attach), sizeof(struct ctrl_hdr), RESP_OK_NODATA))
        return -1;

    clear_req();
    req.scanout.hdr.type = CMD_SET_SCANOUT;
    req.scanout.r = (struct gpu_rect){ 0, 0, g->width, g->height };
    req.scanout.scanout_id = g->scanout;
    req.scanout.resource_id = id;
    if (command(g, sizeof(req.scanout), sizeof(struct ctrl_hdr), RESP_OK_NODATA))
        return -1;
    g->resource = id;
    g->fb = fb;
    return 0;
}

int gpu_flush(struct gpu *g, uint32_t x, uint32_t y, uint32_t w, uint32_t h)
{
    dsb(sy); /* the pixels in memory before the device reads them */
    clear_req();
    req.transfer.hdr.type = CMD_TRANSFER_TO_HOST_2D;
    req.transfer.r = (struct gpu_rect){ x, y, w, h };
    req.transfer.offset = ((uint64_t)y * g->width + x) * 4;
    req.transfer.resource_id = g->resource;
    if (command(g, sizeof(req.transfer), sizeof(struct ctrl_hdr), RESP_OK_NODATA))
        return -1;

    clear_req();
    req.flush.hdr.type = CMD_RESOURCE_FLUSH;
    req.flush.r = (struct gpu_rect){ x, y, w, h };
    req.flush.resource_id = g->resource;
    return command(g, sizeof(req.flush), sizeof(struct ctrl_hdr), RESP_OK_NODATA);
}
