"""Screen: the virtio-gpu display of a Machine (scanout 0) as frames you can wait for and capture."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmmpy import _files, errors
from vmmpy._ffi import ffi, lib

if TYPE_CHECKING:
    from PIL import Image

    from vmmpy.machine import Machine
    from vmmpy.needle import NeedleLike, NeedleMatch


_pillow_tuned = False


def _reuse_pillow_blocks() -> None:
    """Let Pillow keep a few freed image blocks for reuse: a capture then costs a copy, not page faults."""
    global _pillow_tuned
    if not _pillow_tuned:
        _pillow_tuned = True
        from PIL import Image

        if Image.core.get_blocks_max() < 8:
            Image.core.set_blocks_max(8)


@dataclass(frozen=True)
class ScreenInfo:
    width: int  # of the scanout; 0 while the guest shows nothing
    height: int
    frames: int  # frames flushed so far
    converted: int = 0  # pixels converted from the guest's format so far (a frame nobody looks at costs none)


class Screen:
    """What the guest shows on its virtio-gpu.

    A *frame* is a RESOURCE_FLUSH of (part of) the resource on scanout 0; frames are numbered from 1.
    ``m.screen`` exists on every Machine; on one created without ``gpu=True`` every call raises
    :class:`vmmpy.NotSupported`.

    >>> m = Machine("kernel.elf", gpu=True)
    >>> m.screen.hold(3)                 # keep frame 3 exactly, however late we capture it
    >>> m.screen.wait_frame(3)           # starts the machine if needed
    >>> m.screen.capture(frame=3).save("frame3.png")
    """

    def __init__(self, machine: Machine):
        self._m = machine
        self._buf: bytearray | None = None
        self._pause_frame = 0  # the pause armed by pause_at()
        self._captured_frame = 0  # the number of the frame the last capture copied

    def info(self) -> ScreenInfo:
        si = ffi.new("struct vmm_screen_info *")
        si.size = ffi.sizeof("struct vmm_screen_info")
        self._m._checked(lib.vmm_screen_info, si)
        return ScreenInfo(si.width, si.height, si.frames, si.converted)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the scanout, (0, 0) while the guest has set none."""
        i = self.info()
        return i.width, i.height

    @property
    def frames(self) -> int:
        """Frames flushed so far."""
        return self.info().frames

    def wait_frame(self, n: int, timeout: float = 10.0, pause: bool = False, resume: bool = True) -> int:
        """Wait until at least `n` frames have been flushed; returns the frame count.

        Starts the machine if it has never run (as ``serial.expect`` does). Raises ScreenTimeout, or
        ScreenEOF if the VM stops first.

        ``pause=True`` (deterministic mode): the run stops at the end of the round that flushed frame
        `n` and stays parked there (``m.paused``), so that input sent now is due at an exact virtual
        time (``m.input_time_ns``) and runs are reproducible. The next ``wait_frame``,
        ``serial.expect``, ``m.wait()``, ``m.stop()`` or ``m.resume()`` lets it go on. Call it while
        the VM stands still (before it starts, or parked); armed while it runs freely, the pause
        lands wherever the loop is once frame `n` exists.

        ``resume=False``: only watch: neither resume a parked VM nor start one (a watcher beside a
        deterministic run, e.g. the window, must not change where it parks).
        """
        __tracebackhide__ = True  # a failing wait points at the test's line
        if pause:
            return self._wait_frame_paused(n, timeout)
        if resume and self._m.paused:
            self._m.resume()
        if self.frames >= n:
            return self.frames
        if resume and not self._m.running and self._m.result is None:
            self._m.start()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            # short slices keep Ctrl-C responsive; cffi releases the GIL while C waits
            ns = max(0, int(min(left, 0.5) * 1e9))
            rc = self._m._checked(lib.vmm_screen_wait_frame, n, ns, allow=(lib.VMM_EEOF,))
            if rc == 0:
                return self.frames
            if rc == lib.VMM_EEOF:
                res = self._final_result()
                why = f"the VM ended ({res.reason.name})" if res else "the VM is not running"
                raise errors.ScreenEOF(f"{why} after {self.frames} frames, before frame {n}", rc, "VMM_EEOF")
            if left <= 0:
                raise errors.ScreenTimeout(f"frame {n} did not come within {timeout:g} s ({self.frames} frames so far)")

    def _wait_frame_paused(self, n: int, timeout: float) -> int:
        __tracebackhide__ = True
        if not self._m.deterministic:
            raise errors.StateError(
                "wait_frame(pause=True) needs a deterministic machine", lib.VMM_ESTATE, "VMM_ESTATE"
            )
        if self._m.result is not None and not self._m.running and self.frames >= n:
            return self.frames  # the run is over: nothing to pause
        self.pause_at(n)
        if self._m.paused:
            self._m.resume()
        elif not self._m.running:
            self._m.start()
        if not self.wait_paused(timeout):
            self.pause_at(0)
            raise errors.ScreenTimeout(f"frame {n} did not come within {timeout:g} s ({self.frames} frames so far)")
        return self.frames

    def pause_at(self, n: int) -> None:
        """Deterministic mode: arm a pause at frame `n` (0 disarms); the lower half of ``wait_frame(pause=True)``.

        The run loop parks at the end of the round that flushed frame `n` (``m.paused``); ``wait_paused()``
        waits for that. Arm it while the VM stands still for a host-independent park point."""
        self._pause_frame = n
        self._m._checked(lib.vmm_screen_pause_at, n)

    def wait_paused(self, timeout: float) -> bool:
        """Deterministic mode: wait up to `timeout` s until the run parks at the pause armed by ``pause_at()``.

        True once parked (``m.paused``); False on timeout (the pause stays armed: ``pause_at(0)`` disarms).
        Raises ScreenEOF, with the pause disarmed, if the VM ends first. It does not resume or start the VM.
        """
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            # short slices keep Ctrl-C responsive; cffi releases the GIL while C waits
            ns = max(0, int(min(left, 0.5) * 1e9))
            rc = self._m._checked(lib.vmm_screen_pause_wait, ns, allow=(lib.VMM_EEOF,))
            if rc == 0:
                self._m._parked = True
                return True
            if rc == lib.VMM_EEOF:
                n = self._pause_frame
                self.pause_at(0)
                res = self._final_result()
                why = f"the VM ended ({res.reason.name})" if res else "the VM is not running"
                raise errors.ScreenEOF(f"{why} after {self.frames} frames, before frame {n}", rc, "VMM_EEOF")
            if left <= 0:
                return False

    def hold(self, n: int) -> None:
        """Keep a copy of frame `n` when it is flushed (call before it happens; at most 64 pending)."""
        self._m._checked(lib.vmm_screen_hold, n)
        if (rec := self._m._record) is not None:  # failure artifacts save held frames
            rec.frame_held(n)

    def _capture(self, frame: int) -> tuple[int, int, memoryview]:
        w, h, fo = ffi.new("uint32_t *"), ffi.new("uint32_t *"), ffi.new("uint64_t *")
        size = 0
        if frame == 0:
            i = self.info()
            size = i.width * i.height * 4
        while True:  # the mode may change between sizing and copying: retry then
            # one buffer reused across captures: fresh 4 MB allocations cost more than the copy (page faults)
            if self._buf is None or len(self._buf) < size:
                self._buf = bytearray(size)
            buf = self._buf
            cbuf = ffi.from_buffer(buf) if size else ffi.NULL
            rc = self._m._checked(lib.vmm_screen_capture, frame, cbuf, size, w, h, fo, allow=(lib.VMM_ERANGE,))
            if rc == lib.VMM_ERANGE:
                size = w[0] * h[0] * 4
                continue
            self._captured_frame = fo[0]
            return w[0], h[0], memoryview(buf)[: w[0] * h[0] * 4]

    def capture_rgba(self, frame: int = 0) -> tuple[int, int, bytes]:
        """(width, height, RGBA bytes) of the latest image (frame=0) or of a held frame."""
        w, h, data = self._capture(frame)
        return w, h, bytes(data)

    def capture(self, frame: int = 0) -> Image.Image:
        """The latest image (frame=0) or a held frame, as a PIL image in mode "RGB"."""
        from PIL import Image

        _reuse_pillow_blocks()
        w, h, data = self._capture(frame)
        if not w or not h:
            raise errors.StateError(
                "the screen shows nothing: the guest has not set a scanout", lib.VMM_ESTATE, "VMM_ESTATE"
            )
        return Image.frombytes("RGB", (w, h), data, "raw", "RGBX")

    def save(self, path: str | os.PathLike, frame: int = 0, format: str | None = None) -> Image.Image:
        """Capture (see capture()) and save to `path` (format from the extension unless given); returns the image.

        The capture's errors are VmmErrors; the file's are OSErrors."""
        from PIL import Image

        image = self.capture(frame)
        if format is None:  # Pillow names it from the extension only for paths, not for open files
            ext = os.path.splitext(os.fspath(path))[1].lower()
            format = Image.registered_extensions().get(ext)
            if format is None:
                raise ValueError(f"unknown image file extension {ext!r} (pass format=, e.g. 'PNG')")
        with _files.open_output(path) as f:  # a regular file: never a FIFO's blocking open
            image.save(f, format=format)
        return image

    def wait_for(
        self,
        target: NeedleLike,
        timeout: float = 10.0,
        *,
        out_dir: str | os.PathLike | None = None,
        name: str | None = None,
    ) -> NeedleMatch:
        """Wait until the screen shows a frame that matches `target`; returns the match (a vmmpy.needle.NeedleMatch:
        ``frame``, ``score``, and for search areas ``position`` / ``center`` in screen pixels).

        `target`: a vmmpy.needle.Needle, a needle's path (``name.png`` with its areas in ``name.json``; a PNG
        without JSON is an exact golden of the whole screen) or a PIL image. The image on screen now is
        checked first, then each new frame as it is flushed (starting the machine if it has never run). In
        real-time mode a frame that is replaced before it is looked at is skipped (the newest image is
        checked); in deterministic mode the run parks at the end of each round that flushed a frame while it is
        checked (``wait_frame(pause=True)``), so every round's last image is seen, the result does not depend on
        the host's speed, and after a match the VM stays parked: input sent then (``m.tablet.click(*r.center)``)
        is due at an exact virtual time.

        Raises vmmpy.needle.NeedleMismatch (an AssertionError) when `timeout` s pass or the VM ends first: the
        message gives the closest frame, its score and each area's result, and that frame is saved as
        ``<name>.obtained.png`` with ``<name>.diff.png`` in `out_dir` (default: beside the needle's PNG, or
        the current directory) as vmmpy.golden does. `name` defaults to the needle's file name.
        """
        __tracebackhide__ = True
        from vmmpy import needle as nd

        needle = nd.as_needle(target)
        name = name or needle.name
        if out_dir is None:
            out_dir = os.path.dirname(needle.path) if needle.path else "."
            out_dir = out_dir or "."
        nd.remove_artifacts(out_dir, name)
        deadline = time.monotonic() + timeout
        det = self._m.deterministic
        closest: tuple[NeedleMatch, Image.Image] | None = None
        checked = 0  # the last frame number looked at
        ended = ""
        while True:
            if checked == 0 and not (det and self._m.running and not self._m.paused):
                i = self.info()  # the image shown now (a VM that stands still shows it for good)
                ready = i.frames > 0 and i.width > 0
            else:
                ready = False
            if not ready:
                if checked and self._m.result is not None and not self._m.running:
                    ended = self._ended()  # over: the image looked at was its last
                    break
                try:
                    left = max(0.0, deadline - time.monotonic())
                    self.wait_frame(checked + 1, timeout=left, pause=det)
                except errors.ScreenTimeout:
                    break
                except errors.ScreenEOF:
                    ended = self._ended()
                    if self.frames <= checked:
                        break
            image = self.capture()
            frame = self._captured_frame
            result = needle.match(image, frame=frame)
            if result.ok:
                return result
            if closest is None or result.score > closest[0].score:
                closest = (result, image)
            checked = max(frame, checked + 1)
            if ended or time.monotonic() >= deadline:
                break
        why = f"no frame matched before {ended}" if ended else f"no frame matched within {timeout:g} s"
        frames = self.frames
        if closest is None:
            raise nd.NeedleMismatch(f"needle {name!r} not found: {why} ({frames} frames, none shown to compare)")
        result, image = closest
        files = nd.save_artifacts(result, image, out_dir, name)
        lines = [
            f"needle {name!r} not found: {why} ({frames} frames);"
            f" closest: frame {result.frame}, score {result.score:.4f}",
            f"  {result.describe()}",
        ]
        if needle.path:
            lines.append(f"  needle:   {needle.path}")
        lines.append(f"  obtained: {files[0]} (frame {result.frame})")
        if len(files) > 1:
            lines.append(
                f"  diff:     {files[1]} (red: differs, orange: within threshold, blue: excluded, green: match"
                " areas, yellow: search regions, cyan: best template positions)"
            )
        raise nd.NeedleMismatch("\n".join(lines), result, files)

    def _ended(self) -> str:
        res = self._final_result()
        return f"the VM ended ({res.reason.name})" if res else "the VM stopped"

    def _final_result(self):
        return self._m._final_result()
