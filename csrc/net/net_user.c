/* net_user.c - user-mode networking: NAT to the host's sockets through libslirp (the library QEMU uses). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/vm.h"
#include "net.h"

#if VMM_HAVE_SLIRP
#include <arpa/inet.h>
#include <slirp/libslirp.h>

#include "../core/iothread.h"
#include "../host/host.h"

/*
 * The network QEMU's -netdev user gives: 10.0.2.0/24, the host (its 127.0.0.1 included) at
 * 10.0.2.2, DNS at 10.0.2.3 (forwarded to the host's resolver), DHCP handing out 10.0.2.15
 * first. IPv4 only. Port forwards: slirp_add_hostfwd().
 *
 * Threads: one lock (u->lock) around every call into slirp. The guest's frames enter on the
 * vCPU thread (slirp_input, the NIC's device lock held); slirp's sockets and timers are served on
 * the VM's I/O thread (fill/dispatch: slirp_pollfds_fill/poll). What slirp sends to the guest
 * (send_packet) goes into the NIC's queue, so slirp never waits for the guest.
 *
 * Clock: slirp reads libvmm's clock (clock_get_ns), so in deterministic mode its TCP timers
 * (delayed ACK, retransmission) and its own timers run on the guest's virtual time; its timers
 * (timer_new_opaque) fire between rounds at their virtual deadline (the advance hook). Host
 * sockets still deliver at host time, so traffic with the host is not reproducible.
 */
#define USER_TIMERS 4
#define USER_HOSTFWD_MAX 64

struct user_timer {
    bool used;
    int64_t expire_ms; /* -1: not armed */
    SlirpTimerId id;
    void *cb_opaque;
};

struct net_user {
    struct vmm_vm *vm;
    struct vmm_net_nic *nic;
    Slirp *slirp;
    pthread_mutex_t lock;
    struct user_timer timers[USER_TIMERS];
    struct vmm_io_set *set; /* the I/O round being filled or dispatched */
    bool client_added;
    /*
     * Host sockets slirp holds for the guest: counted at each I/O round (slirp_connection_info lists
     * them; its poll set does not: a connection the guest has not answered yet is not polled) and
     * raised by each frame let through that may open one, so a burst between rounds is counted too.
     * At USER_MAX_SOCKETS new connections and flows are refused (user_send).
     */
    unsigned nsock;
};

/*
 * Each guest TCP connection, UDP flow and ICMP echo to the outside is a host socket in libslirp, which
 * puts no limit on them: without ours a guest could take every fd of the process (RLIMIT_NOFILE),
 * and with it every other VM's disks, shares and captures. A user NIC reserves these and its hostfwd
 * listeners in the I/O thread's poll round (iothread.c IO_MAX_FDS 1024): seven fit in one VM.
 */
#define USER_MAX_SOCKETS 128

/* ---- slirp's callbacks (u->lock held: they run inside slirp calls) ---- */

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
    struct net_user *u = opaque;
    vmm__net_nic_receive(u->nic, buf, len);
    return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
    struct net_user *u = opaque;
    vmm__guest_error(u->vm, "net-user", "%s", msg);
}

static int64_t cb_clock_get_ns(void *opaque)
{
    struct net_user *u = opaque;
    return (int64_t)vmm__net_nic_clock(u->nic);
}

static void *cb_timer_new_opaque(SlirpTimerId id, void *cb_opaque, void *opaque)
{
    struct net_user *u = opaque;
    for (unsigned i = 0; i < USER_TIMERS; i++) {
        if (!u->timers[i].used) {
            u->timers[i] = (struct user_timer){ .used = true, .expire_ms = -1, .id = id, .cb_opaque = cb_opaque };
            return &u->timers[i];
        }
    }
    vmm__log(u->vm, VMM_LOG_WARN, "net-user", "slirp asked for more than %d timers", USER_TIMERS);
    return NULL;
}

static void cb_timer_free(void *timer, void *opaque)
{
    (void)opaque;
    if (timer)
        ((struct user_timer *)timer)->used = false;
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
    struct net_user *u = opaque;
    if (timer)
        ((struct user_timer *)timer)->expire_ms = expire_ms;
    if (!u->vm->deterministic && u->vm->iothread)
        vmm__iothread_kick(u->vm->iothread); /* the next poll's timeout may be shorter */
}

