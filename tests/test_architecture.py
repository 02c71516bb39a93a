"""The package's layers: every import points down this list (or within its own layer), never up."""

import ast
from pathlib import Path

import promptdistill

LAYERS = [
    {"__init__", "errors", "files"},
    {"methods"},
    {"config"},
    {"convert", "corpus", "prompts", "datasets", "stats"},
    {"rundir"},
    {"models"},
    {"generation"},
    {"synth", "teacher", "retrieval"},
    {"train"},
    {"evaluate", "judge", "retention", "selfcheck", "update"},
    {"report"},
    {"pipeline", "plan", "chat", "export", "compare"},
    {"cli", "__main__"},
]
PACKAGE = Path(promptdistill.__file__).parent
MODULES = {path.stem for path in PACKAGE.iterdir() if path.suffix == ".py" or (path / "__init__.py").is_file()}


def layer_of(module: str) -> int:
    return next(number for number, layer in enumerate(LAYERS) if module in layer)


def imported(path: Path) -> set[str]:
    """The promptdistill modules (top level: a subpackage counts as one) that a file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("promptdistill"):
            parts = node.module.split(".")
            if len(parts) > 1:
                names.add(parts[1])
            else:  # from promptdistill import X: a module, or a name of the package itself
                names |= {alias.name if alias.name in MODULES else "__init__" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("promptdistill.")}
    return names


def test_every_module_has_a_layer_and_imports_only_downwards():
    files = [path for path in PACKAGE.rglob("*.py")]
    assert len(files) > 20
    for path in files:
        relative = path.relative_to(PACKAGE)
        module = relative.parts[0].removesuffix(".py")
        for name in imported(path) - {module}:
            assert layer_of(name) <= layer_of(module), f"{relative} imports {name}, a layer above it"


def test_the_pipeline_is_an_orchestrator_read_in_one_sitting():
    assert len((PACKAGE / "pipeline.py").read_text().splitlines()) < 275
