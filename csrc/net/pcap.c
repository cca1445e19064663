/* pcap.c - pcap capture files (the tcpdump format, nanosecond variant) for NICs and switches. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net.h"

/*
 * File header (24 bytes) and record header (16 bytes), host byte order as readers expect
 * (they detect it from the magic): https://www.tcpdump.org/manpages/pcap-savefile.5.html.
 * Magic 0xa1b23c4d: the record's second field is nanoseconds.
 */
#define PCAP_MAGIC_NS 0xa1b23c4du
#define PCAP_SNAPLEN 262144u
#define LINKTYPE_ETHERNET 1u

struct vmm_pcap {
    pthread_mutex_t lock;
    int fd;
    uint64_t written, max_bytes;
    bool failed;
};

static bool write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t r = write(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

int vmm__pcap_open(const char *path, uint64_t max_bytes, struct vmm_pcap **out)
{
    uint32_t hdr[6] = { PCAP_MAGIC_NS, 2u | (4u << 16), 0, 0, PCAP_SNAPLEN, LINKTYPE_ETHERNET };
    struct vmm_pcap *p;

    if (!(p = calloc(1, sizeof *p)))
        return ENOMEM;
    if ((p->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644)) < 0) {
        int e = errno;
        free(p);
        return e;
    }
    if (!write_all(p->fd, hdr, sizeof hdr)) { /* version 2.4: major in the low half of word 1 */
        int e = errno ? errno : EIO;
        close(p->fd);
        free(p);
        return e;
    }
    p->written = sizeof hdr;
    p->max_bytes = max_bytes;
    pthread_mutex_init(&p->lock, NULL);
    *out = p;
    return 0;
}

bool vmm__pcap_write(struct vmm_pcap *p, uint64_t ts_ns, const void *frame, size_t len)
{
    uint32_t caplen = len < PCAP_SNAPLEN ? (uint32_t)len : PCAP_SNAPLEN;
    uint32_t rec[4] = { (uint32_t)(ts_ns / 1000000000u), (uint32_t)(ts_ns % 1000000000u), caplen, (uint32_t)len };
    bool ok = false;

    if (!p)
        return false;
    pthread_mutex_lock(&p->lock);
    if (!p->failed && p->written + sizeof rec + caplen <= p->max_bytes) {
        ok = write_all(p->fd, rec, sizeof rec) && write_all(p->fd, frame, caplen);
        p->failed = !ok; /* a short write leaves a torn record: write nothing more */
        if (ok)
            p->written += sizeof rec + caplen;
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

void vmm__pcap_close(struct vmm_pcap *p)
{
    if (!p)
        return;
    close(p->fd);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
