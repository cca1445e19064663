"""Tier 1: the README and docs/ stay true. The quick start's commands and snippets run; every `python -m vmmpy`
line parses with the CLI's own parser; every `vmmpy run` option is documented in docs/cli.md and every option
named there exists; the API names the docs use exist; every relative link points at a file (and heading)."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import vmmpy
from vmmpy.cli import build_parser

from .conftest import ROOT

README = Path(ROOT, "README.md")
DOCS = sorted(Path(ROOT, "docs").glob("*.md"))
PAGES = [README, *DOCS]

# Links to files this checkout may lack, with the reason. Nothing else may be missing.
ABSENT_ALLOWED: dict[str, str] = {}


def blocks(path: Path, lang: str) -> list[str]:
    """The fenced code blocks of `lang` in a Markdown file."""
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), re.S | re.M)


def quick_start() -> str:
    text = README.read_text()
    return text[text.index("## Quick start") : text.index("## Contents")]


def vmmpy_lines(path: Path) -> list[list[str]]:
    """Every `python -m vmmpy ...` command of the page's sh blocks, as argv after `python -m vmmpy`."""
    out = []
    for block in blocks(path, "sh"):
        for line in block.replace("\\\n", " ").splitlines():  # continuation lines joined
            line = line.replace('"$K"', "vmlinuz").replace('"$(python tools/fetch_debian.py)"', "vmlinuz")
            if line.startswith("python -m vmmpy "):
                out.append(shlex.split(line, comments=True)[3:])
    return out


