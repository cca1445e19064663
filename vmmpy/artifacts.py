"""Failure artifacts: what every Machine made during a test leaves behind when the test fails.

The pytest plugin opens a :class:`TestArtifacts` for each test (``begin()``) and closes it at the end
(``end()``). While one is open, every Machine created (by the fixture or directly) gets a
:class:`MachineRecord` (``m._record``) that

- tees everything ``Serial`` pulls from libvmm to ``serial.log`` as it arrives (the whole log, up to
  ``SERIAL_LOG_CAP`` bytes, however small ``Machine(serial_buffer=)`` is),
- logs the input sent from Python (keyboard, tablet, serial and virtio-console writes) with timestamps,
- keeps the Machine's configuration, to write the command line that reproduces the run,
- remembers the frames held with ``m.screen.hold(n)``.

``TestArtifacts.collect()`` writes the rest: ``frame-last.png`` and ``frame-NNNNNN.png`` for each held frame
(machines with a GPU), ``events.jsonl``, ``result.json`` (run result, stats, screen, configuration) and
``reproduce.sh``, into ``<dir>/<index>-<machine name>/``. A machine closed before the collection is
written at close (``MachineRecord.on_close``, while its VM still exists), so the with-block machines of a
test are covered too and a test that makes many machines (a soak) holds none of their artifacts in memory.

This module imports nothing heavy (no C extension, no Pillow) at import time: the plugin loads it in every
pytest run. Records hold their Machine by weak reference, and ``end()`` detaches them: nothing of a test is
kept once it is over.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmmpy.machine import Machine

SERIAL_LOG_CAP = 256 << 20  # bytes of serial.log per machine; then one note and no more
MAX_EVENTS = 100_000  # input calls logged per machine (then counted only)
TRUNCATED_NOTE = "\n[vmmpy: serial.log truncated here: {cap} bytes written, the rest of the output was not kept]\n"

_lock = threading.Lock()
_current: TestArtifacts | None = None
_depth = threading.local()  # nesting of recorded input calls: only the outermost is logged


def safe_name(text: str, limit: int = 120) -> str:
    """A file name from a test node id or machine name; lossy or long names get a hash of the original."""
    plain = text.replace("::", "__").replace("/", "_")  # tests/test_x.py::test_y -> tests_test_x.py__test_y
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", plain).strip("._") or "test"
    if safe != plain or len(safe) > limit:  # [params] and the like: a hash keeps distinct ids apart
        digest = hashlib.sha1(text.encode(errors="surrogateescape")).hexdigest()[:8]
        safe = f"{safe[:limit]}-{digest}"
    return safe


# ---- the per-test registry ------------------------------------------------------------------------------


class TestArtifacts:
    """The artifacts of one test: a record per Machine created while it runs, under `dir`."""

    __test__ = False  # not a pytest test class

    def __init__(self, dir: str | os.PathLike, nodeid: str = ""):
        self.dir = Path(dir)
        self.nodeid = nodeid
        self.records: list[MachineRecord] = []
        self.collected = False
        self._lock = threading.Lock()
        self._previous: TestArtifacts | None = None

    def machine_created(self, machine: Machine, config: dict) -> MachineRecord:
        with self._lock:
            index = len(self.records)
            rec = MachineRecord(machine, config, self.dir / safe_name(f"{index}-{machine.name}"), index, self.nodeid)
            self.records.append(rec)
        return rec

    def collect(self) -> list[str]:
        """Write every machine's artifacts (from the live machine; a closed one wrote its own at close);
        returns one summary line per machine. Never raises: a problem is written into result.json."""
        self.collected = True
        with self._lock:
            records = list(self.records)
        return [rec.collect() for rec in records]

    def detach(self) -> None:
        """Stop recording: close the serial logs and unhook the machines (they may outlive the test)."""
        with self._lock:
            records, self.records = self.records, []
        for rec in records:
            rec.detach()


def begin(dir: str | os.PathLike, nodeid: str = "") -> TestArtifacts:
    """Start recording the Machines created from now on, under `dir` (emptied first)."""
    global _current
    ta = TestArtifacts(dir, nodeid)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(ta.dir)
    with _lock:
        ta._previous, _current = _current, ta  # nested pytest runs (pytester) stack
    return ta


def end(ta: TestArtifacts, keep: bool) -> None:
    """Stop recording `ta`'s machines; remove its directory unless `keep`."""
    global _current
    with _lock:
        if _current is ta:
            _current = ta._previous
    ta.detach()
    if not keep:
        shutil.rmtree(ta.dir, ignore_errors=True)


def machine_created(machine: Machine, config: dict) -> MachineRecord | None:
    """Called by Machine.__init__: the machine's record if a test is recording, else None."""
    ta = _current
    return ta.machine_created(machine, config) if ta is not None else None


