/* gdb_socket.h - where the GDB server listens (gdbstub.c): TCP [HOST:]PORT or unix:PATH. */
#ifndef VMM_GDB_SOCKET_H
#define VMM_GDB_SOCKET_H

#include <stddef.h>

struct vmm_vm;

/*
 * Bind `address` (not yet listening): *lfd, the bound address as text in addr ("127.0.0.1:40123", "[::1]:1234",
 * "unix:/path"), and a Unix socket's path in upath (to unlink; left alone for TCP). 0, or a VMM_E* code with the
 * message set (*lfd may then be an fd to close, or -1).
 */
int vmm__gdb_bind(struct vmm_vm *vm, const char *address, int *lfd, char *addr, size_t alen, char *upath, size_t ulen);

#endif
