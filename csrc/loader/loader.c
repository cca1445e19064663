/* loader.c - reading kernel/initrd files, format detection, raw binaries, boot layout. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/layout.h"
#include "loader.h"

#define MAX_FILE (4ULL << 30)
#define MAX_CMDLINE 4096

/*
 * Read a whole file the user named. O_NONBLOCK: a FIFO opens at once (and is refused below) instead of
 * waiting for a writer; the type is checked with fstat on the open descriptor. At most `max` bytes:
 * guest RAM for an initrd or a non-ELF kernel (it could not fit), MAX_FILE for an ELF (debug sections).
 */
static int read_file(struct vmm_vm *vm, const char *path, const char *what, uint8_t **data, size_t *len)
{
    struct stat st;
    uint8_t *buf;
    size_t got = 0;
    uint64_t max;
    uint8_t magic[4];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd < 0) {
        int e = errno;
        return vmm__set_error(vm, e == ENOENT ? VMM_ENOENT : VMM_EIO, "%s: cannot open %s: %s", path, what,
                              e == ENOENT ? "no such file or directory" : strerror(e));
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return vmm__set_error(vm, VMM_EIO, "%s: %s is not a regular file", path, what);
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    max = vm->ram_size;
    if (!strcmp(what, "kernel") && pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic && magic[0] == 0x7f &&
        !memcmp(magic + 1, "ELF", 3))
        max = MAX_FILE; /* only its PT_LOAD segments must fit in RAM (vmm__load_elf checks them) */
    if (max > MAX_FILE)
        max = MAX_FILE;
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return vmm__set_error(vm, VMM_ERANGE, "%s: %s (%lld bytes) is larger than %s (%llu MiB)", path, what,
                              (long long)st.st_size, max == MAX_FILE ? "the loader's limit" : "guest RAM",
                              (unsigned long long)(max >> 20));
    }
    buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        close(fd);
        return vmm__set_error(vm, VMM_ENOMEM, "%s: out of memory reading %s", path, what);
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return vmm__set_error(vm, VMM_EIO, "%s: reading %s: %s", path, what, strerror(e));
        }
        got += (size_t)n;
    }
    close(fd);
    *data = buf;
    *len = got;
    return 0;
}

int vmm__load_bytes(struct vmm_vm *vm, const char *name, const char *what, uint64_t gpa, const uint8_t *src, size_t len,
                    uint64_t reserve)
{
    uint8_t *dst;

    if (reserve < len)
        reserve = len;
    dst = vmm__gpa_ptr(vm, gpa, reserve);
    if (!dst)
        return vmm__set_error(vm, VMM_ERANGE,
                              "%s: %s at 0x%" PRIx64 "-0x%" PRIx64 " lies outside guest RAM 0x%llx-0x%llx (%llu MiB)",
                              name, what, gpa, gpa + reserve, LAYOUT_RAM_BASE, LAYOUT_RAM_BASE + vm->ram_size,
                              (unsigned long long)(vm->ram_size >> 20));
    memcpy(dst, src, len);
    memset(dst + len, 0, reserve - len);
    return 0;
}