static void cb_register_poll_fd(int fd, void *opaque)
{
    (void)fd;
    (void)opaque; /* every round polls what slirp_pollfds_fill adds */
}

static void cb_notify(void *opaque)
{
    struct net_user *u = opaque;
    if (u->vm->iothread)
        vmm__iothread_kick(u->vm->iothread);
}

static const SlirpCb user_callbacks = {
    .send_packet = cb_send_packet,
    .guest_error = cb_guest_error,
    .clock_get_ns = cb_clock_get_ns,
    .timer_free = cb_timer_free,
    .timer_mod = cb_timer_mod,
    .register_poll_fd = cb_register_poll_fd,
    .unregister_poll_fd = cb_register_poll_fd,
    .notify = cb_notify,
    .timer_new_opaque = cb_timer_new_opaque,
};

/* Fire the timers due at now_ms; returns the next deadline in ms (INT64_MAX: none). u->lock held. */
static int64_t fire_timers(struct net_user *u, int64_t now_ms)
{
    int64_t next = INT64_MAX;

    for (unsigned i = 0; i < USER_TIMERS; i++) {
        struct user_timer *t = &u->timers[i];
        if (!t->used || t->expire_ms < 0)
            continue;
        if (t->expire_ms <= now_ms) {
            t->expire_ms = -1;
            slirp_handle_timer(u->slirp, t->id, t->cb_opaque); /* may re-arm it */
        }
        if (t->used && t->expire_ms >= 0 && t->expire_ms < next)
            next = t->expire_ms;
    }
    return next;
}

/* ---- the I/O thread's client ---- */

/* The sockets slirp holds: the lines of its connection table after the heading. u->lock held. */
static unsigned count_sockets(struct net_user *u)
{
    char *info = slirp_connection_info(u->slirp);
    unsigned lines = 0;

    if (!info)
        return u->nsock; /* out of memory: keep the last count */
    for (const char *c = info; *c; c++)
        lines += *c == '\n';
    free(info); /* g_free on a glib without its own allocator (2.46+): free() */
    return lines ? lines - 1 : 0;
}

static int add_poll(int fd, int events, void *opaque)
{
    struct net_user *u = opaque;
    short ev =
        (short)(((events & SLIRP_POLL_IN) ? VMM_HOST_POLLIN : 0) | ((events & SLIRP_POLL_OUT) ? VMM_HOST_POLLOUT : 0));
    return vmm__io_add(u->set, fd, ev); /* -1 when the round is full: slirp skips that socket this round */
}

static int get_revents(int idx, void *opaque)
{
    struct net_user *u = opaque;
    short r = vmm__io_revents(u->set, idx);
    return ((r & VMM_HOST_POLLIN) ? SLIRP_POLL_IN : 0) | ((r & VMM_HOST_POLLOUT) ? SLIRP_POLL_OUT : 0) |
           ((r & VMM_HOST_POLLERR) ? SLIRP_POLL_ERR : 0) | ((r & VMM_HOST_POLLHUP) ? SLIRP_POLL_HUP : 0);
}

static void user_fill(void *c, struct vmm_io_set *set, int *timeout_ms)
{
    struct net_user *u = c;
    uint32_t t = 1000;

    pthread_mutex_lock(&u->lock);
    u->set = set;
    slirp_pollfds_fill(u->slirp, &t, add_poll, u); /* lowers t for slirp's TCP timers */
    u->nsock = count_sockets(u);
    if (!u->vm->deterministic) {
        int64_t now = (int64_t)(vmm__net_nic_clock(u->nic) / 1000000), next = fire_timers(u, now);
        if (next != INT64_MAX && next - now < (int64_t)t)
            t = next > now ? (uint32_t)(next - now) : 0;
    }
    pthread_mutex_unlock(&u->lock);
    if (*timeout_ms < 0 || (int)t < *timeout_ms)
        *timeout_ms = (int)t;
}

