"""Which tests cover which file, for tools/mutate.py: the files that decide guest-visible behaviour, each with
the tests (pytest arguments, run from the repository's root) that should notice any change to it. Keep each
selection to seconds: a mutant costs one run of it. A file's selection must pass on the unmutated build."""

# the virtio core's, the queues' and the transport's snapshot save/load (a second)
VIRTIO_SNAP = [
    "tests/test_snapshot_devices.py::test_core_and_transport_state_survive_and_queues_continue",
    "tests/test_snapshot_devices.py::test_corrupted_device_sections_fail_cleanly",
    "tests/test_snapshot_devices.py::test_a_bad_queue_size_is_refused_naming_the_device",
    "tests/test_snapshot_devices.py::test_a_device_restored_on_another_slot_is_refused_naming_both",
    "tests/test_snapshot_devices.py::test_features_the_device_refuses_are_refused_at_restore",
    "tests/test_snapshot_devices.py::test_a_virtio_core_state_the_registers_cannot_reach_is_refused",
    "tests/test_snapshot_devices.py::test_a_status_bit_cleared_without_a_reset_stays_set_and_the_vm_still_snapshots",
]

# the register-level tests kill most GIC mutants in ~4 s; the guests on vmmpy (SGIs, SPIs, priorities, the
# timer PPI, SMP) stay; the QEMU comparisons (not our code), the idle/benchmark/gpu guests (seconds each of
# real-time waiting, nothing a smaller guest does not cover) and the 8-CPU and threaded variants go
GIC = [
    "tests/test_gic.py",
    "tests/test_gic_edges.py",
    "tests/test_gic_routing.py",
    "tests/test_gic_reeval.py",
    "tests/test_gic_its.py",
    "tests/test_irq_guests.py",
    "-k",
    "not qemu and not smp8 and not soft-threaded and not idle and not bench and not gpu_demo",
]

# LPIs and the ITS: their register-level tests (~2 s) and the its guest on the soft backend
GIC_ITS = [
    "tests/test_gic_its.py",
    "tests/test_gic_its_edges.py",
    "tests/test_gic_its_regs.py",
    "tests/test_gic_lpi_edges.py",
    "tests/test_irq_guests.py",
    "-k",
    "not qemu and not soft-threaded and (its or lpi)",
]

LOAD_MEM = "tests/test_api.py::test_load_kernel_mem_boots_an_image_from_memory"

# the run loop and its waits (run.c, run_wait.c)
RUN_LOOP = [
    "tests/test_run.py",
    "tests/test_deterministic.py",
    "tests/test_timer.py",
    # the park point (a deterministic pause at a frame) and vmm_stop_at, 2-3 s
    "tests/test_events.py::test_deterministic_pause_at_frame_then_inject_is_reproducible",
    "tests/test_events.py::test_pause_wait_waits_its_timeout_for_a_frame_that_does_not_come",
    "tests/test_events.py::test_pause_wait_with_a_timeout_beyond_a_year_still_waits",
    "tests/test_events.py::test_deterministic_quit_stops_at_the_cursor_exactly",
    "tests/test_api.py::test_vmm_run_on_a_running_vm_is_ebusy_and_leaves_it_usable",
    # the threaded loop (a vCPU thread's sleep until its deadline, its signal mask) and the yield to vCPU 0
    "tests/test_soft_threaded.py",
    "tests/test_run_vcpus.py",
    # the waits' counters: sleeps, spins to a near deadline and halt polls, on both loops (5 s)
    "tests/test_run_waits.py",
    # the clock thread: the timeout against a timer deadline, near deadlines polled for, per-vCPU kicks (10 s)
    "tests/test_run_clock.py",
    # an idle wait without a deadline that serial input ends, again and again (1 s each)
    "tests/test_irq_guests.py::test_uart_rx_interrupt_echo[soft]",
    "tests/test_irq_guests.py::test_uart_rx_interrupt_echo[soft-threaded]",
    # a debugger's hold, frozen vCPUs and reverse execution in run_one and the deterministic loop (13 s)
    "tests/test_gdb.py",
    "tests/test_gdb_reverse.py",
    # run_one's and check_end's outcomes: each ending's status, vm->current, slices, count_on (5 s)
    "tests/test_run_one.py",
    # the deterministic clock at a run's cut: one vCPU's clock is its instruction count (1 s)
    "tests/test_run_rounds.py",
    # vmm_run's, vmm_run_pending's and vmm_request_stop's C contract: arguments, the result's size, endings (1 s)
    "tests/test_run_api.py",
    # run_one's host errors: a CPU_ON's failed reset and a failed engine, on the three loops (Unicorn shim, 2 s)
    "tests/test_run_host_errors.py",
]

