"""Tier 1: kernel and initrd loaders — ELF64, arm64 Image (plain, MZ stub, gzip), raw — and their errors."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import pytest

import vmmpy

from .conftest import B_SELF, RAM_BASE, code, make_elf, make_image

MIB = 1 << 20


def write(tmp_path, name, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_elf_segments_land_at_their_physical_addresses(tmp_path):
    text = code(B_SELF) + b"\x11" * 60
    data = b"\x22" * 100
    elf = make_elf([(RAM_BASE + 0x80000, text, len(text)), (RAM_BASE + 0x90000, data, 0x2000)], RAM_BASE + 0x80000)
    with vmmpy.Machine(write(tmp_path, "k.elf", elf)) as m:
        bi = m.boot_info()
        assert bi.entry == RAM_BASE + 0x80000
        assert (bi.kernel_start, bi.kernel_end) == (RAM_BASE + 0x80000, RAM_BASE + 0x92000)
        assert m.read_memory(RAM_BASE + 0x80000, len(text)) == text
        assert m.read_memory(RAM_BASE + 0x90000, 100) == data
        assert m.read_memory(RAM_BASE + 0x90000 + 100, 0x2000 - 100) == bytes(0x2000 - 100)  # bss zeroed


@pytest.mark.parametrize(
    "elf_kwargs, exc, text",
    [
        ({"machine": 62}, vmmpy.ArchError, r"not an aarch64 ELF \(e_machine 62\)"),
        ({"machine": 243}, vmmpy.ArchError, r"not an aarch64 ELF \(e_machine 243\)"),  # EM_RISCV: above 183
        ({"cls": 1}, vmmpy.ArchError, "not a 64-bit ELF"),
        ({"cls": 0}, vmmpy.ArchError, r"not a 64-bit ELF \(class 0\)"),  # ELFCLASSNONE
        ({"cls": 3}, vmmpy.ArchError, r"not a 64-bit ELF \(class 3\)"),  # no such class: above ELFCLASS64
        ({"data": 2}, vmmpy.ArchError, "not a little-endian ELF"),
        ({"data": 0}, vmmpy.ArchError, "not a little-endian ELF"),  # ELFDATANONE: below ELFDATA2LSB
        ({"etype": 1}, vmmpy.FormatError, r"not an executable ELF \(e_type 1\)"),  # ET_REL
        ({"etype": 4}, vmmpy.FormatError, r"not an executable ELF \(e_type 4\)"),  # ET_CORE: above EXEC and DYN
        ({"etype": 0xFE00}, vmmpy.FormatError, r"not an executable ELF \(e_type 65024\)"),  # OS-specific
    ],
)
def test_elf_header_checks(tmp_path, elf_kwargs, exc, text):
    elf = make_elf([(RAM_BASE, code(B_SELF), 4)], RAM_BASE, **elf_kwargs)
    with pytest.raises(exc, match=text):
        vmmpy.Machine(write(tmp_path, "k.elf", elf))


def test_truncated_elf(tmp_path, guest):
    data = Path(guest("hello")).read_bytes()
    for cut, text in [(40, "truncated ELF header"), (len(data) // 2, "beyond the end of the file")]:
        with pytest.raises(vmmpy.FormatError, match=text):
            vmmpy.Machine(write(tmp_path, "cut.elf", data[:cut]))


def test_elf_program_headers_beyond_file(tmp_path):
    elf = bytearray(make_elf([(RAM_BASE, code(B_SELF), 4)], RAM_BASE))
    elf[32:40] = (10_000).to_bytes(8, "little")  # e_phoff
    with pytest.raises(vmmpy.FormatError, match="program headers lie beyond"):
        vmmpy.Machine(write(tmp_path, "k.elf", bytes(elf)))
    # a table of 3 headers (168 bytes) where the file has 2 and 8 bytes of data after them (120 bytes)
    elf = bytearray(make_elf([(RAM_BASE, code(B_SELF), 4), (RAM_BASE + 0x1000, code(B_SELF), 4)], RAM_BASE))
    struct.pack_into("<H", elf, 0x38, 3)  # e_phnum
    with pytest.raises(vmmpy.FormatError, match="program headers lie beyond"):
        vmmpy.Machine(write(tmp_path, "k3.elf", bytes(elf)))


def test_elf_segment_with_more_file_bytes_than_memory_is_refused(tmp_path):
    """p_filesz > p_memsz (ELF: the file image cannot be larger than the segment's memory): refused, naming
    the segment, even where RAM would hold the bytes."""
    elf = bytearray(make_elf([(RAM_BASE, code(B_SELF), 4), (RAM_BASE + 0x1000, code(B_SELF) * 4, 16)], RAM_BASE))
    struct.pack_into("<Q", elf, 64 + 56 + 40, 8)  # the second segment's p_memsz: 8 of its 16 file bytes
    with pytest.raises(vmmpy.FormatError, match=r"k\.elf: segment 1 has filesz > memsz$"):
        vmmpy.Machine(write(tmp_path, "k.elf", bytes(elf)))


def test_elf_program_headers_that_end_the_file_load(tmp_path):
    """The program header table may be the file's last bytes (e_phoff + e_phnum * 56 == the file's size)."""
    text = code(B_SELF)
    phdr = struct.pack("<IIQQQQQQ", 1, 7, 64, RAM_BASE, RAM_BASE, len(text), len(text), 0x1000)
    eh = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    eh += struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, RAM_BASE, 64 + len(text), 0, 0, 64, 56, 1, 64, 0, 0)
    with vmmpy.Machine(write(tmp_path, "k.elf", eh + text + phdr)) as m:
        assert m.read_memory(RAM_BASE, 4) == text


def test_elf_segment_outside_ram(tmp_path):
    elf = make_elf([(0x1000, code(B_SELF), 4)], 0x1000)
    with pytest.raises(vmmpy.DoesNotFit, match="segment 0 at 0x1000-0x1004 lies outside guest RAM"):
        vmmpy.Machine(write(tmp_path, "k.elf", elf))


def test_elf_larger_than_ram(tmp_path):
    # p_filesz (a few bytes) fits, p_memsz (64 MiB) does not: the check must be on p_memsz, and the
    # message is the segment check's own (the copy's later error also names "(32 MiB)")
    elf = make_elf([(RAM_BASE, code(B_SELF), 64 * MIB)], RAM_BASE)
    end, ram_end = RAM_BASE + 64 * MIB, RAM_BASE + 32 * MIB
    with pytest.raises(
        vmmpy.DoesNotFit,
        match=rf"segment 0 at {RAM_BASE:#x}-{end:#x} lies outside guest RAM {RAM_BASE:#x}-{ram_end:#x} \(32 MiB\)$",
    ):
        vmmpy.Machine(write(tmp_path, "k.elf", elf), ram="32M")


@pytest.mark.parametrize("into", [0, 0x40])
def test_elf_virtual_entry_is_translated(tmp_path, into):
    """The entry point at, or `into` bytes into, a segment whose vaddr is a high kernel address."""
    import struct

    text = code(B_SELF)
    elf = bytearray(make_elf([(RAM_BASE + 0x1000, text, 0x1000)], 0xFFFF_0000_0000_1000 + into))
    # make the segment's vaddr a high kernel address while paddr stays in RAM
    struct.pack_into("<Q", elf, 64 + 16, 0xFFFF_0000_0000_1000)
    with vmmpy.Machine(write(tmp_path, "k.elf", bytes(elf))) as m:
        assert m.boot_info().entry == RAM_BASE + 0x1000 + into


def test_elf_entry_in_two_segments_is_translated_through_the_first(tmp_path):
    """Two segments at the same virtual addresses, loaded at different physical ones: the entry point
    (virtual 0x1040) is translated through the first that holds it, in program header order."""
    import struct

    text = code(B_SELF)
    elf = bytearray(make_elf([(RAM_BASE + 0x20000, text, 0x1000), (RAM_BASE + 0x10000, text, 0x1000)], 0x1040))
    struct.pack_into("<Q", elf, 64 + 16, 0x1000)
    struct.pack_into("<Q", elf, 64 + 56 + 16, 0x1000)
    with vmmpy.Machine(write(tmp_path, "k.elf", bytes(elf))) as m:
        assert m.boot_info().entry == RAM_BASE + 0x20040


def test_not_a_kernel(tmp_path):
    with pytest.raises(vmmpy.FormatError, match="not an ELF, arm64 Image or gzip"):
        vmmpy.Machine(write(tmp_path, "notes.txt", b"hello world, not a kernel" * 10))
    with pytest.raises(vmmpy.FormatError, match="empty file"):
        vmmpy.Machine(write(tmp_path, "empty", b""))


def test_missing_kernel_and_directory(tmp_path):
    with pytest.raises(vmmpy.KernelNotFound, match="no such file"):
        vmmpy.Machine(str(tmp_path / "nope.elf"))
    with pytest.raises(vmmpy.VmmError, match="not a regular file"):
        vmmpy.Machine(str(tmp_path))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(vmmpy.VmmError, match=r"file/k: cannot open kernel: Not a directory$") as e:
        vmmpy.Machine(str(tmp_path / "file" / "k"))  # an error other than ENOENT: not KernelNotFound
    assert not isinstance(e.value, vmmpy.KernelNotFound)
    with pytest.raises(vmmpy.FormatError, match="not an ELF file"):  # a magic byte above ELF's
        vmmpy.Machine(write(tmp_path, "k.elf", b"\x7fELG" + bytes(60)), kernel_format="elf")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_refused_file_leaves_no_descriptor_open(tmp_path, guest):
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = write(tmp_path, "big", bytes(5 * MIB))
    with vmmpy.Machine(guest("hello"), ram="4M") as m:
        before = len(os.listdir("/proc/self/fd"))
        for path in (str(tmp_path), str(fifo), big):  # a directory, a FIFO, larger than RAM
            for load in (m.load_kernel, m.load_initrd):
                with pytest.raises(vmmpy.VmmError, match="not a regular file|larger than guest RAM"):
                    load(path)
        for _ in range(3):  # nor does one that loads
            m.load_initrd(write(tmp_path, "initrd", b"INITRD"))
        assert len(os.listdir("/proc/self/fd")) == before


def test_image_with_mz_stub_is_placed_at_text_offset(tmp_path):
    img = make_image(code(B_SELF) * 16, text_offset=0x80000, image_size=0x200000)
    with vmmpy.Machine(write(tmp_path, "Image", img)) as m:
        bi = m.boot_info()
        assert bi.entry == RAM_BASE + 0x80000
        assert bi.kernel_end == RAM_BASE + 0x80000 + 0x200000
        assert m.read_memory(RAM_BASE + 0x80000, len(img)) == img
        assert bi.dtb_addr >= bi.kernel_end  # image_size is reserved, not just the file size


def test_image_without_a_size_is_an_old_kernel_at_512_kib(tmp_path):
    """image_size 0: a kernel older than 3.17, whose header has neither size nor a meaningful text_offset
    (booting.rst): it goes at text_offset 0x80000 and takes the file's size."""
    img = make_image(code(B_SELF) * 16, text_offset=0x1000, image_size=0)
    with vmmpy.Machine(write(tmp_path, "Image", img)) as m:
        bi = m.boot_info()
        assert bi.entry == RAM_BASE + 0x80000
        assert bi.kernel_end == RAM_BASE + 0x80000 + len(img)
        assert m.read_memory(RAM_BASE + 0x80000, len(img)) == img