# ---- one machine ----------------------------------------------------------------------------------------


def recorded(what: str):
    """Decorator for the input methods (Keyboard.type, Serial.write, ...): log the outermost call on the
    machine's record with its arguments. `self._m` is the Machine; a `what` starting with "." is prefixed
    with the class name in lower case (".event" -> "keyboard.event")."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(self, *args, **kwargs):
            __tracebackhide__ = True
            rec = self._m._record
            depth = getattr(_depth, "n", 0)
            if rec is None or depth:
                return fn(self, *args, **kwargs)
            name = type(self).__name__.lower() + what if what.startswith(".") else what
            _depth.n = depth + 1
            try:
                out = fn(self, *args, **kwargs)
            except BaseException as e:
                rec.input_sent(name, args, kwargs, error=f"{type(e).__name__}: {e}")
                raise
            finally:
                _depth.n = depth
            rec.input_sent(name, args, kwargs)
            return out

        return call

    return wrap


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return {"bytes_hex": v.hex()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return repr(v)


class MachineRecord:
    """What one Machine leaves behind; see the module's docstring."""

    def __init__(self, machine: Machine, config: dict, dir: Path, index: int, nodeid: str = ""):
        self._machine = weakref.ref(machine)
        self.name = machine.name
        self.index = index
        self.nodeid = nodeid
        self.dir = dir
        self.config = dict(config)
        self.backend = getattr(machine, "backend", None)
        self.created = time.time()
        self._t0 = time.monotonic()
        self.held: list[int] = []
        self.events: list[dict] = []
        self.events_dropped = 0
        self.serial_bytes = 0
        self.serial_truncated = False
        self.errors: list[str] = []
        self.summary: str | None = None  # the one-line summary, once the artifacts are written
        self.written = False
        self._lock = threading.Lock()
        self._serial = None
        try:
            dir.mkdir(parents=True, exist_ok=True)
            self._serial = open(dir / "serial.log", "wb")  # noqa: SIM115 (closed by detach)
        except OSError as e:
            self.errors.append(f"serial.log: {e}")

    # -- while the test runs -----------------------------------------------------------------------------
    def serial_data(self, data: bytes) -> None:
        """Everything Serial pulls from libvmm, in order (called with Serial's pull lock held)."""
        with self._lock:
            f = self._serial
            if f is None or self.serial_truncated:
                return
            room = SERIAL_LOG_CAP - self.serial_bytes
            try:
                f.write(data[:room])
                self.serial_bytes += min(len(data), room)
                if len(data) > room:
                    self.serial_truncated = True
                    f.write(TRUNCATED_NOTE.format(cap=SERIAL_LOG_CAP).encode())
            except (OSError, ValueError) as e:  # disk full, closed: stop teeing, never break the machine
                self.errors.append(f"serial.log: {e}")
                self._serial = None
                with contextlib.suppress(Exception):
                    f.close()

    def input_sent(self, what: str, args: tuple, kwargs: dict, error: str | None = None) -> None:
        entry = {
            "t": round(time.monotonic() - self._t0, 6),  # seconds since the machine was created
            "time": time.time(),
            "call": what,
            "args": _jsonable(list(args)),
        }
        if kwargs:
            entry["kwargs"] = _jsonable(kwargs)
        if error:
            entry["error"] = error
        with self._lock:
            if len(self.events) < MAX_EVENTS:
                self.events.append(entry)
            else:
                self.events_dropped += 1

    def frame_held(self, n: int) -> None:
        with self._lock:
            if n not in self.held:
                self.held.append(n)

    def configured(self, **changes: Any) -> None:
        """A configuration call after creation (load_kernel, set_cmdline, add_share, ...)."""
        with self._lock:
            for k, v in changes.items():
                if k == "share":
                    self.config["share"] = list(self.config.get("share") or []) + [v]
                else:
                    self.config[k] = v

    def on_close(self, m: Machine) -> None:
        """Called by Machine.close() before it frees the VM: write the artifacts now, from the live VM
        (unless already written), and keep nothing but the summary in memory; then close serial.log (a test
        may make many machines: no descriptor or frame is held past a machine's close)."""
        try:
            if not self.written:
                with contextlib.suppress(Exception):
                    if m.running:
                        m.stop()  # close() stops it anyway: the result and the last frame are then final
                self._collect()
                with self._lock:
                    self.events = []
        finally:
            self._close_serial()

    def detach(self) -> None:
        m = self._machine()
        if m is not None and getattr(m, "_record", None) is self:
            m._record = None
        self._close_serial()

    def _close_serial(self) -> None:
        with self._lock:
            f, self._serial = self._serial, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()

    # -- collection ----------------------------------------------------------------------------------------
    def _drain(self, m: Machine) -> None:
        try:
            m.serial._drain()
        except Exception as e:
            self.errors.append(f"serial: {type(e).__name__}: {e}")
        with self._lock, contextlib.suppress(Exception):
            if self._serial is not None:
                self._serial.flush()

    def _state(self, m: Machine, out: dict) -> None:
        """Result, stats, screen: what the live VM can tell (each part failing alone)."""
        res = m.result
        out["running"] = m.running
        out["result"] = (
            None
            if res is None
            else {
                "reason": res.reason.name,
                "status": res.exit_status,
                "pc": res.pc,
                "message": res.message,
                "ok": res.ok,
            }
        )
        try:
            out["stats"] = m.stats()
        except Exception as e:
            out["stats"] = None
            self.errors.append(f"stats: {type(e).__name__}: {e}")
        out["gpu"] = bool(self.config.get("gpu"))
        if out["gpu"]:
            try:
                i = m.screen.info()
                out["screen"] = {"width": i.width, "height": i.height, "frames": i.frames}
            except Exception as e:
                out["screen"] = None
                self.errors.append(f"screen: {type(e).__name__}: {e}")
        with contextlib.suppress(Exception):
            out["serial_window_dropped"] = m.serial.dropped

    def collect(self) -> str:
        """Write this machine's artifacts (once); returns a one-line summary."""
        if self.written and self.summary is not None:
            return self.summary
        try:
            return self._collect()
        except Exception as e:  # never hide the test's own failure behind ours
            return f"machine {self.index} ({self.name}): artifacts failed: {type(e).__name__}: {e}"

    def _collect(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        m = self._machine()
        live = m is not None and not m._closing  # _closing: set by close() after on_close, for good
        state: dict = {}
        images: dict = {}
        if live:
            self._drain(m)
            self._state(m, state)
            for n in [0, *self.held] if state.get("gpu") else []:
                try:
                    images[n] = m.screen.capture(frame=n)
                except Exception as e:
                    images[n] = f"{type(e).__name__}: {e}"
        else:
            state = {"result": None, "stats": None, "note": "the machine was gone before the artifacts were collected"}
        frames: dict[str, str] = {}
        for n, img in images.items():
            name = "frame-last.png" if n == 0 else f"frame-{n:06d}.png"
            if isinstance(img, str):
                frames[name] = f"not captured: {img}"
                continue
            try:
                img.save(self.dir / name, format="PNG", compress_level=1)  # fast: it runs at every close
                frames[name] = "ok" if n else "the latest image"
            except Exception as e:
                frames[name] = f"not saved: {type(e).__name__}: {e}"
        with self._lock:
            events = list(self.events)
            if self._serial is not None:
                with contextlib.suppress(Exception):
                    self._serial.flush()
        with open(self.dir / "events.jsonl", "w") as f:
            for e in events:
                f.write(json.dumps(e) + "\n")
            if self.events_dropped:
                f.write(json.dumps({"note": f"{self.events_dropped} more input calls not logged"}) + "\n")
        argv, notes = command_line(self.config, self.backend)
        (self.dir / "reproduce.sh").write_text(reproduce_script(argv, notes, self))
        os.chmod(self.dir / "reproduce.sh", 0o755)
        result = {
            "test": self.nodeid,
            "machine": self.name,
            "index": self.index,
            "backend": self.backend,
            "created": self.created,
            **state,
            "held_frames": list(self.held),
            "frames": frames,
            "serial_log": {"bytes": self.serial_bytes, "truncated": self.serial_truncated, "cap": SERIAL_LOG_CAP},
            "input_calls": len(events) + self.events_dropped,
            "config": _jsonable(self.config),
            "command": argv,
            "command_notes": notes,
            "errors": list(self.errors),
        }
        (self.dir / "result.json").write_text(json.dumps(result, indent=2, default=repr) + "\n")
        self.written = True
        res = state.get("result")
        how = "running" if state.get("running") else res["reason"] if res else "not run"
        shots = sum(1 for v in frames.values() if not v.startswith("not "))
        self.summary = (
            f"machine {self.index} ({self.name}, {how}): {self.dir}  "
            f"[serial.log {self.serial_bytes} B, {shots} frame(s), {len(events)} input call(s)]"
        )
        return self.summary


# ---- reproducing a run from the shell ---------------------------------------------------------------------


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"


def command_line(config: dict, backend: str | None) -> tuple[list[str], list[str]]:
    """`python -m vmmpy run ...` for a Machine's configuration (Machine keywords, as recorded at creation and
    by the configuration calls after it, with ram, gpu_max_mem and serial_buffer in bytes); the second list
    says what the command line cannot express."""
    notes: list[str] = []
    kernel = config.get("kernel")
    argv = [sys.executable, "-m", "vmmpy", "run", os.path.abspath(os.fspath(kernel)) if kernel else "KERNEL"]
    if not kernel:
        notes.append("the machine loaded no kernel")

    def opt(flag: str, value: Any) -> None:
        argv.extend([flag, str(value)])

    cpus = config.get("cpus", 1)
    if cpus != 1:
        opt("--cpus", cpus)
    opt("--ram", _size(int(config.get("ram", 256 << 20))))
    if backend:
        opt("--backend", backend)
    if config.get("cpu_model"):
        opt("--cpu-model", config["cpu_model"])
    if config.get("kernel_format", "auto") != "auto":
        opt("--format", config["kernel_format"])
    for k in ("load_addr", "entry"):
        if config.get(k) is not None:
            opt("--" + k.replace("_", "-"), hex(config[k]))
    if config.get("initrd") is not None:
        opt("--initrd", os.path.abspath(os.fspath(config["initrd"])))
    if config.get("cmdline") is not None:
        opt("--cmdline", config["cmdline"])
    if config.get("timeout") is not None:
        opt("--timeout", f"{config['timeout']:g}")
    if config.get("deterministic"):
        argv.append("--deterministic")
    if config.get("transport", "mmio") != "mmio":
        opt("--transport", config["transport"])
    if config.get("vcpu_threads") not in (None, "auto"):
        opt("--vcpu-threads", config["vcpu_threads"])
    if config.get("gpu"):
        w, h = config.get("gpu_size") or (1280, 800)
        argv.append("--gpu")
        opt("--gpu-size", f"{w}x{h}")
        if config.get("gpu_max_mem", 256 << 20) != 256 << 20:
            notes.append(f"gpu_max_mem={_size(config['gpu_max_mem'])} (the command line has the default, 256M)")
    if config.get("input"):
        argv.append("--input")
    disks = config.get("disk")
    for d in [] if disks is None else disks if isinstance(disks, list) else [disks]:
        path, mode = (d, "rw") if isinstance(d, (str, os.PathLike)) else d
        opt("--disk", os.path.abspath(os.fspath(path)) + (":ro" if mode == "ro" else ""))
    if config.get("rng"):
        argv.append("--rng")
    if config.get("virtio_console"):
        argv.append("--virtio-console")
    shares = config.get("share")
    for sh in [] if shares is None else shares if isinstance(shares, list) else [shares]:
        sh = (sh,) if isinstance(sh, (str, os.PathLike)) else tuple(sh)
        d, tag, ro = sh + ("share", False)[len(sh) - 1 :]
        opt("--share", f"{os.path.abspath(os.fspath(d))}{':ro' if ro else ''}:tag={tag}")
    nets = config.get("net")
    rules = config.get("hostfwd")
    rules = [rules] if isinstance(rules, str) else list(rules or [])
    for n in [] if nets is None else nets if isinstance(nets, list) else [nets]:
        if n == "user":
            opt("--net", ",".join(["user", *(f"hostfwd={r}" for r in rules)]))
            rules = []  # the first user card has the forwards
        elif isinstance(n, str):
            opt("--net", n)
        else:
            notes.append("net=vmmpy.Network() (an in-process switch: no command-line option)")
    if isinstance(config.get("net_capture"), (str, os.PathLike)):
        opt("--net-dump", os.path.abspath(os.fspath(config["net_capture"])))
    if config.get("virtio_test_devices"):
        notes.append(f"virtio_test_devices={config['virtio_test_devices']} (test devices: no command-line option)")
    if config.get("serial_buffer") not in (None, 16 << 20):
        notes.append(f"serial_buffer={_size(config['serial_buffer'])} (Python's window; the command line streams all)")
    argv.append("--headless")
    return argv, notes


def reproduce_script(argv: list[str], notes: list[str], rec: MachineRecord) -> str:
    import vmmpy

    src = os.path.dirname(os.path.dirname(os.path.abspath(vmmpy.__file__)))
    lines = [
        "#!/bin/sh",
        f"# the run of machine {rec.index} ({rec.name}) of {rec.nodeid or 'a test'}, from the shell;",
        "# extra arguments are added at the end (e.g. --timeout 10). The input the test sent is in events.jsonl",
        "# (not replayed here); its serial output in serial.log.",
    ]
    lines += [f"# not on the command line: {n}" for n in notes]
    if os.path.basename(src) not in ("site-packages", "dist-packages"):
        lines.append(f'export PYTHONPATH={shlex.quote(src)}"${{PYTHONPATH:+:$PYTHONPATH}}"  # the vmmpy that ran')
    lines.append(f'exec {shlex.join(argv)} "$@"')
    return "\n".join(lines) + "\n"