static void user_dispatch(void *c, struct vmm_io_set *set)
{
    struct net_user *u = c;

    pthread_mutex_lock(&u->lock);
    u->set = set;
    slirp_pollfds_poll(u->slirp, 0, get_revents, u);
    if (!u->vm->deterministic)
        fire_timers(u, (int64_t)(vmm__net_nic_clock(u->nic) / 1000000));
    u->set = NULL;
    pthread_mutex_unlock(&u->lock);
}

static const struct vmm_io_client_ops user_client = {
    .fill = user_fill,
    .dispatch = user_dispatch,
};

/* ---- the back-end ---- */

/*
 * Whether slirp may open a host socket for this frame: an IPv4 TCP SYN without ACK (a new connection),
 * a UDP datagram (a new flow unless one exists; DHCP to port 67 is slirp's own) or an ICMP echo
 * request, to an address slirp forwards to the host. Anything else (ARP, ACKs, slirp's own DHCP)
 * opens none. The lengths are the guest's: every offset is checked against len.
 */
static bool may_open_socket(const uint8_t *f, size_t len)
{
    enum { ETH = 14 };
    if (len < ETH + 20 || f[12] != 0x08 || f[13] != 0x00 || (f[ETH] >> 4) != 4)
        return false;
    size_t l4 = ETH + (size_t)(f[ETH] & 0xf) * 4;
    switch (f[ETH + 9]) {
    case 6: /* TCP: flags at byte 13 of its header */
        return len > l4 + 13 && (f[l4 + 13] & 0x12) == 0x02;
    case 17: /* UDP: destination port at bytes 2-3 */
        return len >= l4 + 4 && !(f[l4 + 2] == 0 && f[l4 + 3] == 67);
    case 1: /* ICMP echo request */
        return len > l4 && f[l4] == 8;
    default:
        return false;
    }
}

static void user_send(void *be, const uint8_t *frame, size_t len)
{
    struct net_user *u = be;

    pthread_mutex_lock(&u->lock);
    if (may_open_socket(frame, len)) {
        if (u->nsock >= USER_MAX_SOCKETS) {
            pthread_mutex_unlock(&u->lock);
            vmm__guest_error(u->vm, "net-user",
                             "a new connection or flow refused: the guest already holds %u host sockets", u->nsock);
            return;
        }
        u->nsock++;
    }
    slirp_input(u->slirp, frame, (int)len);
    pthread_mutex_unlock(&u->lock);
    /* The guest's data may wait in slirp for a socket that must now be polled for POLLOUT (slirp writes
     * at once what the socket takes): start a new round, so the I/O thread's poll set includes it.
     * (The other way, an ACK that frees room for host data, slirp signals itself with notify().) */
    if (u->vm->iothread)
        vmm__iothread_kick(u->vm->iothread);
}

static uint64_t user_advance(void *be, uint64_t now_ns)
{
    struct net_user *u = be;

    pthread_mutex_lock(&u->lock);
    int64_t next = fire_timers(u, (int64_t)(now_ns / 1000000));
    pthread_mutex_unlock(&u->lock);
    return next == INT64_MAX ? UINT64_MAX : (uint64_t)next * 1000000;
}

static void user_destroy(void *be)
{
    struct net_user *u = be;

    if (u->client_added && u->vm->iothread)
        vmm__iothread_remove(u->vm->iothread, u);
    if (u->slirp)
        slirp_cleanup(u->slirp);
    pthread_mutex_destroy(&u->lock);
    free(u);
}

static const struct vmm_net_backend_ops user_ops = {
    .name = "user",
    .send = user_send,
    .advance = user_advance,
    .destroy = user_destroy,
};

