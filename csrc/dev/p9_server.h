/* p9_server.h - a 9P2000.L file server confined to one host directory, independent of any transport. */
#ifndef VMM_P9_SERVER_H
#define VMM_P9_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define P9_MAX_MSIZE (512u * 1024) /* the largest msize we negotiate */
#define P9_MIN_MSIZE 256u          /* Tversion below this is refused (EINVAL) */
#define P9_MAX_FIDS 4096           /* more -> ENFILE */
#define P9_MAX_WALK 16             /* names per Twalk */
#define P9_MAX_NAME 255            /* bytes per path component */

struct p9_server;

/*
 * A server for the directory open as `root_fd` (any fd of a directory; the
 * server takes ownership). NULL on allocation failure (root_fd is closed).
 */
struct p9_server *p9_server_new(int root_fd, bool readonly);
/* fsync and close every open file, close every fid, free. NULL is fine. */
void p9_server_free(struct p9_server *s);
/* Drop every fid (after an fsync of open files) and forget the negotiated msize: a new session. */
void p9_server_reset(struct p9_server *s);

/*
 * Serve one T-message req[0..len) and write the R-message into resp[0..cap).
 * Returns the response length (0 only if cap cannot hold even an Rlerror,
 * 11 bytes). Never trusts req: malformed messages get Rlerror.
 */
size_t p9_handle(struct p9_server *s, const uint8_t *req, size_t len, uint8_t *resp, size_t cap);

/*
 * Snapshots (core/snapshot.h, p9_snap.c): sync the session (msize) and every fid, saved as a path in
 * the share and re-walked when loading; a fid whose path is gone comes back dead (its next use fails
 * with ESTALE). Loading replaces every fid. Returns the stream's error.
 */
struct vmm_snap;
int p9_server_snap(struct p9_server *s, struct vmm_snap *snap);

#endif