bool vmm__is_gzip(const uint8_t *data, size_t len)
{
    return len >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

static int load_raw(struct vmm_vm *vm, const uint8_t *data, size_t len, const char *name,
                    const struct vmm_kernel_opts *o)
{
    uint64_t at = o && o->load_addr ? o->load_addr : LAYOUT_RAM_BASE;
    uint64_t entry = o && o->entry ? o->entry : at;
    int rc;

    if (!len)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: empty file", name);
    if ((rc = vmm__load_bytes(vm, name, "raw image", at, data, len, len)))
        return rc;
    if (entry < at || entry - at >= len)
        return vmm__set_error(vm, VMM_ERANGE, "%s: entry 0x%" PRIx64 " is outside the loaded image", name, entry);
    vm->kernel = (struct vmm_loaded_kernel){ .present = true, .start = at, .end = at + len, .entry = entry };
    return 0;
}

static int load_kernel(struct vmm_vm *vm, const uint8_t *data, size_t len, const char *name,
                       const struct vmm_kernel_opts *o)
{
    int fmt = o ? o->format : VMM_KERNEL_AUTO;

    switch (fmt) {
    case VMM_KERNEL_ELF:
        return vmm__load_elf(vm, data, len, name);
    case VMM_KERNEL_IMAGE:
        return vmm__load_image(vm, data, len, name);
    case VMM_KERNEL_RAW:
        return load_raw(vm, data, len, name, o);
    case VMM_KERNEL_AUTO:
        break;
    default:
        return vmm__set_error(vm, VMM_EINVAL, "unknown kernel format %d", fmt);
    }
    if (vmm__is_elf(data, len))
        return vmm__load_elf(vm, data, len, name);
    if (vmm__is_gzip(data, len) || vmm__is_image(data, len))
        return vmm__load_image(vm, data, len, name);
    if (!len)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: empty file", name);
    return vmm__set_error(vm, VMM_EFORMAT,
                          "%s: not an ELF, arm64 Image or gzip-compressed Image "
                          "(load a flat binary with the raw format and an entry address)",
                          name);
}

static int check_loadable(struct vmm_vm *vm)
{
    if (vm->state != VM_STATE_NEW)
        return vmm__set_error(vm, VMM_ESTATE, "the VM has already started; load before running it");
    return 0;
}

VMM_EXPORT int vmm_load_kernel_mem(vmm_vm *vm, const void *data, size_t len, const char *name,
                                   const struct vmm_kernel_opts *opts)
{
    int rc;

    struct vmm_kernel_opts o = { 0 };

    if (!vm || (!data && len))
        return VMM_EINVAL;
    if (opts && opts->size < sizeof(uint32_t) + sizeof(int))
        return vmm__set_error(vm, VMM_EINVAL, "struct vmm_kernel_opts: bad size %u", opts->size);
    if ((rc = check_loadable(vm)))
        return rc;
    if (vm->kernel.present)
        return vmm__set_error(vm, VMM_ESTATE, "a kernel is already loaded");
    /* an older caller's smaller struct: only its `size` bytes are read, the fields past them are 0 */
    if (opts)
        memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    return load_kernel(vm, data, len, name ? name : "kernel", opts ? &o : NULL);
}

VMM_EXPORT int vmm_load_kernel(vmm_vm *vm, const char *path, const struct vmm_kernel_opts *opts)
{
    uint8_t *data;
    size_t len;
    int rc;

    if (!vm || !path)
        return VMM_EINVAL;
    if ((rc = check_loadable(vm)))
        return rc;
    if ((rc = read_file(vm, path, "kernel", &data, &len)))
        return rc;
    rc = vmm_load_kernel_mem(vm, data, len, path, opts);
    free(data);
    return rc;
}

VMM_EXPORT int vmm_load_initrd(vmm_vm *vm, const char *path)
{
    uint8_t *data;
    size_t len;
    int rc;

    if (!vm || !path)
        return VMM_EINVAL;
    if ((rc = check_loadable(vm)))
        return rc;
    if ((rc = read_file(vm, path, "initrd", &data, &len))) /* refuses one larger than guest RAM */
        return rc;
    if (!len) {
        free(data);
        return vmm__set_error(vm, VMM_EFORMAT, "%s: empty initrd", path);
    }
    free(vm->initrd);
    vm->initrd = data;
    vm->initrd_len = len;
    return 0;
}

VMM_EXPORT int vmm_set_cmdline(vmm_vm *vm, const char *cmdline)
{
    char *c;
    int rc;

    if (!vm || !cmdline)
        return VMM_EINVAL;
    if ((rc = check_loadable(vm)))
        return rc;
    if (strlen(cmdline) >= MAX_CMDLINE)
        return vmm__set_error(vm, VMM_EINVAL, "kernel command line too long (%zu bytes, at most %d)", strlen(cmdline),
                              MAX_CMDLINE - 1);
    if (!(c = strdup(cmdline)))
        return VMM_ENOMEM;
    free(vm->cmdline);
    vm->cmdline = c;
    return 0;
}
