"""The layering of docs/architecture.md, enforced: no module imports a layer above its own, and
the core (attacks, analysis) imports no I/O, config or torch. Read from the source (ast), so a
function-level import counts as much as a top-level one."""

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "privdyn"

#: Top to bottom; a module may import its own package and any layer below its own.
LAYERS = [
    {"__main__"},  # python -m privdyn: runs the command line
    {"cli"},
    {"sweep"},
    {"ingest"},
    {"pipeline"},
    {"report", "training"},
    {"store", "data", "models"},
    {"config"},
    {"attacks", "analysis"},
    {"registry", "errors"},
]
CORE = {"attacks", "analysis"}
#: Third-party packages the core may use (arrays in, arrays or tables out; option models).
CORE_THIRD_PARTY = {"numpy", "scipy", "sklearn", "threadpoolctl", "pandas", "pydantic"}
#: The package facade (``privdyn.open_run``, ``privdyn.audit``, ...) reaches the entry points lazily
#: (a documented exception: it is the top of the package, like the CLI).
FACADE = {"privdyn": {"store", "pipeline", "training", "ingest"}}


def part_of(module: str) -> str:
    """'privdyn.attacks.lira' -> 'attacks'; 'privdyn' and 'privdyn.__version__' -> 'privdyn';
    'privdyn.__main__' -> '__main__'."""
    parts = module.split(".")
    own = len(parts) > 1 and (not parts[1].startswith("__") or parts[1] == "__main__")
    return parts[1] if own else parts[0]


def layer(part: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if part in names)


def imports():
    """(importing module, imported module) for every privdyn and third-party import in src/."""
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] if node.module != "privdyn" else [f"privdyn.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                yield module, t


def test_every_top_level_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__init__", "__pycache__", "configs"}
    assert parts <= set().union(*LAYERS), parts - set().union(*LAYERS)


def test_no_import_runs_upward():
    upward = []
    for module, target in imports():
        if not target.startswith("privdyn"):
            continue
        src, dst = part_of(module), part_of(target)
        if src == dst:
            continue
        if src == "privdyn":
            assert dst in FACADE["privdyn"] or layer(dst) >= len(LAYERS) - 1, (module, target)
            continue
        if dst == "privdyn":  # `from privdyn import __version__`: the package's constant only
            continue
        if layer(dst) <= layer(src):
            upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(upward)


def test_the_core_uses_no_io_config_or_torch():
    bad = []
    for module, target in imports():
        if part_of(module) not in CORE:
            continue
        top = target.split(".")[0]
        if top == "privdyn":
            if part_of(target) not in CORE | {"errors", "registry", "privdyn"}:
                bad.append(f"{module} imports {target}")
        elif top not in CORE_THIRD_PARTY and top not in _stdlib():
            bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(bad)


def _stdlib() -> set[str]:
    import sys

    return set(sys.stdlib_module_names) | {"__future__"}


def test_importing_the_report_keeps_the_users_matplotlib_backend():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import privdyn.report.html, privdyn.report.compare; "
            "import sys; sys.exit(0 if matplotlib.get_backend() == 'svg' and 'matplotlib.pyplot' not in sys.modules "
            "else 1)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_facade_reaches_only_the_entry_point_layers():
    import privdyn

    assert {part_of(m) for m in privdyn._LAZY.values()} <= FACADE["privdyn"]
    for name in privdyn.__all__:  # every advertised name resolves
        assert getattr(privdyn, name) is not None
