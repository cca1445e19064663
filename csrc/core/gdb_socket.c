/* gdb_socket.c - binding the GDB server's listening socket (gdb_socket.h): TCP [HOST:]PORT (HOST defaults to
 * 127.0.0.1; port 0 picks a free one) or unix:PATH. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "gdb_socket.h"
#include "vm.h"

static int bind_unix(struct vmm_vm *vm, const char *path, int *lfd, char *addr, size_t alen, char *upath, size_t ulen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (!*path || strlen(path) >= sizeof sa.sun_path)
        return vmm__set_error(vm, VMM_EINVAL, "gdb: unix socket path '%s' is empty or too long", path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if ((*lfd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 || bind(*lfd, (struct sockaddr *)&sa, sizeof sa))
        return vmm__set_error(vm, VMM_EIO, "gdb: cannot listen on %s: %s", path, strerror(errno));
    if (strlen(sa.sun_path) < ulen)
        memcpy(upath, sa.sun_path, strlen(sa.sun_path) + 1);
    snprintf(addr, alen, "unix:%s", path);
    return 0;
}

static int bind_tcp(struct vmm_vm *vm, const char *spec, int *lfd, char *addr, size_t alen)
{
    char host[128] = "127.0.0.1", port[16];
    const char *colon = strrchr(spec, ':');
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV },
                    *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char hbuf[INET6_ADDRSTRLEN];

    const char *p = colon ? colon + 1 : spec;
    if (colon && (size_t)(colon - spec) >= sizeof host)
        return vmm__set_error(vm, VMM_EINVAL, "gdb: host name too long in '%s'", spec);
    if (colon && colon > spec) {
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = 0;
    }
    char *end;
    unsigned long n = strtoul(p, &end, 10);
    if (!*p || *end || n > 65535 || strlen(p) >= sizeof port)
        return vmm__set_error(vm, VMM_EINVAL, "gdb: '%s' is not [HOST:]PORT or unix:PATH", spec);
    snprintf(port, sizeof port, "%lu", n);
    int e = getaddrinfo(host, port, &hints, &ai);
    if (e)
        return vmm__set_error(vm, VMM_EINVAL, "gdb: %s: %s", host, gai_strerror(e));
    int one = 1;
    if ((*lfd = socket(ai->ai_family, SOCK_STREAM, 0)) < 0 ||
        setsockopt(*lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) || bind(*lfd, ai->ai_addr, ai->ai_addrlen) ||
        getsockname(*lfd, (struct sockaddr *)&ss, &sl)) {
        int err = errno;
        freeaddrinfo(ai);
        return vmm__set_error(vm, VMM_EIO, "gdb: cannot listen on %s:%s: %s", host, port, strerror(err));
    }
    freeaddrinfo(ai);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, hbuf, sizeof hbuf);
        snprintf(addr, alen, "[%s]:%u", hbuf, ntohs(s6->sin6_port));
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, hbuf, sizeof hbuf);
        snprintf(addr, alen, "%s:%u", hbuf, ntohs(s4->sin_port));
    }
    return 0;
}

int vmm__gdb_bind(struct vmm_vm *vm, const char *address, int *lfd, char *addr, size_t alen, char *upath, size_t ulen)
{
    if (!strncmp(address, "unix:", 5))
        return bind_unix(vm, address + 5, lfd, addr, alen, upath, ulen);
    return bind_tcp(vm, address, lfd, addr, alen);
}