TARGETS: dict[str, list[str]] = {
    # the interrupt controller: the distributor, redistributors, CPU interface and the model's core
    "csrc/arm/gic.c": GIC,
    "csrc/arm/gic_dist.c": GIC,
    "csrc/arm/gic_redist.c": GIC,
    "csrc/arm/gic_cpuif.c": GIC,
    "csrc/arm/gic_its.c": GIC_ITS,
    "csrc/arm/gic_lpi.c": GIC_ITS,
    # the generic timers, PSCI, the deterministic clock and the run loop
    "csrc/arm/timer.c": [
        "tests/test_timer.py",
        "tests/test_deterministic.py",
        "tests/test_guests.py",
        # a debugger's hold stops the clock (clock_held, read by vmm__clock_ns)
        "tests/test_gdb.py::test_gdb_guest_clock_stands_still_while_held",
        # the PMU on the VM's clock (hvf): its overflow is one of the deadlines update_vcpu computes
        "tests/test_irq_guests.py::test_guest_on_vmmpy[pmu-hvf]",
        "tests/test_irq_guests.py::test_guest_on_vmmpy[pmu-max-hvf]",
        "-k",
        "timer or not soft-threaded",
    ],
    "csrc/arm/psci.c": [
        "tests/test_guests.py",
        "tests/test_irq_guests.py",
        "tests/test_run.py::test_poweroff_and_serial",  # counts the HVC exits PSCI's dispatcher counts
        "-k",
        "not qemu and (psci or smp and not smp8 or poweroff_and_serial)",  # QEMU runs its own PSCI
    ],
    "csrc/core/run.c": RUN_LOOP,
    "csrc/core/run_wait.c": RUN_LOOP,  # the loop's waits (idle sleep, halt polling)
    # virtio: the split virtqueues, the device core and the MMIO transport
    "csrc/dev/virtq.c": [
        "tests/test_virtio_mmio.py",
        "tests/test_virtq_edges.py",
        "tests/test_virtio_blk.py",
        "tests/test_virtio_net.py",
        *VIRTIO_SNAP,
    ],
    "csrc/dev/virtio.c": [
        "tests/test_virtio_mmio.py",
        "tests/test_virtio_rng.py",
        "tests/test_pci.py::test_common_config_queue_registers",  # the feature words virtio-pci reads
        "tests/test_virtio_core_edges.py",
        *VIRTIO_SNAP,
    ],
    "csrc/dev/virtio_mmio.c": ["tests/test_virtio_mmio.py", "tests/test_virtq_edges.py", *VIRTIO_SNAP],
    # PCI: the host bridge, config space, MSI-X and the virtio-pci transport (~5 s)
    "csrc/dev/pci_host.c": [
        "tests/test_pci.py",
        "tests/test_pci_regs.py",
        "tests/test_pci_edges.py",
        "tests/test_pci_host_edges.py",
    ],
    "csrc/dev/pci_cfg.c": [
        "tests/test_pci.py",
        "tests/test_pci_regs.py",
        "tests/test_pci_edges.py",
        "tests/test_pci_cfg_edges.py",
    ],
    "csrc/dev/pci_msix.c": ["tests/test_pci.py", "tests/test_pci_regs.py", "tests/test_pci_edges.py"],
    "csrc/dev/virtio_pci.c": ["tests/test_pci.py", "tests/test_pci_regs.py", "tests/test_pci_edges.py"],
    # networking: the NIC, the switch and the capture files (tier 1: two VMs driven over virtio-mmio, slirp, tap)
    "csrc/dev/virtio_net.c": ["tests/test_virtio_net.py", "tests/test_net_host.py", "tests/test_virtio_net_edges.py"],
    "csrc/net/net_switch.c": ["tests/test_virtio_net.py", "tests/test_net_host.py", "tests/test_net_switch_edges.py"],
    "csrc/net/pcap.c": ["tests/test_net_host.py", "-k", "capture"],
    # 9p: path confinement and fids
    "csrc/dev/p9_fid.c": [
        "tests/test_p9.py",
        "tests/test_p9_fids.py",
        # a fid restored dead from a snapshot, clunked, and its slot taken by a new fid (0.3 s)
        "tests/test_snapshot_devices.py::test_9p_fids_are_rewalked_and_a_vanished_path_gives_estale",
    ],
    # the loaders (and the C API's in-memory load, whose return value Python does not see)
    "csrc/loader/elf.c": ["tests/test_loader.py", LOAD_MEM],
    "csrc/loader/image.c": ["tests/test_loader.py", LOAD_MEM],
    "csrc/loader/loader.c": ["tests/test_loader.py", "tests/test_fdt.py", LOAD_MEM],
    # the UART
    "csrc/dev/pl011.c": ["tests/test_pl011.py", "tests/test_fdt.py"],
}