def test_the_readme_keeps_the_two_commands_a_quick_start_and_contents():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    assert text.index("make demo") < text.index("## Quick start") < text.index("## Contents")
    for target in ("demo", "test", "test-fast"):  # they exist (make -n runs nothing)
        p = subprocess.run(["make", "-n", "-C", ROOT, target], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_vmmpy_command_line_parses(page):
    parser = build_parser()
    for argv in vmmpy_lines(page):
        args = parser.parse_args(argv)  # a bad option or value exits (SystemExit) and fails the test
        assert args.command in ("run", "restore", "sign-python")


def test_the_documented_command_lines_are_there():
    assert len(vmmpy_lines(README)) >= 4
    assert any("--initrd" in argv for argv in vmmpy_lines(Path(ROOT, "docs", "cli.md")))


def test_the_quick_start_commands_run(tmp_path):
    """The cheap, safe ones: hello.elf, and the GPU demo's capture (into tmp_path, not the tree)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ran = 0
    for argv in vmmpy_lines(README):
        if not os.path.exists(os.path.join(ROOT, argv[1])):
            continue  # vmlinuz, firmware.bin: the reader's own files (parsed above)
        if "--gdb-wait" in argv:
            continue  # waits for a debugger: tests/test_gdb.py::test_gdb_readme_commands runs it with gdb
        argv = [str(tmp_path / a) if a.endswith(".png") else a for a in argv]
        p = subprocess.run(
            [sys.executable, "-m", "vmmpy", *argv, "--headless"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, (argv, p.stderr)
        ran += 1
    assert ran >= 2 and (tmp_path / "frame.png").exists()


def test_the_quick_start_python_block_runs():
    (code,) = blocks(README, "python")[:1]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "Hello from vmmpy guest!" in p.stdout


def test_the_quick_start_pytest_block_passes(tmp_path):
    code = next(b for b in blocks(README, "python") if "def test_" in b)
    (tmp_path / "test_quick.py").write_text(code)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {
        **os.environ,
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    args = ["-p", "vmmpy.pytest_plugin", "-p", "no:cacheprovider", "-q", "-c", str(tmp_path / "pytest.ini")]
    p = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "--rootdir", str(tmp_path), str(tmp_path / "test_quick.py")],
        cwd=ROOT,  # the snippet's kernel path is relative to the source tree
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_block_compiles(page):
    for i, code in enumerate(blocks(page, "python")):
        compile(code, f"{page.name}[python block {i}]", "exec")


def _run_options() -> set[str]:
    parser = build_parser()
    run = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" run"))
    return {s for a in run._actions for s in a.option_strings}


def test_every_run_option_is_documented_and_every_documented_one_exists():
    text = Path(ROOT, "docs", "cli.md").read_text()
    options = _run_options()
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
    missing = sorted(o for o in options if o.startswith("--") and o != "--help" and o not in named)
    assert missing == [], "options of `vmmpy run` that docs/cli.md does not name"
    others = {"--version", "--shell"}  # `vmmpy --version`; tools/initramfs.py --shell (Debian example)
    assert sorted(named - options - others) == [], "options docs/cli.md names that `vmmpy run` does not have"


def test_the_plugin_options_the_docs_name_exist():
    from vmmpy import pytest_plugin

    src = inspect.getsource(pytest_plugin.pytest_addoption)
    for page in PAGES:
        for opt in set(re.findall(r"(--vmmpy-[a-z-]+)", page.read_text())):
            assert f'"{opt}"' in src, f"{page.name}: {opt} is not a plugin option"


def _resolve(dotted: str):
    parts = dotted.split(".")
    obj = __import__(parts[0])
    for i, name in enumerate(parts[1:], 1):
        if not hasattr(obj, name):
            __import__(".".join(parts[: i + 1]))
        obj = getattr(obj, name)
    return obj


def test_the_api_names_the_docs_use_exist():
    names = set()
    for page in PAGES:
        names |= set(re.findall(r"`[^`]*?\b(vmmpy(?:\.[A-Za-z_]\w*)+)", page.read_text()))
    names -= {"vmmpy.pytest_plugin"}  # a module path, checked by importing it below anyway
    assert {"vmmpy.Machine", "vmmpy.golden.compare", "vmmpy.machine.cpu_models"} <= names
    for dotted in sorted(names | {"vmmpy.pytest_plugin"}):
        assert _resolve(dotted) is not None, dotted
    # the exceptions the Python page lists are exported by vmmpy
    text = Path(ROOT, "docs", "python.md").read_text()
    errors = re.search(r"`vmmpy\.VmmError` subclasses \((.*?)\)", text, re.S).group(1)
    for name in re.findall(r"`(\w+)`", errors):
        assert name in vmmpy.__all__, name


def test_the_machine_attributes_and_keywords_the_docs_use_exist():
    text = Path(ROOT, "docs", "python.md").read_text() + Path(ROOT, "docs", "deterministic.md").read_text()
    with vmmpy.Machine(gpu=True, input=True, virtio_console=True) as m:
        attrs = set(dir(m))
        for name in sorted(set(re.findall(r"\bm\.([a-z_]+)", text))):
            assert name in attrs, f"m.{name}"
        for obj in ("serial", "screen", "keyboard", "tablet", "hvc"):
            sub = set(dir(getattr(m, obj)))
            for name in sorted(set(re.findall(rf"\bm\.{obj}\.([a-z_]+)", text))):
                assert name in sub, f"m.{obj}.{name}"
    params = set(inspect.signature(vmmpy.Machine.__init__).parameters)
    for call in re.findall(r"Machine\(([^)]*)\)", text):
        for kw in re.findall(r"\b([a-z_]+)=", call):
            assert kw in params, f"Machine({kw}=)"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_and_heading(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)  # not inside code blocks
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        rel = os.path.relpath(path, ROOT)
        if not path.exists():
            assert rel in ABSENT_ALLOWED, f"{page.name}: {target} does not exist"
            continue
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name}: {target}: no such heading"


def test_the_exit_code_table_matches_the_cli():
    from vmmpy import cli

    text = Path(ROOT, "docs", "exit-codes.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| .*?`([A-Z_]+)`\) \|$", text, re.M))
    assert {int(k): v for k, v in rows.items()} == {
        cli.EXIT_RESET: "RESET",
        cli.EXIT_GUEST_ERROR: "GUEST_ERROR",
        cli.EXIT_HOST_ERROR: "HOST_ERROR",
        cli.EXIT_TIMEOUT: "TIMEOUT",
        cli.EXIT_INTERRUPTED: "STOPPED",
    }
    assert "| 2 |" in text and cli.EXIT_USAGE == 2
