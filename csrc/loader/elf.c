/* elf.c - ELF64 little-endian aarch64 loader: PT_LOAD segments by physical address. */
#include <elf.h>
#include <inttypes.h>
#include <string.h>

#include "../core/layout.h"
#include "loader.h"

bool vmm__is_elf(const uint8_t *data, size_t len)
{
    return len >= 4 && memcmp(data, ELFMAG, SELFMAG) == 0;
}

int vmm__load_elf(struct vmm_vm *vm, const uint8_t *data, size_t len, const char *name)
{
    Elf64_Ehdr eh;
    uint64_t lo = UINT64_MAX, hi = 0, entry;
    bool entry_found = false;
    int nload = 0, rc;

    if (!vmm__is_elf(data, len))
        return vmm__set_error(vm, VMM_EFORMAT, "%s: not an ELF file", name);
    if (len < sizeof eh)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: truncated ELF header (%zu bytes)", name, len);
    memcpy(&eh, data, sizeof eh);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64)
        return vmm__set_error(vm, VMM_EARCH, "%s: not a 64-bit ELF (class %u)", name, eh.e_ident[EI_CLASS]);
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB)
        return vmm__set_error(vm, VMM_EARCH, "%s: not a little-endian ELF", name);
    if (eh.e_machine != EM_AARCH64)
        return vmm__set_error(vm, VMM_EARCH, "%s: not an aarch64 ELF (e_machine %u)", name, eh.e_machine);
    if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: not an executable ELF (e_type %u)", name, eh.e_type);
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: no usable program headers", name);
    if (eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: program headers lie beyond the end of the file (truncated?)", name);

    /* validate every segment before touching guest memory */
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, data + eh.e_phoff + i * sizeof ph, sizeof ph);
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        if (ph.p_filesz > ph.p_memsz)
            return vmm__set_error(vm, VMM_EFORMAT, "%s: segment %u has filesz > memsz", name, i);
        if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
            return vmm__set_error(vm, VMM_EFORMAT, "%s: segment %u lies beyond the end of the file (truncated?)", name,
                                  i);
        if (!vmm__gpa_ptr(vm, ph.p_paddr, ph.p_memsz))
            return vmm__set_error(vm, VMM_ERANGE,
                                  "%s: segment %u at 0x%" PRIx64 "-0x%" PRIx64
                                  " lies outside guest RAM 0x%llx-0x%llx (%llu MiB)",
                                  name, i, ph.p_paddr, ph.p_paddr + ph.p_memsz, LAYOUT_RAM_BASE,
                                  LAYOUT_RAM_BASE + vm->ram_size, (unsigned long long)(vm->ram_size >> 20));
        nload++;
    }
    if (!nload)
        return vmm__set_error(vm, VMM_EFORMAT, "%s: no loadable segments", name);

    entry = eh.e_entry;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, data + eh.e_phoff + i * sizeof ph, sizeof ph);
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        if ((rc = vmm__load_bytes(vm, name, "segment", ph.p_paddr, data + ph.p_offset, ph.p_filesz, ph.p_memsz)))
            return rc;
        if (ph.p_paddr < lo)
            lo = ph.p_paddr;
        if (ph.p_paddr + ph.p_memsz > hi)
            hi = ph.p_paddr + ph.p_memsz;
        /* a virtual entry point is translated through the segment that holds it */
        if (!entry_found && eh.e_entry >= ph.p_vaddr && eh.e_entry - ph.p_vaddr < ph.p_memsz) {
            entry = eh.e_entry - ph.p_vaddr + ph.p_paddr;
            entry_found = true;
        }
    }
    if (!vmm__gpa_ptr(vm, entry, 4))
        return vmm__set_error(vm, VMM_ERANGE, "%s: entry point 0x%" PRIx64 " is not in guest RAM", name, entry);
    vm->kernel = (struct vmm_loaded_kernel){ .present = true, .start = lo, .end = hi, .entry = entry };
    vmm__log(vm, VMM_LOG_DEBUG, "loader", "%s: ELF 0x%" PRIx64 "-0x%" PRIx64 " entry 0x%" PRIx64, name, lo, hi, entry);
    return 0;
}
