"""The layout docs/architecture.md describes: stage packages whose imports point only backwards along
the data flow, and modules of readable size."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "src" / "lstmgen"
# The data flow, first to last. A module may import from its own stage, an earlier one, or SHARED.
STAGES = ["text", "tokens", "model", "evaluation", "training", "generation", "experiments", "serving", "api", "cli"]
SHARED = {"errors", "config", "device", "private_torch", "files", "display", "__init__"}
ENTRY = {"__main__"}  # python -m lstmgen: the command, last of all
DEPRECATED = {"train", "runs", "generate"}  # the old paths the README showed, kept for one release
MAX_LINES = 420  # "about 400"


def stage_of(module: str) -> str:
    """"lstmgen.text.reading" -> "text"; "lstmgen.api" -> "api"; shared modules -> "shared"."""
    first = module.split(".")[1] if "." in module else "__init__"
    if first in SHARED:
        return "shared"
    if first in DEPRECATED:
        return "deprecated"
    return "cli" if first in ENTRY else first


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("lstmgen", *path.relative_to(PACKAGE).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def lstmgen_imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):  # imports inside functions count too
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lstmgen"):
            found.add(node.module)
            if node.module == "lstmgen":
                found.update(f"lstmgen.{a.name}" for a in node.names if not a.name.startswith("__"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lstmgen"))
    return found


def test_every_import_points_back_along_the_data_flow():
    wrong = []
    for name, tree in modules().items():
        stage = stage_of(name)
        if stage == "deprecated":
            continue
        for target in lstmgen_imports(tree):
            to = stage_of(target)
            if to == "deprecated":
                wrong.append(f"{name} imports the deprecated {target}")
            elif stage == "shared" and to != "shared" and name != "lstmgen":  # lstmgen/__init__ loads the API lazily
                wrong.append(f"{name} (shared) imports {target}")
            elif stage != "shared" and to != "shared" and STAGES.index(to) > STAGES.index(stage):
                wrong.append(f"{name} ({stage}) imports {target} ({to}), a later stage")
    assert not wrong, "\n".join(wrong)
    assert {stage_of(name) for name in modules()} == {*STAGES, "shared", "deprecated"}


def test_no_module_is_much_over_four_hundred_lines():
    long = {path.relative_to(PACKAGE).as_posix(): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long