/* "tcp:HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT" (addresses may be empty) -> a slirp_add_hostfwd(). */
static int add_hostfwd(struct net_user *u, const char *rule)
{
    char proto[4], haddr[64], gaddr[64];
    unsigned hport, gport;
    struct in_addr h = { .s_addr = htonl(INADDR_LOOPBACK) }, g;
    int n = 0;

    haddr[0] = gaddr[0] = 0;
    inet_pton(AF_INET, "10.0.2.15", &g);
    if (sscanf(rule, "%3[a-z]:%63[0-9.]:%u-%63[0-9.]:%u%n", proto, haddr, &hport, gaddr, &gport, &n) != 5 || rule[n])
        if (sscanf(rule, "%3[a-z]::%u-%63[0-9.]:%u%n", proto, &hport, gaddr, &gport, &n) != 4 || rule[n])
            if (sscanf(rule, "%3[a-z]:%63[0-9.]:%u-:%u%n", proto, haddr, &hport, &gport, &n) != 4 || rule[n])
                if (sscanf(rule, "%3[a-z]::%u-:%u%n", proto, &hport, &gport, &n) != 3 || rule[n])
                    goto bad;
    if ((strcmp(proto, "tcp") && strcmp(proto, "udp")) || hport > 65535 || !gport || gport > 65535)
        goto bad;
    if ((haddr[0] && inet_pton(AF_INET, haddr, &h) != 1) || (gaddr[0] && inet_pton(AF_INET, gaddr, &g) != 1))
        goto bad;
    if (slirp_add_hostfwd(u->slirp, !strcmp(proto, "udp"), h, (int)hport, g, (int)gport) < 0)
        return vmm__set_error(u->vm, VMM_EIO, "hostfwd %s: cannot listen on %s port %u (in use?)", rule,
                              haddr[0] ? haddr : "127.0.0.1", hport);
    return 0;
bad:
    return vmm__set_error(u->vm, VMM_EINVAL,
                          "hostfwd %s: expected tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT "
                          "(e.g. tcp:127.0.0.1:8080-:80)",
                          rule);
}

int vmm__net_user_create(struct vmm_vm *vm, struct vmm_net_nic *nic, const struct vmm_net_config *cfg,
                         const struct vmm_net_backend_ops **ops, void **be)
{
    SlirpConfig sc = { .version = 4, .in_enabled = true, .vhostname = "vmmpy" };
    struct vmm_iothread *io;
    struct net_user *u;
    int rc;

    if (cfg->nhostfwd > USER_HOSTFWD_MAX || (cfg->nhostfwd && !cfg->hostfwd))
        return vmm__set_error(vm, VMM_EINVAL, "at most %d hostfwd rules", USER_HOSTFWD_MAX);
    if ((rc = vmm__iothread_get(vm, &io)))
        return rc;
    if (!(u = calloc(1, sizeof *u)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for user networking");
    u->vm = vm;
    u->nic = nic;
    pthread_mutex_init(&u->lock, NULL);
    inet_pton(AF_INET, "10.0.2.0", &sc.vnetwork);
    inet_pton(AF_INET, "255.255.255.0", &sc.vnetmask);
    inet_pton(AF_INET, "10.0.2.2", &sc.vhost);
    inet_pton(AF_INET, "10.0.2.15", &sc.vdhcp_start);
    inet_pton(AF_INET, "10.0.2.3", &sc.vnameserver);
    if (!(u->slirp = slirp_new(&sc, &user_callbacks, u))) {
        user_destroy(u);
        return vmm__set_error(vm, VMM_ENOMEM, "libslirp could not create its network");
    }
    for (uint32_t i = 0; i < cfg->nhostfwd; i++) {
        if (!cfg->hostfwd[i] || (rc = add_hostfwd(u, cfg->hostfwd[i]))) {
            user_destroy(u);
            return rc ? rc : vmm__set_error(vm, VMM_EINVAL, "hostfwd %u is NULL", i);
        }
    }
    if ((rc = vmm__iothread_add_client(io, &user_client, u, USER_MAX_SOCKETS + cfg->nhostfwd, "user networking"))) {
        user_destroy(u);
        return rc;
    }
    u->client_added = true;
    *ops = &user_ops;
    *be = u;
    return 0;
}

#else /* built without libslirp (no libslirp-dev at build time, or a cross build) */

int vmm__net_user_create(struct vmm_vm *vm, struct vmm_net_nic *nic, const struct vmm_net_config *cfg,
                         const struct vmm_net_backend_ops **ops, void **be)
{
    (void)nic;
    (void)cfg;
    (void)ops;
    (void)be;
    return vmm__set_error(vm, VMM_ENOTSUP,
                          "user networking needs libslirp: this libvmm was built without it (install libslirp-dev "
                          "and rebuild)");
}

#endif
