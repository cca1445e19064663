/* loader.h - kernel image loaders (ELF64, arm64 Image, raw) shared helpers. */
#ifndef VMM_LOADER_H
#define VMM_LOADER_H

#include "../core/vm.h"

int vmm__load_elf(struct vmm_vm *vm, const uint8_t *data, size_t len, const char *name);
/* `data` may be gzip-compressed. */
int vmm__load_image(struct vmm_vm *vm, const uint8_t *data, size_t len, const char *name);
bool vmm__is_elf(const uint8_t *data, size_t len);
bool vmm__is_gzip(const uint8_t *data, size_t len);
bool vmm__is_image(const uint8_t *data, size_t len);
/* Copy into RAM after checking [gpa, gpa + reserve) lies inside it. */
int vmm__load_bytes(struct vmm_vm *vm, const char *name, const char *what, uint64_t gpa, const uint8_t *src, size_t len,
                    uint64_t reserve);

#endif