def test_gzip_image(tmp_path):
    img = make_image(code(B_SELF) * 1000, image_size=1 << 20)
    with vmmpy.Machine(write(tmp_path, "Image.gz", gzip.compress(img))) as m:
        assert m.read_memory(RAM_BASE, len(img)) == img


def test_image_errors(tmp_path):
    with pytest.raises(vmmpy.DoesNotFit, match="needs 64 MiB at offset 0x0 but guest RAM is 32 MiB"):
        vmmpy.Machine(write(tmp_path, "big", make_image(b"", image_size=64 * MIB)), ram="32M")
    # the size is rounded up to whole MiB: 32 MiB and a byte needs 33
    with pytest.raises(vmmpy.DoesNotFit, match=r"big: kernel needs 33 MiB at offset 0x0 but guest RAM is 32 MiB$"):
        vmmpy.Machine(write(tmp_path, "big", make_image(b"", image_size=32 * MIB + 1)), ram="32M")
    cut = gzip.compress(make_image(bytes(range(256)) * 4096), 1)
    with pytest.raises(vmmpy.FormatError, match="truncated gzip data"):  # a buffer of all RAM from the start
        vmmpy.Machine(write(tmp_path, "cut16.gz", cut[: len(cut) // 2]), ram="16M")
    with pytest.raises(vmmpy.ArchError, match="big-endian"):
        vmmpy.Machine(write(tmp_path, "be", make_image(b"", flags=1)))
    # a text_offset past the end of RAM (no sum with it may wrap): the same refusal
    with pytest.raises(vmmpy.DoesNotFit, match=r"far: kernel needs 1 MiB at offset 0x2200000 but guest RAM is 32 MiB$"):
        vmmpy.Machine(write(tmp_path, "far", make_image(b"", text_offset=34 * MIB, image_size=MIB)), ram="32M")
    with pytest.raises(vmmpy.FormatError, match="smaller than the file"):
        vmmpy.Machine(write(tmp_path, "small", make_image(b"\0" * 4096, image_size=128)))
    gz = gzip.compress(make_image(b"\0" * 100000))
    with pytest.raises(vmmpy.FormatError, match="truncated gzip"):
        vmmpy.Machine(write(tmp_path, "cut.gz", gz[: len(gz) // 2]))
    bad = bytearray(gz)
    bad[20:40] = b"\xff" * 20
    with pytest.raises(vmmpy.FormatError, match="corrupt gzip|truncated gzip"):
        vmmpy.Machine(write(tmp_path, "bad.gz", bytes(bad)))
    with pytest.raises(vmmpy.FormatError, match="does not hold an arm64 Image"):
        vmmpy.Machine(write(tmp_path, "txt.gz", gzip.compress(b"just text" * 100)))


def test_gzip_bomb_larger_than_ram_is_refused(tmp_path):
    img = make_image(b"\0" * (40 * MIB), image_size=40 * MIB + 64)
    with pytest.raises(vmmpy.DoesNotFit, match="larger than guest RAM"):
        vmmpy.Machine(write(tmp_path, "bomb.gz", gzip.compress(img, 1)), ram="32M")


def test_raw_binary(tmp_path):
    blob = code(B_SELF, B_SELF)
    p = write(tmp_path, "raw.bin", blob)
    with vmmpy.Machine(p, kernel_format="raw", load_addr=RAM_BASE + 0x1000, entry=RAM_BASE + 0x1004) as m:
        assert m.boot_info().entry == RAM_BASE + 0x1004
        assert m.read_memory(RAM_BASE + 0x1000, 8) == blob
    with pytest.raises(vmmpy.DoesNotFit, match="entry 0x40000100 is outside"):
        vmmpy.Machine(p, kernel_format="raw", entry=RAM_BASE + 0x100)
    outside = r"raw image at 0x1000-0x1008 lies outside guest RAM 0x40000000-0x50000000 \(256 MiB\)$"
    with pytest.raises(vmmpy.DoesNotFit, match=outside):  # the default 256 MiB of RAM
        vmmpy.Machine(p, kernel_format="raw", load_addr=0x1000)


def test_initrd_and_cmdline_placement(tmp_path, guest):
    initrd = write(tmp_path, "initrd", b"INITRD" * 1000)
    with vmmpy.Machine(guest("hello"), initrd=initrd, cmdline="console=ttyAMA0 quiet") as m:
        bi = m.boot_info()
        assert bi.initrd_start >= bi.kernel_end and bi.initrd_start % (2 * MIB) == 0
        assert bi.initrd_end - bi.initrd_start == 6000
        assert m.read_memory(bi.initrd_start, 6000) == b"INITRD" * 1000
        assert bi.dtb_addr >= bi.initrd_end
        assert m.read_memory(bi.dtb_addr, 4) == b"\xd0\x0d\xfe\xed"


def test_initrd_errors(tmp_path, guest):
    with pytest.raises(vmmpy.KernelNotFound, match="cannot open initrd"):
        vmmpy.Machine(guest("hello"), initrd=str(tmp_path / "missing.cpio"))
    with pytest.raises(vmmpy.FormatError, match="empty initrd"):
        vmmpy.Machine(guest("hello"), initrd=write(tmp_path, "empty", b""))
    big = write(tmp_path, "big", b"\0" * (6 * MIB))
    with pytest.raises(vmmpy.DoesNotFit, match="larger than guest RAM"):
        vmmpy.Machine(guest("hello"), initrd=big, ram="4M")
    with pytest.raises(vmmpy.DoesNotFit, match="do not fit"):
        vmmpy.Machine(guest("hello"), initrd=write(tmp_path, "mid", b"\0" * (3 * MIB)), ram="4M").boot_info()


def test_cmdline_too_long(guest):
    with pytest.raises(vmmpy.InvalidArgument, match="command line too long"):
        vmmpy.Machine(guest("hello"), cmdline="x" * 5000)
    with pytest.raises(vmmpy.InvalidArgument, match=r"^kernel command line too long \(4096 bytes, at most 4095\)$"):
        vmmpy.Machine(guest("hello"), cmdline="x" * 4096)
    with vmmpy.Machine(guest("hello"), cmdline="x" * 4095) as m:  # the longest there is room for
        assert b"x" * 4095 + b"\0" in m.dtb()
    with vmmpy.Machine(guest("hello"), cmdline="first") as m:
        m.set_cmdline("second")  # replaces (and frees: make test-asan) the first
        dtb = m.dtb()
        assert b"second\0" in dtb and b"first\0" not in dtb


def test_elf_entry_point_needs_an_instruction_in_ram(tmp_path):
    """The entry point's whole first instruction (4 bytes) must be in guest RAM."""
    ram_end = RAM_BASE + 32 * MIB
    with vmmpy.Machine(write(tmp_path, "k.elf", make_elf([(RAM_BASE, code(B_SELF), 4)], ram_end - 4)), ram="32M") as m:
        assert m.boot_info().entry == ram_end - 4
    for entry in (ram_end - 3, ram_end):
        with pytest.raises(vmmpy.DoesNotFit, match=rf"k\.elf: entry point {entry:#x} is not in guest RAM$"):
            vmmpy.Machine(write(tmp_path, "k.elf", make_elf([(RAM_BASE, code(B_SELF), 4)], entry)), ram="32M")


def test_elf_program_headers_other_than_pt_load_are_skipped(tmp_path):
    """Only PT_LOAD (1) headers are loaded: a PT_NULL (0) or PT_NOTE (4) one pointing outside RAM is not."""
    import struct

    for p_type in (0, 4):
        elf = bytearray(make_elf([(RAM_BASE, code(B_SELF), 4), (0x1000, b"note", 4)], RAM_BASE))
        struct.pack_into("<I", elf, 64 + 56, p_type)  # the second program header's p_type
        with vmmpy.Machine(write(tmp_path, "k.elf", bytes(elf))) as m:
            assert m.boot_info().entry == RAM_BASE


def test_elf_of_exactly_a_header_is_not_truncated(tmp_path):
    elf = make_elf([(RAM_BASE, code(B_SELF), 4)], RAM_BASE)
    with pytest.raises(vmmpy.FormatError, match="program headers lie beyond"):  # e_phoff 64: nothing after it
        vmmpy.Machine(write(tmp_path, "k.elf", elf[:64]))
    with pytest.raises(vmmpy.FormatError, match=r"truncated ELF header \(63 bytes\)"):
        vmmpy.Machine(write(tmp_path, "k.elf", elf[:63]))


def test_corrupt_gzip_names_what_zlib_found(tmp_path):
    # a gzip header, then a final deflate block of the reserved type 3 (RFC 1951 §3.2.3)
    bad = gzip.compress(b"")[:10] + b"\x07" + bytes(16)
    with pytest.raises(vmmpy.FormatError, match=r"bad\.gz: corrupt gzip data \(invalid block type\)$"):
        vmmpy.Machine(write(tmp_path, "bad.gz", bad))


def test_loading_twice_or_after_start_is_refused(guest, tmp_path):
    with vmmpy.Machine(guest("hello")) as m:
        with pytest.raises(vmmpy.StateError, match="already loaded"):
            m.load_kernel(guest("hello"))
        m.run(timeout=10)
        with pytest.raises(vmmpy.StateError, match="already started"):
            m.set_cmdline("x")
        initrd = tmp_path / "initrd"
        initrd.write_bytes(b"late")
        with pytest.raises(vmmpy.StateError, match="already started"):
            m.load_initrd(initrd)


def test_debian_style_image_copy(tmp_path):
    # a real-world shape: "MZ" stub + text_offset 0 + image_size larger than the file
    img = make_image(code(B_SELF) * 256, text_offset=0, image_size=8 * MIB)
    p = write(tmp_path, "vmlinuz", img)
    shutil.copy(p, tmp_path / "copy")
    with vmmpy.Machine(str(tmp_path / "copy"), ram="64M") as m:
        assert m.boot_info().kernel_end == RAM_BASE + 8 * MIB


def test_elf_format_forced_on_a_non_elf(tmp_path):
    with pytest.raises(vmmpy.FormatError, match=r"k\.bin: not an ELF file$"):
        vmmpy.Machine(write(tmp_path, "k.bin", b"hello world, not a kernel" * 10), kernel_format="elf")


def test_elf_without_loadable_segments(tmp_path):
    import struct

    elf = bytearray(make_elf([(RAM_BASE, code(B_SELF), 4)], RAM_BASE))
    struct.pack_into("<I", elf, 64, 4)  # p_type PT_NOTE
    with pytest.raises(vmmpy.FormatError, match="no loadable segments"):
        vmmpy.Machine(write(tmp_path, "k.elf", bytes(elf)))


def test_elf_empty_segment_is_skipped(tmp_path):
    # a PT_LOAD with p_memsz 0 (and a p_paddr outside RAM) is neither checked, loaded nor counted in the extent
    text = code(B_SELF)
    elf = make_elf([(0x1000, b"", 0), (RAM_BASE + 0x2000, text, 0x100)], RAM_BASE + 0x2000)
    with vmmpy.Machine(write(tmp_path, "k.elf", elf)) as m:
        bi = m.boot_info()
        assert (bi.kernel_start, bi.kernel_end, bi.entry) == (RAM_BASE + 0x2000, RAM_BASE + 0x2100, RAM_BASE + 0x2000)


def test_elf_bss_only_segment_at_the_end_of_the_file_loads(tmp_path):
    # a PT_LOAD with no file bytes (p_filesz 0: all .bss) may have its p_offset at the file's very end, as
    # linkers put it: nothing is read from the file, its memory is zeroed and it counts in the extent
    text = code(B_SELF)
    elf = make_elf([(RAM_BASE, text, 0x100), (RAM_BASE + 0x1000, b"", 0x1000)], RAM_BASE)
    assert struct.unpack_from("<Q", elf, 64 + 56 + 8)[0] == len(elf)  # the second segment's p_offset
    with vmmpy.Machine(write(tmp_path, "k.elf", elf)) as m:
        bi = m.boot_info()
        assert (bi.kernel_start, bi.kernel_end, bi.entry) == (RAM_BASE, RAM_BASE + 0x2000, RAM_BASE)
        assert m.read_memory(RAM_BASE + 0x1000, 0x1000) == bytes(0x1000)


def test_elf_load_is_logged(tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="vmmpy")
    elf = make_elf([(RAM_BASE + 0x1000, code(B_SELF), 0x300)], RAM_BASE + 0x1000)
    with vmmpy.Machine(write(tmp_path, "k.elf", elf), log_level=logging.DEBUG):
        pass
    assert "k.elf: ELF 0x40001000-0x40001300 entry 0x40001000" in caplog.text


def test_large_gzip_image(tmp_path):
    # a compressed file of more than 4 MiB (the decompression buffer starts at 4x the file's size)
    import random

    body = random.Random(1).randbytes(5 * MIB)
    img = make_image(body)
    gz = gzip.compress(img, 1)
    assert len(gz) > 4 * MIB
    with vmmpy.Machine(write(tmp_path, "Image.gz", gz), ram="32M") as m:
        assert m.boot_info().kernel_end == RAM_BASE + len(img)
        assert m.read_memory(RAM_BASE, len(img)) == img


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc/self/status")
def test_gzip_decompression_buffer_is_freed(tmp_path):
    # 64 MiB decompressed: the buffer grows to 128 MiB; five loads must not keep 640 MiB mapped
    p = write(tmp_path, "Image.gz", gzip.compress(make_image(b"\0" * (64 * MIB)), 1))
    with vmmpy.Machine(p, ram="128M"):
        pass
    before = _vm_size()
    for _ in range(5):
        with vmmpy.Machine(p, ram="128M"):
            pass
    assert _vm_size() - before < 256 * MIB


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc/self/status")
def test_gzip_decompression_buffer_is_freed_when_decompression_fails(tmp_path):
    # each failure frees its buffer: RAM + 1 bytes (64 MiB here) for an output larger than RAM, the first 16 MiB
    # for corrupt or truncated data. Six rounds that kept them would leave 6 * 96 MiB mapped
    stream = gzip.compress(make_image(b"\0" * (80 * MIB)), 1)
    corrupt = bytearray(gzip.compress(make_image(b"\1" * MIB), 1))
    corrupt[len(corrupt) // 2] ^= 0xFF
    cases = [
        (write(tmp_path, "big.gz", stream), vmmpy.DoesNotFit, "decompressed kernel is larger than guest RAM"),
        (write(tmp_path, "bad.gz", bytes(corrupt)), vmmpy.FormatError, "corrupt gzip data"),
        (write(tmp_path, "cut.gz", stream[: len(stream) // 2]), vmmpy.FormatError, "truncated gzip data"),
    ]

    def round_():
        for path, exc, text in cases:
            with pytest.raises(exc, match=text):
                vmmpy.Machine(path, ram="64M")

    round_()
    before = _vm_size()
    for _ in range(6):
        round_()
    assert _vm_size() - before < 64 * MIB


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc/self/status")
def test_a_replaced_command_line_is_freed(guest):
    # 20000 command lines of 4000 bytes, each replacing the last: one is kept, not 80 MB of them
    with vmmpy.Machine(guest("hello")) as m:
        m.set_cmdline("y" * 4000)
        before = _vm_size()
        for i in range(20000):
            m.set_cmdline(f"{i:05}" + "x" * 3995)
        assert _vm_size() - before < 16 * MIB
        assert b"19999" + b"x" * 3995 + b"\0" in m.dtb()


def test_bss_and_image_reserve_are_zeroed_over_old_contents(tmp_path):
    # what RAM held before the load (here written through the API) does not show through a segment's bss
    text = code(B_SELF)
    elf = make_elf([(RAM_BASE + 0x1000, text, 0x1000)], RAM_BASE + 0x1000)
    with vmmpy.Machine(virtio_test_devices=1) as m:
        m.write_memory(RAM_BASE + 0x1000, b"\xaa" * 0x1000)
        m.load_kernel(write(tmp_path, "k.elf", elf))
        assert m.read_memory(RAM_BASE + 0x1000, 0x1000) == text + bytes(0x1000 - len(text))


def test_raw_binary_extent(tmp_path):
    blob = code(B_SELF, B_SELF, B_SELF)
    with vmmpy.Machine(write(tmp_path, "raw.bin", blob), kernel_format="raw", load_addr=RAM_BASE + 0x1000) as m:
        bi = m.boot_info()
        assert (bi.kernel_start, bi.kernel_end, bi.entry) == (RAM_BASE + 0x1000, RAM_BASE + 0x100C, RAM_BASE + 0x1000)


def test_two_byte_gzip_magic_is_a_truncated_gzip(tmp_path):
    with pytest.raises(vmmpy.FormatError, match="truncated gzip data"):
        vmmpy.Machine(write(tmp_path, "k.gz", b"\x1f\x8b"))


def test_kernel_opened_as_descriptor_0(tmp_path):
    # a process started with stdin closed: the kernel's file gets descriptor 0, which is a valid one
    import os
    import subprocess
    import sys

    elf = write(tmp_path, "k.elf", make_elf([(RAM_BASE + 0x1000, code(B_SELF), 4)], RAM_BASE + 0x1000))
    prog = f"import os, vmmpy; os.close(0); m = vmmpy.Machine({elf!r}); print(hex(m.boot_info().entry))"
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120, env=os.environ)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == hex(RAM_BASE + 0x1000)


def test_elf_program_header_shape_is_checked(tmp_path):
    import struct

    for field, value in ((56, 0), (54, 32), (54, 64)):  # e_phnum 0; e_phentsize 32 or 64 (only 56 is ELF64's)
        elf = bytearray(make_elf([(RAM_BASE, code(B_SELF), 4)], RAM_BASE))
        struct.pack_into("<H", elf, field, value)
        with pytest.raises(vmmpy.FormatError, match="no usable program headers"):
            vmmpy.Machine(write(tmp_path, "k.elf", bytes(elf)))


def test_elf_segment_data_beyond_the_file(tmp_path):
    import struct

    elf = make_elf([(RAM_BASE, code(B_SELF) * 4, 16)], RAM_BASE)
    with pytest.raises(vmmpy.FormatError, match="segment 0 lies beyond the end of the file"):
        vmmpy.Machine(write(tmp_path, "cut.elf", elf[:-4]))  # p_filesz runs 4 bytes past the end
    far = bytearray(elf)
    struct.pack_into("<Q", far, 64 + 8, 1 << 40)  # p_offset far beyond the file
    with pytest.raises(vmmpy.FormatError, match="segment 0 lies beyond the end of the file"):
        vmmpy.Machine(write(tmp_path, "far.elf", bytes(far)))


@pytest.mark.parametrize("second", [0x3000, 0x2000], ids=["apart", "adjacent"])
def test_elf_entry_is_translated_through_the_segment_that_holds_it(tmp_path, second):
    """Virtual 0x1000 -> RAM_BASE, virtual `second` -> RAM_BASE + 0x10000, the entry at `second`: it is in the
    second segment, also when that starts where the first ends (the entry one past the first one's end)."""
    import struct

    text = code(B_SELF)
    elf = bytearray(make_elf([(RAM_BASE, text, 0x1000), (RAM_BASE + 0x10000, text, 0x1000)], second))
    struct.pack_into("<Q", elf, 64 + 16, 0x1000)
    struct.pack_into("<Q", elf, 64 + 56 + 16, second)
    with vmmpy.Machine(write(tmp_path, "k.elf", bytes(elf))) as m:
        assert m.boot_info().entry == RAM_BASE + 0x10000


def test_elf_entry_below_a_wrapping_segment_is_not_in_it(tmp_path):
    import struct

    # a segment at virtual 0xffff_ffff_ffff_f000 (+0x2000 wraps past 2**64): the entry 0x800 is below it,
    # not 0x1800 bytes into it, so it stays untranslated and outside RAM
    elf = bytearray(make_elf([(RAM_BASE, code(B_SELF), 0x2000)], 0x800))
    struct.pack_into("<Q", elf, 64 + 16, 0xFFFF_FFFF_FFFF_F000)
    with pytest.raises(vmmpy.DoesNotFit, match="entry point 0x800 is not in guest RAM"):
        vmmpy.Machine(write(tmp_path, "k.elf", bytes(elf)))


def test_image_format_forced_on_a_non_image(tmp_path):
    with pytest.raises(vmmpy.FormatError, match=r'k\.bin: not an arm64 Image \(no "ARM\\x64" magic at 0x38\)$'):
        vmmpy.Machine(write(tmp_path, "k.bin", b"\0" * 4096), kernel_format="image")
    # a magic one above "ARM\x64" (and all ones) is no more an Image than one below it
    for magic in (0x644D5242, 0xFFFFFFFF):
        img = bytearray(make_image(code(B_SELF) * 16))
        struct.pack_into("<I", img, 0x38, magic)
        with pytest.raises(vmmpy.FormatError, match=r'k\.img: not an arm64 Image \(no "ARM\\x64" magic at 0x38\)$'):
            vmmpy.Machine(write(tmp_path, "k.img", bytes(img)), kernel_format="image")
    # recognising one (auto-detection, and what a gzip kernel holds) takes the magic exactly, not one below it
    img = bytearray(make_image(code(B_SELF) * 16))
    struct.pack_into("<I", img, 0x38, 0x644D5240)
    with pytest.raises(vmmpy.FormatError, match=r"k\.img: not an ELF, arm64 Image or gzip"):
        vmmpy.Machine(write(tmp_path, "k.img", bytes(img)))
    with pytest.raises(vmmpy.FormatError, match=r"k\.gz: gzip data does not hold an arm64 Image$"):
        vmmpy.Machine(write(tmp_path, "k.gz", gzip.compress(bytes(img))))
    # a forced Image shorter than its 64-byte header
    with pytest.raises(vmmpy.FormatError, match=r"k\.bin: truncated arm64 Image header \(10 bytes\)$"):
        vmmpy.Machine(write(tmp_path, "k.bin", b"\0" * 10), kernel_format="image")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc/self/status")
def test_gzip_decompression_buffer_grows_and_running_out_of_memory_is_an_error(tmp_path):
    # in a child whose address space leaves room for 16 + 32 MiB of decompression buffer but not for 64:
    # a small kernel loads (the buffer starts small, not at the size of RAM); a 60 MiB one fails cleanly, freeing
    # the buffer it had (glibc's in-use count, which only glibc has: elsewhere that line is "kept 0 MiB" always)
    import os
    import subprocess
    import sys

    small = write(tmp_path, "small.gz", gzip.compress(make_image(b"\1" * MIB), 1))
    big = write(tmp_path, "big.gz", gzip.compress(make_image(b"\0" * (60 * MIB)), 1))
    prog = f"""
import ctypes, resource, vmmpy
def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
class Mallinfo2(ctypes.Structure):  # glibc's heap statistics: in-use bytes, mmapped blocks included
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
mallinfo2 = getattr(ctypes.CDLL("libc.so.6"), "mallinfo2", None)
def in_use():
    if mallinfo2 is None:
        return 0
    mallinfo2.restype = Mallinfo2
    m = mallinfo2()
    return m.uordblks + m.hblkhd
a, b = vmmpy.Machine(ram="64M"), vmmpy.Machine(ram="64M")
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + 56 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
a.load_kernel({small!r})
print("small loaded")
before = in_use()
try:
    b.load_kernel({big!r})
except vmmpy.VmmError as e:
    print(type(e).__name__, e)
print("kept", (in_use() - before) >> 20, "MiB")  # the 32 MiB buffer whose growth failed is freed too
"""
    env = dict(os.environ, VMMPY_TEST_AS_HEADROOM_GIB="0")
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "small loaded",
        f"OutOfMemory {big}: out of memory decompressing",
        "kept 0 MiB",
    ], r.stdout


def test_gzip_larger_than_a_ram_that_is_not_a_power_of_2(tmp_path):
    # 24 MiB of RAM: the buffer grows 16 MiB -> RAM + 1, and 30 MiB of output overflows it
    img = make_image(b"\0" * (30 * MIB))
    with pytest.raises(vmmpy.DoesNotFit, match=r"decompressed kernel is larger than guest RAM \(24 MiB\)"):
        vmmpy.Machine(write(tmp_path, "big.gz", gzip.compress(img, 1)), ram="24M")


def test_elf_file_larger_than_ram_loads(tmp_path):
    # debug sections may make an ELF larger than guest RAM: only its PT_LOAD segments must fit
    elf = make_elf([(RAM_BASE, code(B_SELF), 4)], RAM_BASE) + bytes(6 * MIB)
    with vmmpy.Machine(write(tmp_path, "vmlinux", elf), ram="4M") as m:
        assert m.boot_info().entry == RAM_BASE
    with pytest.raises(vmmpy.DoesNotFit, match=rf"kernel \({len(elf)} bytes\) is larger than guest RAM \(4 MiB\)"):
        vmmpy.Machine(write(tmp_path, "Image", b"\0" * len(elf)), ram="4M")


SYSFS_FILE = "/sys/devices/system/cpu/online"  # st_size 4096, a few bytes to read


def test_the_gzip_magic_is_two_exact_bytes():
    """1f 8b is gzip (RFC 1952 §2.3.1); the bytes beside it are not."""
    from vmmpy._ffi import ffi, lib

    from .conftest import c_vm

    for head in (b"\x1e\x8b", b"\x20\x8b", b"\x1f\x8a", b"\x1f\x8c"):
        with c_vm() as vm:
            data = head + bytes(62)
            assert lib.vmm_load_kernel_mem(vm, data, len(data), b"k", ffi.NULL) == lib.VMM_EFORMAT
            assert ffi.string(lib.vmm_last_error(vm)).decode().startswith("k: not an ELF, arm64 Image or gzip"), head


def test_raw_kernel_edges(tmp_path):
    """A raw kernel: empty is refused, one byte loads, and the entry must be inside the bytes loaded
    (the address one past the last is not)."""
    with pytest.raises(vmmpy.FormatError, match=r"empty\.bin: empty file$"):
        vmmpy.Machine(write(tmp_path, "empty.bin", b""), kernel_format="raw")
    with vmmpy.Machine(write(tmp_path, "one.bin", b"\x1f"), kernel_format="raw") as m:
        assert m.read_memory(RAM_BASE, 1) == b"\x1f" and m.boot_info().entry == RAM_BASE
    blob = code(B_SELF, B_SELF)
    with pytest.raises(vmmpy.DoesNotFit, match=rf"entry 0x{RAM_BASE + 8:x} is outside the loaded image$"):
        vmmpy.Machine(write(tmp_path, "two.bin", blob), kernel_format="raw", load_addr=RAM_BASE, entry=RAM_BASE + 8)
    with vmmpy.Machine(write(tmp_path, "two.bin", blob), kernel_format="raw", entry=RAM_BASE + 4) as m:
        assert m.boot_info().entry == RAM_BASE + 4


def test_kernel_opts_of_an_older_smaller_size_read_only_that_size():
    """struct vmm_kernel_opts is size-versioned: a caller built against a struct that ended after `format`
    (size 8) gets the defaults for the fields it does not have (load_addr RAM base, entry load_addr), not
    whatever its memory holds past them; an unknown format is refused by number."""
    from vmmpy._ffi import ffi, lib

    from .conftest import SYSTEM_OFF, c_vm

    raw = code(*SYSTEM_OFF)
    with c_vm() as vm:
        opts = ffi.new("struct vmm_kernel_opts *", {"size": 8, "format": lib.VMM_KERNEL_RAW})
        opts.load_addr, opts.entry = 0xDEAD_0000, 0xDEAD_0004  # past the caller's size: not its fields
        assert lib.vmm_load_kernel_mem(vm, raw, len(raw), b"raw", opts) == 0, ffi.string(lib.vmm_last_error(vm))
        info = ffi.new("struct vmm_boot_info *", {"size": ffi.sizeof("struct vmm_boot_info")})
        assert lib.vmm_boot_info(vm, info) == 0 and info.entry == RAM_BASE
    with c_vm() as vm:
        opts = ffi.new("struct vmm_kernel_opts *", {"size": ffi.sizeof("struct vmm_kernel_opts"), "format": 99})
        assert lib.vmm_load_kernel_mem(vm, raw, len(raw), b"raw", opts) == lib.VMM_EINVAL
        assert ffi.string(lib.vmm_last_error(vm)).decode() == "unknown kernel format 99"


def test_a_kernel_loaded_after_the_start_is_refused_before_its_file_is_read(guest):
    """After the run started, vmm_load_kernel and vmm_load_kernel_mem are refused as such (ESTATE), even for a
    file that does not exist: the state is checked before the file is opened."""
    from vmmpy._ffi import ffi, lib

    raw = code(B_SELF)
    with vmmpy.Machine(guest("hello")) as m:
        m.run(timeout=10)
        for rc in (lib.vmm_load_kernel(m._vm, b"/nonexistent/kernel", ffi.NULL),
                   lib.vmm_load_kernel_mem(m._vm, raw, len(raw), b"k", ffi.NULL)):  # fmt: skip
            assert rc == lib.VMM_ESTATE
            assert (
                ffi.string(lib.vmm_last_error(m._vm)).decode() == "the VM has already started; load before running it"
            )


@pytest.mark.skipif(not Path(SYSFS_FILE).is_file(), reason=f"needs {SYSFS_FILE}")
def test_file_shorter_than_its_size_is_a_read_error():
    assert Path(SYSFS_FILE).stat().st_size > len(Path(SYSFS_FILE).read_bytes())
    with pytest.raises(vmmpy.VmmError, match=f"{SYSFS_FILE}: reading kernel: Input/output error"):
        vmmpy.Machine(SYSFS_FILE)


EIO_FILE = "/sys/devices/software/power/autosuspend_delay_ms"  # runtime PM without autosuspend: EIO


def test_a_file_whose_read_fails_is_a_read_error(guest):
    import errno
    import os

    try:
        with open(EIO_FILE, "rb", buffering=0) as f:
            f.read(64)
        pytest.skip(f"{EIO_FILE} reads here")
    except OSError as e:
        if e.errno != errno.EIO:
            pytest.skip(f"{EIO_FILE}: {e}")
    assert os.stat(EIO_FILE).st_size > 0
    with pytest.raises(vmmpy.VmmError, match=f"^{EIO_FILE}: reading initrd: Input/output error$"):
        vmmpy.Machine(guest("hello"), initrd=EIO_FILE)


def test_load_kernel_mem_checks_its_arguments():
    from vmmpy._ffi import ffi, lib

    from .conftest import c_vm

    with c_vm() as vm:
        assert lib.vmm_load_kernel_mem(ffi.NULL, b"x", 1, ffi.NULL, ffi.NULL) == lib.VMM_EINVAL
        for fn in (lib.vmm_load_initrd, lambda vm, path: lib.vmm_load_kernel(vm, path, ffi.NULL)):
            assert fn(vm, ffi.NULL) == lib.VMM_EINVAL  # no path: refused, not dereferenced
            assert fn(ffi.NULL, b"k") == lib.VMM_EINVAL
        assert lib.vmm_load_kernel_mem(vm, ffi.NULL, 16, ffi.NULL, ffi.NULL) == lib.VMM_EINVAL  # no bytes, a length
        opts = ffi.new("struct vmm_kernel_opts *", {"size": 4, "format": lib.VMM_KERNEL_RAW})
        assert lib.vmm_load_kernel_mem(vm, b"abcd", 4, ffi.NULL, opts) == lib.VMM_EINVAL
        assert ffi.string(lib.vmm_last_error(vm)).decode() == "struct vmm_kernel_opts: bad size 4"
        assert lib.vmm_load_kernel_mem(vm, ffi.NULL, 0, ffi.NULL, ffi.NULL) == lib.VMM_EFORMAT  # nothing: empty
        assert ffi.string(lib.vmm_last_error(vm)).decode() == "kernel: empty file"
        assert lib.vmm_set_cmdline(vm, b"console=ttyAMA0") == 0  # 0 on success, as every call
        # one byte of gzip's two-byte magic is not gzip, whatever follows it in memory beyond the length given
        gz = ffi.new("char[]", b"\x1f\x8b")
        assert lib.vmm_load_kernel_mem(vm, gz, 1, b"k1", ffi.NULL) == lib.VMM_EFORMAT
        assert ffi.string(lib.vmm_last_error(vm)).decode().startswith("k1: not an ELF, arm64 Image or gzip")
        # nor is 1-3 bytes of the ELF magic an ELF (its four bytes are there in memory, past the length)
        magic = ffi.new("char[]", b"\x7fELF")
        for n in (1, 2, 3):
            assert lib.vmm_load_kernel_mem(vm, magic, n, b"k3", ffi.NULL) == lib.VMM_EFORMAT
            assert ffi.string(lib.vmm_last_error(vm)).decode().startswith("k3: not an ELF, arm64 Image or gzip")


def test_the_size_limit_is_guest_ram_unless_the_kernel_is_an_elf(tmp_path, guest):
    # a kernel that only looks like an ELF in three of its four magic bytes is held to guest RAM (4 MiB)
    size = 6 * MIB
    for magic in (b"\x80ELF", b"\xffELF", b"\x7eELF", b"\x7fELG", b"\x7fDLF"):
        k = write(tmp_path, "k", magic + bytes(size - 4))
        with pytest.raises(vmmpy.DoesNotFit, match=rf"kernel \({size} bytes\) is larger than guest RAM \(4 MiB\)$"):
            vmmpy.Machine(k, ram="4M")
    # a file of exactly the size of RAM passes the check (a raw kernel then fills RAM, leaving no room for the
    # device tree; an initrd does not fit beside a kernel: boot_info's layout reports both), one byte more does not
    exact = write(tmp_path, "exact", code(B_SELF) + bytes(4 * MIB - 8) + b"LAST")
    with vmmpy.Machine(exact, kernel_format="raw", ram="4M") as m:
        assert m.read_memory(RAM_BASE + 4 * MIB - 4, 4) == b"LAST"
        with pytest.raises(vmmpy.DoesNotFit, match="no room for the device tree above the kernel in 4 MiB"):
            m.boot_info()
    nofit = pytest.raises(vmmpy.DoesNotFit, match="do not fit")
    with vmmpy.Machine(guest("hello"), initrd=exact, ram="4M") as m, nofit:
        m.boot_info()
    over = write(tmp_path, "over", bytes(4 * MIB + 1))
    for kw in ({"kernel": over}, {"kernel": guest("hello"), "initrd": over}):
        what = "initrd" if "initrd" in kw else "kernel"
        with pytest.raises(vmmpy.DoesNotFit, match=rf"{what} \({4 * MIB + 1} bytes\) is larger than guest RAM"):
            vmmpy.Machine(kw.pop("kernel"), ram="4M", **kw)


def test_elf_extent_spans_segments_in_any_order(tmp_path):
    # the highest segment first: the kernel's extent is still its lowest start to its highest end
    text = code(B_SELF)
    elf = make_elf([(RAM_BASE + 0x8000, text, 0x3000), (RAM_BASE + 0x1000, text, 0x100)], RAM_BASE + 0x1000)
    with vmmpy.Machine(write(tmp_path, "k.elf", elf)) as m:
        bi = m.boot_info()
        assert (bi.kernel_start, bi.kernel_end) == (RAM_BASE + 0x1000, RAM_BASE + 0xB000)


def test_a_file_of_just_the_elf_magic_is_a_truncated_elf(tmp_path):
    with pytest.raises(vmmpy.FormatError, match=r"k: truncated ELF header \(4 bytes\)$"):
        vmmpy.Machine(write(tmp_path, "k", b"\x7fELF"))


@pytest.mark.parametrize("cut", ["at-ram-plus-one", "later"])
def test_a_cut_gzip_stream_whose_output_passes_ram_is_larger_than_ram(tmp_path, cut):
    """The output's size is checked before the input's end: a stream cut after more than RAM's worth of output
    is refused as larger than RAM, also when the cut falls exactly where the output reaches RAM + 1 bytes (the
    decompression buffer is full as the input runs out). The stream (RFC 1952, RFC 1951): 3 MiB of zeros
    deflated, then 2 MiB in stored blocks, in which a cut is byte-exact; the file stays under RAM's size."""
    import struct
    import zlib

    ram = 4 * MIB
    img = make_image(b"\0" * (5 * MIB))
    head, tail = img[: 3 * MIB], img[3 * MIB :]
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = c.compress(head) + c.flush(zlib.Z_SYNC_FLUSH)  # non-final blocks ending on a byte boundary
    for at in range(0, len(tail), 65535):  # BFINAL 0, BTYPE 00, LEN, NLEN, the bytes
        chunk = tail[at : at + 65535]
        body += b"\0" + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk
    body += b"\1\0\0\xff\xff"  # the final block: stored, empty
    stream = gzip.compress(b"")[:10] + body + struct.pack("<II", zlib.crc32(img), len(img))
    assert zlib.decompress(stream, 16 + zlib.MAX_WBITS) == img and len(stream) < ram

    def out(n):  # bytes the first n bytes of the stream decompress to
        return len(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(stream[:n]))

    lo, hi = 10, len(stream)
    while lo < hi:  # the shortest prefix with RAM + 1 bytes of output
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if out(mid) < ram + 1 else (lo, mid)
    assert out(lo) == ram + 1 and out(lo - 1) == ram
    n = lo if cut == "at-ram-plus-one" else lo + 4096
    with pytest.raises(vmmpy.DoesNotFit, match=r"cut\.gz: decompressed kernel is larger than guest RAM \(4 MiB\)$"):
        vmmpy.Machine(write(tmp_path, "cut.gz", stream[:n]), ram="4M")


# inflateInit2_ called from libvmm's extension fails as it does when zlib cannot allocate its state
FAIL_INFLATE_INIT_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <zlib.h>
int inflateInit2_(z_streamp strm, int bits, const char *version, int size)
{
    Dl_info di;
    if (dladdr(__builtin_return_address(0), &di) && di.dli_fname && strstr(di.dli_fname, "_vmm"))
        return Z_MEM_ERROR;
    return ((int (*)(z_streamp, int, const char *, int))dlsym(RTLD_NEXT, "inflateInit2_"))(strm, bits, version, size);
}
"""


# malloc and realloc of 2 MiB or more called from libvmm, logged as "malloc N" / "realloc N" to $SHIM_LOG
LOG_LARGE_ALLOCS_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern void *__libc_malloc(size_t);
extern void *__libc_realloc(void *, size_t);
static void note(void *ra, const char *what, size_t n)
{
    Dl_info di;
    const char *log = getenv("SHIM_LOG");
    if (n < (2u << 20) || !log || !dladdr(ra, &di) || !di.dli_fname || !strstr(di.dli_fname, "_vmm"))
        return;
    FILE *f = fopen(log, "a");
    if (f) {
        fprintf(f, "%s %zu\n", what, n);
        fclose(f);
    }
}
void *malloc(size_t n)
{
    note(__builtin_return_address(0), "malloc", n);
    return __libc_malloc(n);
}
void *realloc(void *p, size_t n)
{
    note(__builtin_return_address(0), "realloc", n);
    return __libc_realloc(p, n);
}
"""


def test_gzip_decompression_buffer_starts_at_16_mib_or_4x_and_doubles_to_ram_plus_one(tmp_path):
    """The gzip kernel's output buffer (image.c gunzip): max(16 MiB, 4x the compressed size), but at most guest
    RAM + 1 (one byte more than fits tells "larger than RAM"), doubled as the output fills it, again up to RAM
    + 1. So a small kernel costs 16 MiB once, and what a stream can make the VMM allocate is bounded by the
    RAM the user gave. The allocations are logged by a preloaded shim (malloc/realloc from libvmm, >= 2 MiB)."""
    from .conftest import run_with_shim

    cases = [  # name, decompressed body, RAM, random (incompressible)
        ("grows", 40 << 20, "256M", False),
        ("grows-to-ram", 38 << 20, "40M", False),
        ("first-clamped", 6 << 20, "8M", False),
        ("first-is-ram", 6 << 20, "16M", False),  # 16 MiB is not above RAM + 1: no clamp
        ("doubles-to-ram", 20 << 20, "32M", False),  # 2 x 16 MiB is RAM exactly, not above RAM + 1
        ("4x", 5 << 20, "256M", True),
        ("just-below-4x", 3900 << 10, "256M", True),  # 4x the compressed size is just under 16 MiB
        ("just-above-4x", 4150 << 10, "256M", True),  # ... just over it
    ]
    paths = {}
    for name, size, _, rand in cases:
        body = os.urandom(size) if rand else bytes(size)
        paths[name] = write(tmp_path, f"{name}.gz", gzip.compress(make_image(body), compresslevel=1))
    log = tmp_path / "allocs.log"
    script = "import os, vmmpy\n"
    for name, _, ram, _ in cases:
        script += f"open({str(log)!r}, 'a').write('== {name}\\n')\n"
        script += f"vmmpy.Machine({paths[name]!r}, ram={ram!r}).close()\n"
    r = run_with_shim(tmp_path, LOG_LARGE_ALLOCS_C, script, SHIM_LOG=str(log))
    assert r.returncode == 0, r.stderr
    blocks = {b.split("\n", 1)[0]: b.split("\n")[1:-1] for b in log.read_text().split("== ")[1:]}
    mib = 1 << 20
    n4x, below, above = (os.path.getsize(paths[k]) for k in ("4x", "just-below-4x", "just-above-4x"))
    assert 15 * mib < 4 * below < 16 * mib < 4 * above < 17 * mib and 4 * n4x > 16 * mib
    assert blocks == {
        "grows": [f"malloc {16 * mib}", f"realloc {32 * mib}", f"realloc {64 * mib}"],
        "grows-to-ram": [f"malloc {16 * mib}", f"realloc {32 * mib}", f"realloc {40 * mib + 1}"],
        "first-clamped": [f"malloc {8 * mib + 1}"],
        "first-is-ram": [f"malloc {16 * mib}"],
        "doubles-to-ram": [f"malloc {16 * mib}", f"realloc {32 * mib}"],
        # the file read whole (its buffer), then the output buffer
        "4x": [f"malloc {n4x}", f"malloc {4 * n4x}"],
        "just-below-4x": [f"malloc {below}", f"malloc {16 * mib}"],
        "just-above-4x": [f"malloc {above}", f"malloc {4 * above}"],
    }, blocks


@pytest.mark.skipif(not Path("/usr/include/zlib.h").exists(), reason="needs zlib.h for the shim")
def test_gzip_decompression_that_cannot_start_is_out_of_memory(tmp_path):
    """zlib failing to set up (inflateInit2: its state not allocated) is OutOfMemory naming the file, not a
    decompression run on a stream that was never initialised."""
    from .conftest import run_with_shim

    p = write(tmp_path, "Image.gz", gzip.compress(make_image(code(B_SELF) * 16)))
    script = f"import vmmpy\ntry:\n    vmmpy.Machine({p!r})\n"
    script += "except vmmpy.errors.VmmError as e:\n    print(type(e).__name__, e)\n"
    r = run_with_shim(tmp_path, FAIL_INFLATE_INIT_C, script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"OutOfMemory {p}: cannot start gzip decompression"


def test_only_the_program_headers_e_phnum_counts_are_loaded(tmp_path):
    """ELF: the program header table has e_phnum entries; a well-formed PT_LOAD header right after it (here the
    second of two, with e_phnum patched to 1) is file data, not a segment: its bytes stay out of RAM."""
    import struct

    elf = bytearray(make_elf([(RAM_BASE, code(B_SELF), 4), (RAM_BASE + 0x10000, b"\xa5" * 64, 64)], RAM_BASE))
    struct.pack_into("<H", elf, 0x38, 1)  # e_phnum
    with vmmpy.Machine(write(tmp_path, "vmlinux", bytes(elf))) as m:
        assert m.read_memory(RAM_BASE + 0x10000, 64) == bytes(64)
        assert m.boot_info().kernel_end == RAM_BASE + 4
    # nor is it checked: the same header placed outside RAM, or with filesz > memsz, refuses nothing
    for field, value in ((24, 0x10_0000_0000), (40, 1 << 20)):  # p_paddr, p_memsz < p_filesz after it
        bad = bytearray(elf)
        struct.pack_into("<Q", bad, 64 + 56 + field, value)
        if field == 40:
            struct.pack_into("<Q", bad, 64 + 56 + 32, (1 << 20) + 1)  # p_filesz
        with vmmpy.Machine(write(tmp_path, "vmlinux", bytes(bad))) as m:
            assert m.boot_info().kernel_end == RAM_BASE + 4


def test_an_image_whose_reserve_ends_exactly_at_the_end_of_ram_loads(tmp_path):
    """booting.rst: the kernel needs text_offset + image_size bytes from the start of RAM; exactly RAM's size fits
    (what does not then is the device tree, placed above the kernel), one byte more does not."""
    img = make_image(code(B_SELF), text_offset=0x200000, image_size=2 * MIB)
    with vmmpy.Machine(write(tmp_path, "fits", img), ram="4M") as m:
        assert m.read_memory(RAM_BASE + 0x200000, len(img)) == img
        with pytest.raises(vmmpy.DoesNotFit, match="^no room for the device tree above the kernel in 4 MiB of RAM$"):
            m.boot_info()
    over = write(tmp_path, "over", make_image(code(B_SELF), text_offset=0x200000, image_size=2 * MIB + 1))
    with pytest.raises(vmmpy.DoesNotFit, match=r"over: kernel needs 3 MiB at offset 0x200000 but guest RAM is 4 MiB$"):
        vmmpy.Machine(over, ram="4M")


# open(2) of the path in $FAIL_OPEN_PATH fails with the errno in $FAIL_OPEN_ERRNO; every other open is libc's
FAIL_OPEN_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
int open(const char *path, int flags, ...)
{
    const char *fail = getenv("FAIL_OPEN_PATH");
    va_list ap;
    mode_t mode;
    va_start(ap, flags);
    mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    if (fail && !strcmp(path, fail)) {
        errno = atoi(getenv("FAIL_OPEN_ERRNO"));
        return -1;
    }
    return ((int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open"))(path, flags, mode);
}
"""


@pytest.mark.parametrize("err", ["EPERM", "EACCES"])
def test_a_kernel_that_cannot_be_opened_for_a_reason_other_than_absence_is_an_io_error(tmp_path, err):
    """Only ENOENT is NotFound; any other reason open(2) gives (EPERM from a security module or an immutable
    file, EACCES) is an I/O error that names it."""
    import errno
    import os

    from .conftest import run_with_shim

    p = write(tmp_path, "Image", make_image(code(B_SELF)))
    script = f"import vmmpy\ntry:\n    vmmpy.Machine({p!r})\nexcept vmmpy.errors.VmmError as e:\n    print(e.name, e)\n"
    r = run_with_shim(tmp_path, FAIL_OPEN_C, script, FAIL_OPEN_PATH=p, FAIL_OPEN_ERRNO=str(getattr(errno, err)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"VMM_EIO {p}: cannot open kernel: {os.strerror(getattr(errno, err))}"


# read(2) of the file $FAIL_READ_PATH fails with the errno in $FAIL_READ_ERRNO (0: the end of the file instead); once
# only with $FAIL_READ_ONCE; every other read is libc's
FAIL_READ_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
ssize_t read(int fd, void *buf, size_t n)
{
    static int failed;
    const char *fail = getenv("FAIL_READ_PATH");
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = fail && !(failed && getenv("FAIL_READ_ONCE")) ? readlink(link, target, sizeof target - 1) : -1;
    if (len > 0 && (size_t)len == strlen(fail) && !memcmp(target, fail, (size_t)len)) {
        failed = 1;
        int e = atoi(getenv("FAIL_READ_ERRNO"));
        if (!e)
            return 0;
        errno = e;
        return -1;
    }
    return ((ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read"))(fd, buf, n);
}
"""


@pytest.mark.skipif(os.environ.get("VMMPY_EXPECT_SANITIZED") == "1", reason="ASan intercepts read")
@pytest.mark.parametrize(
    ("err", "once", "want"),
    [
        ("ESTALE", False, "VMM_EIO {p}: reading kernel: Stale file handle"),  # read(2)'s own reason, named
        ("EOF", False, "VMM_EIO {p}: reading kernel: Input/output error"),  # the file shrank after fstat
        ("EINTR", True, "loaded"),  # a signal before any byte: the read is made again
    ],
)
def test_a_kernel_read_that_fails_names_the_reason(tmp_path, err, once, want):
    import errno

    from .conftest import run_with_shim

    p = write(tmp_path, "Image", make_image(code(B_SELF)))
    script = (
        "import vmmpy\ntry:\n"
        f"    vmmpy.Machine({p!r}).close()\n    print('loaded')\n"
        "except vmmpy.errors.VmmError as e:\n    print(e.name, e)\n"
    )
    env = {"FAIL_READ_PATH": p, "FAIL_READ_ERRNO": str(getattr(errno, err, 0))}
    if once:
        env["FAIL_READ_ONCE"] = "1"
    r = run_with_shim(tmp_path, FAIL_READ_C, script, **env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == want.format(p=p)


@pytest.mark.parametrize(
    "gz, ram", [(False, 4), (True, 4), (True, 16), (True, 24)], ids=["plain", "gzip", "gzip-first-is-ram", "gzip-grown"]
)
def test_an_image_of_exactly_guest_ram_loads_and_one_byte_more_does_not(tmp_path, gz, ram):
    """The Image's limit is guest RAM from text_offset (booting.rst's image_size): an Image (plain or decompressed
    from gzip) whose image_size is exactly RAM's size at text_offset 0 loads, its last byte at RAM's last; an
    image_size one byte more is refused, as is the exact size at a text_offset of 4 KiB. gunzip's buffer is
    RAM + 1 bytes: an output that fills it exactly ends the stream and reaches the image_size check; one byte
    more is refused by gunzip itself. In 4 MiB of RAM that buffer is RAM + 1 from the start (the first size,
    16 MiB, is clamped); in 16 MiB the first buffer is RAM itself, filled before the stream's end is seen, and
    grows by one byte; in 24 MiB it gets there by growing from 16 MiB."""
    mib, ram = ram, ram * MIB
    name = "Image.gz" if gz else "Image"

    def image(size, text_offset=0, image_size=None):
        img = make_image(code(B_SELF) + bytes(size - 64 - 8) + b"LAST", text_offset=text_offset, image_size=image_size)
        return write(tmp_path, name, gzip.compress(img, 1) if gz else img)

    with vmmpy.Machine(image(ram), ram=f"{mib}M") as m:
        assert m.read_memory(RAM_BASE + ram - 4, 4) == b"LAST"
        assert m.read_memory(RAM_BASE + 64, 4) == code(B_SELF)[:4]
    needs = rf"{name}: kernel needs {{}} MiB at offset 0x{{:x}} but guest RAM is {mib} MiB$"
    with pytest.raises(vmmpy.DoesNotFit, match=needs.format(mib + 1, 0)):
        vmmpy.Machine(image(ram, image_size=ram + 1), ram=f"{mib}M")
    with pytest.raises(vmmpy.DoesNotFit, match=needs.format(mib, 0x1000)):
        vmmpy.Machine(image(ram, 0x1000), ram=f"{mib}M")
    if gz:
        with pytest.raises(vmmpy.DoesNotFit, match=needs.format(mib + 1, 0)):
            vmmpy.Machine(image(ram + 1), ram=f"{mib}M")  # RAM + 1 bytes: the whole buffer, the stream's end
        with pytest.raises(
            vmmpy.DoesNotFit, match=rf"Image\.gz: decompressed kernel is larger than guest RAM \({mib} MiB\)$"
        ):
            vmmpy.Machine(image(ram + 2), ram=f"{mib}M")


def _host_memory_gib() -> float:
    """RAM + swap (/proc/meminfo), in GiB; 0 if unknown."""
    try:
        with open("/proc/meminfo") as f:
            kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)}
        return (kib.get("MemTotal", 0) + kib.get("SwapTotal", 0)) / (1 << 20)
    except OSError:
        return 0.0


@pytest.mark.skipif(
    bool(os.environ.get("VMMPY_EXPECT_SANITIZED")), reason="a 4 GiB buffer: ASan writes 512 MiB of shadow for it"
)
@pytest.mark.skipif(_host_memory_gib() < 8, reason="a 4 GiB buffer: the kernel's overcommit heuristic needs RAM + swap")
def test_a_gzip_kernel_over_zlibs_32_bit_counts_is_given_to_zlib_in_pieces():
    """zlib counts its output room in 32 bits (avail_out); gunzip offers at most UINT32_MAX at a time. A gzip
    kernel of 1 GiB + 1 bytes in memory (a small stream, then zeros inflate never reads) in 4 GiB + 2 MiB of RAM:
    the first output buffer (4 times the input, at most RAM + 1) is 4 GiB + 4 bytes, which cut to 32 bits would
    be 4 bytes, and the 4 GiB after them 0: the loop would spin. vmm_load_kernel_mem on an anonymous mapping: only
    its first page is touched, and of the decompression buffer only the output (the address space it reserves,
    ~10 GiB with the VM's, stays under the suite's 12 GiB cap)."""
    import mmap
    import threading

    from vmmpy._ffi import ffi, lib

    size = (1 << 30) + 1
    img = make_image(code(B_SELF) + b"END!")
    gz = gzip.compress(img)
    buf = mmap.mmap(-1, size)
    buf[: len(gz)] = gz
    cfg = ffi.new("struct vmm_config *", {"size": ffi.sizeof("struct vmm_config"), "ram_size": (4 << 30) + 2 * MIB})
    out = ffi.new("vmm_vm **")
    err = ffi.new("char[256]")
    assert lib.vmm_create(cfg, out, err, 256) == 0, ffi.string(err)
    vm, data, rc = out[0], ffi.from_buffer(buf), []
    t = threading.Thread(target=lambda: rc.append(lib.vmm_load_kernel_mem(vm, data, size, b"big.gz", ffi.NULL)))
    t.daemon = True
    t.start()
    t.join(30)
    assert not t.is_alive(), "the decompression loop spins"  # (the VM is left to the stuck thread)
    try:
        assert rc == [0], ffi.string(lib.vmm_last_error(vm)).decode()
        got = ffi.new("uint8_t[8]")
        assert lib.vmm_mem_read(vm, RAM_BASE + len(img) - 8, got, 8) == 0
        assert bytes(got) == img[-8:]
    finally:
        lib.vmm_destroy(vm)


@pytest.mark.parametrize("elf", [True, False], ids=["elf", "not-elf"])
def test_no_kernel_file_over_4_gib_is_read(tmp_path, elf):
    """The loader reads at most 4 GiB: an ELF kernel may be larger than guest RAM (debug sections) up to that
    limit, and a kernel of another format in more than 4 GiB of RAM is held to it too. A sparse file of
    4 GiB + 1 bytes (no disk) is refused from its size, naming the limit, before a byte is read."""
    k = tmp_path / "k"
    with open(k, "wb") as f:
        f.write(b"\x7fELF" if elf else b"\0" * 4)
        f.truncate((4 << 30) + 1)
    ram = "256M" if elf else f"{4096 + 2}M"
    with pytest.raises(
        vmmpy.DoesNotFit, match=rf"k: kernel \({(4 << 30) + 1} bytes\) is larger than the loader's limit \(4096 MiB\)$"
    ):
        vmmpy.Machine(str(k), ram=ram)
