"""The Python examples of README.md and docs/*.md work as written.

A comment line before every ```python block says how it is checked:

- ``<!-- docs-test: run -->``: run as a script in a fresh directory;
- ``<!-- docs-test: continues -->``: appended to the file's previous run (it uses its names);
- ``<!-- docs-test: setup NAME -->``: run after the command ``SETUPS[NAME]`` (e.g. the run it opens);
- ``<!-- docs-test: sketch (why) -->``: a fragment of the user's own loop. It must compile, every
  privdyn name it uses must exist, and every privdyn callable must accept the arguments it is given.

A fenced block after ``<!-- docs-test: output -->`` is the output shown for the run before it.
Each of its lines must appear in what the run prints (stdout and stderr) with its numbers
replaced by ``#``. The words and layout are checked, not the digits, which move with the CPU.

Every ``privdyn COMMAND ...`` the pages show (in shell blocks and inline code) must name a command
and options the CLI has, and the example configs it names must exist. Every YAML block must be a
valid config (a snippet is read over the built-in quickstart) or sweep file.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- docs-test: (run|continues|setup \S+|sketch \(.+\)|output) -->")

#: Commands a ``setup`` block runs after, in its directory: what it opens.
SETUPS = {
    # the quickstart (the run README's API section opens), small enough for a test
    "quickstart-run": [sys.executable, "-m", "privdyn", "run", "--out", "runs/quickstart-mnist1d", "--no-progress",
                       "--set", "training.n_models=8", "--set", "training.epochs=3", "--set", "dataset.n_pool=600",
                       "--set", "dataset.n_test=300", "--set", "analysis.grid=4"],
}


@dataclass
class Block:
    """One fenced block of a Markdown file: where it starts, its marker and its text."""

    path: Path
    line: int
    marker: str | None
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass
class Example:
    """The blocks that run as one script (a run and the blocks that continue it), and its output."""

    blocks: list[Block]
    setup: str | None = None
    output: Block | None = None

    @property
    def code(self) -> str:
        return "\n".join(b.text for b in self.blocks)


def fenced_blocks(path: Path) -> list[tuple[Block, str]]:
    """Every fenced block of ``path`` with its language (``python``, ``bash``, "" ...)."""
    lines = path.read_text().split("\n")
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang = lines[i][3:].strip()
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            m = MARKER.fullmatch(lines[i - 1].strip()) if i else None
            out.append((Block(path, i + 1, m.group(1) if m else None, "\n".join(lines[i + 1:j]) + "\n"), lang))
            i = j
        i += 1
    return out


def collect() -> tuple[list[Example], list[Block], list[str]]:
    """The runnable examples, the sketches, and what is wrong with the markers."""
    examples: list[Example] = []
    sketches: list[Block] = []
    problems: list[str] = []
    for path in DOCS:
        current: Example | None = None
        for block, lang in fenced_blocks(path):
            kind = block.marker or ""
            if lang != "python":
                if kind == "output":
                    if current is None or current.output is not None:
                        problems.append(f"{block.where}: an output block that follows no run")
                    else:
                        current.output = block
                elif kind:
                    problems.append(f"{block.where}: a {lang or 'plain'} block marked {kind!r}")
                continue
            if not kind:
                problems.append(f"{block.where}: a python block without a docs-test marker (tests/test_docs.py)")
            elif kind == "run" or kind.startswith("setup "):
                setup = kind.split(" ", 1)[1] if kind.startswith("setup ") else None
                if setup is not None and setup not in SETUPS:
                    problems.append(f"{block.where}: unknown setup {setup!r}")
                current = Example([block], setup)
                examples.append(current)
            elif kind == "continues":
                if current is None:
                    problems.append(f"{block.where}: continues no run")
                else:
                    current.blocks.append(block)
            elif kind.startswith("sketch"):
                sketches.append(block)
            else:
                problems.append(f"{block.where}: a python block marked {kind!r}")
    return examples, sketches, problems


EXAMPLES, SKETCHES, PROBLEMS = collect()
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def shape(line: str) -> str:
    """A printed line without its digits and with its spacing collapsed."""
    return " ".join(NUMBER.sub("#", line).split())


def test_every_python_block_says_how_it_is_checked():
    assert PROBLEMS == []
    assert EXAMPLES and SKETCHES  # the parser found both kinds
    assert any(e.output is not None for e in EXAMPLES)


def test_shape_ignores_digits_and_spacing_only():
    assert shape("[  67   89 1114]") == shape("[ 3 4 5]") == "[ # # #]"
    assert shape("top 100: 45") == shape("top  1e-3:   -2.5") != shape("top 100 45")
    assert shape("0.012 runs/mynet/report/index.html") == "# runs/mynet/report/index.html"


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.blocks[0].where for e in EXAMPLES])
def test_example_runs_and_prints_what_the_docs_show(example: Example, tmp_path: Path):
    env = {**os.environ, "COLUMNS": "80"}  # rich wraps at the width the docs were written at
    if example.setup is not None:
        subprocess.run(SETUPS[example.setup], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=400)
    (tmp_path / "example.py").write_text(example.code)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=400)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, f"{example.blocks[0].where} failed:\n{printed[-4000:]}"
    if example.output is not None:
        seen = {shape(line) for line in printed.splitlines()}
        missing = [line for line in example.output.text.splitlines() if line.strip() and shape(line) not in seen]
        assert missing == [], (f"{example.output.where}: lines the example no longer prints:\n" + "\n".join(missing)
                               + f"\n--- it printed:\n{printed[-4000:]}")


def privdyn_names(tree: ast.AST) -> dict[str, Any]:
    """The names a block binds to privdyn objects by its imports (``import privdyn``, ``from privdyn.x
    import y``); an import of something privdyn lacks raises."""
    bound: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "privdyn":  # `import a.b` binds a; `import a.b as c` binds a.b
                    module = importlib.import_module(a.name)
                    bound[a.asname or "privdyn"] = module if a.asname else importlib.import_module("privdyn")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "privdyn":
            module = importlib.import_module(node.module or "")
            for a in node.names:
                assert hasattr(module, a.name), f"{node.module} has no {a.name}"
                bound[a.asname or a.name] = getattr(module, a.name)
    return bound


def resolve(node: ast.expr, bound: dict[str, Any]) -> tuple[bool, Any]:
    """The privdyn object an attribute chain such as ``privdyn.Recorder.create`` names, if it
    starts at a privdyn name; a missing attribute raises."""
    if isinstance(node, ast.Name):
        return (node.id in bound, bound.get(node.id))
    if isinstance(node, ast.Attribute):
        known, obj = resolve(node.value, bound)
        if known:
            assert hasattr(obj, node.attr), f"{ast.unparse(node.value)} has no attribute {node.attr!r}"
            return True, getattr(obj, node.attr)
    return False, None


@pytest.mark.parametrize("block", SKETCHES, ids=[b.where for b in SKETCHES])
def test_sketch_uses_privdyn_as_it_is(block: Block):
    tree = ast.parse(block.text, filename=block.where)
    bound = privdyn_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            resolve(node, bound)
        if not isinstance(node, ast.Call):
            continue
        known, fn = resolve(node.func, bound)
        if not known or any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without one
            continue
        try:
            signature.bind(*node.args, **{k.arg: k.value for k in node.keywords if k.arg})
        except TypeError as e:
            pytest.fail(f"{block.where}: {ast.unparse(node.func)}(...) does not take these arguments: {e}")


def test_sketch_check_catches_a_renamed_argument_and_a_missing_name():
    fake = Block(ROOT / "README.md", 1, "sketch (test)", "import privdyn\nprivdyn.open_run('x', no_such_argument=1)\n")
    with pytest.raises(pytest.fail.Exception, match="does not take these arguments"):
        test_sketch_uses_privdyn_as_it_is(fake)
    missing = Block(ROOT / "README.md", 1, "sketch (test)", "import privdyn\nprivdyn.no_such_thing()\n")
    with pytest.raises(AssertionError, match="no attribute 'no_such_thing'"):
        test_sketch_uses_privdyn_as_it_is(missing)
    with pytest.raises(AssertionError, match="has no nothing_here"):
        test_sketch_uses_privdyn_as_it_is(Block(ROOT / "README.md", 1, "sketch (t)",
                                                "from privdyn.training.recorder import nothing_here\n"))


def cli_options() -> dict[str, set[str]]:
    """Every command of the CLI with the options it takes."""
    import typer.main

    from privdyn.cli import app

    group = typer.main.get_command(app)
    assert hasattr(group, "commands")
    return {name: {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")} | {"--help"}
            for name, cmd in group.commands.items()}


COMMAND = re.compile(r"(?:^|[\s/])privdyn\s+([a-z]+)(.*)")
INLINE = re.compile(r"`(privdyn [^`]+)`")


def command_lines() -> list[tuple[str, str, str]]:
    """``(where, command, the rest of the line)`` of every privdyn command the docs show: in the
    shell blocks (after ``$``, ``.venv/bin/``, ``python -m``, variables, ``&&``) and in inline code."""
    found = []
    for path in DOCS:
        for block, lang in fenced_blocks(path):
            if lang not in ("", "bash", "sh", "console", "shell"):
                continue
            for k, line in enumerate(block.text.replace("\\\n", " ").splitlines()):
                for part in re.split(r"&&|;|\|\s", line.split(" #")[0]):
                    m = COMMAND.search(part.replace("python -m privdyn", "privdyn"))
                    if m and not part.lstrip().startswith("#"):
                        found.append((f"{block.where}+{k + 1}", m.group(1), m.group(2)))
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in INLINE.finditer(line):
                cm = COMMAND.search(m.group(1))
                if cm:
                    found.append((f"{path.relative_to(ROOT)}:{n}", cm.group(1), cm.group(2)))
    return found


def command_problems(lines: list[tuple[str, str, str]], options: dict[str, set[str]]) -> list[str]:
    """What is wrong with these command lines: unknown commands, options and repository paths."""
    wrong = []
    for where, command, rest in lines:
        if command not in options:
            wrong.append(f"{where}: no command {command!r}")
            continue
        for opt in re.findall(r"(?:^|[\s\[])(--?[a-z][\w-]*)", rest):
            if opt not in options[command]:
                wrong.append(f"{where}: {command} has no option {opt}")
        for token in rest.split():
            if token.startswith(("examples/", "docs/")) and not (ROOT / token).exists():
                wrong.append(f"{where}: {token} is not in the repository")
    return wrong


def test_every_command_the_docs_show_exists_with_its_options():
    lines = command_lines()
    assert len(lines) > 30  # the parser still finds them
    assert command_problems(lines, cli_options()) == []


def test_command_check_catches_a_wrong_command_option_or_path():
    planted = [("a", "score", " RUN --attakcs rmia"), ("b", "scour", " RUN"), ("c", "run", " examples/nope.yaml"),
               ("d", "analyze", " RUN [--rule R]")]
    assert command_problems(planted, cli_options()) == [
        "a: score has no option --attakcs", "b: no command 'scour'", "c: examples/nope.yaml is not in the repository"]


def test_readme_command_table_lists_every_command():
    rows = set(re.findall(r"^\| `privdyn ([a-z]+)", ROOT.joinpath("README.md").read_text(), re.M))
    assert rows == set(cli_options()), "README's Commands table and the CLI's commands differ"


def merged(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the keys of ``part`` put in, nested mappings merged (how a snippet is read)."""
    out = dict(base)
    for k, v in part.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


YAML_BLOCKS = [b for p in DOCS for b, lang in fenced_blocks(p) if lang in ("yaml", "yml")]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[b.where for b in YAML_BLOCKS])
def test_yaml_block_is_a_valid_config(block: Block, tmp_path: Path):
    """A config the pages show, whole or a snippet (read over the built-in quickstart), validates;
    so does a sweep file."""
    from importlib import resources

    from privdyn.config import config_from_dict, yaml_mapping
    from privdyn.sweep.spec import load_sweep

    data = yaml_mapping(block.text, block.where)
    if "grid" in data or "base" in data:
        (tmp_path / "sweep.yaml").write_text(block.text)
        assert load_sweep(tmp_path / "sweep.yaml").points
        return
    quickstart = yaml_mapping(resources.files("privdyn").joinpath("configs/quickstart.yaml").read_text(), "quickstart")
    config_from_dict(merged(quickstart, data), source=block.where)


def test_yaml_check_catches_a_misspelt_key(tmp_path: Path):
    from privdyn.errors import PrivdynError

    with pytest.raises(PrivdynError, match="n_modelz"):
        test_yaml_block_is_a_valid_config(Block(ROOT / "README.md", 1, None, "training: {n_modelz: 3}\n"), tmp_path)
