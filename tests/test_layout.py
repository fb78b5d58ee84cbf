"""The layout docs/design.md describes, checked: imports point down only, no cycles, thin
scripts, the studies in their subpackage, no markup in the site's Python, an installed package."""

import ast
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

SCRIPTS = sorted(name[:-3] for name in os.listdir(ROOT) if name.endswith(".py") and name != "model.py")
STUDIES = ("ablation", "common", "correspondence", "evolution", "features", "first_layer", "invariance")
STUDIES += ("occlusion", "optimized", "sanity", "transfer")


def python_files(*folders):
    for folder in folders:
        for root, _, names in os.walk(os.path.join(ROOT, folder)):
            yield from (os.path.join(root, name) for name in sorted(names) if name.endswith(".py"))


def module_name(path):
    relative = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return relative[: -len(".__init__")] if relative.endswith(".__init__") else relative


def imported(path):
    """The modules a file imports, `from a import b` counted as a.b where a.b is a module."""
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_imports_a_script():
    for path in python_files("zfnet", "tests", "bench"):
        scripts = imported(path).intersection(SCRIPTS)
        assert not scripts, f"{os.path.relpath(path, ROOT)} imports the script(s) {sorted(scripts)}"


def test_the_package_imports_point_down_and_never_in_a_circle():
    modules = {module_name(path): path for path in python_files("zfnet")}
    graph = {name: {other for other in imported(path) if other in modules} for name, path in modules.items()}
    for name, targets in graph.items():
        if not name.startswith(("zfnet.studies", "zfnet.site")):
            upward = {t for t in targets if t.startswith(("zfnet.studies", "zfnet.site"))}
            assert not upward, f"{name} (methods, training, plumbing) imports {sorted(upward)}"
        if name.startswith("zfnet.studies"):
            assert not any(t.startswith("zfnet.site") for t in targets), f"{name} imports the site"

    def visit(name, trail):
        assert name not in trail, "import cycle: " + " -> ".join([*trail, name])
        for target in graph[name]:
            visit(target, [*trail, name])

    for name in graph:
        visit(name, [])


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_thin(script):
    with open(os.path.join(ROOT, f"{script}.py")) as file:
        assert len(file.readlines()) < 200, f"{script}.py: move its work into zfnet/"


def test_the_studies_live_in_their_subpackage_each_with_its_outputs():
    assert sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "zfnet", "studies")) if name.endswith(".py")) == [
        "__init__",
        *sorted(STUDIES),
    ]
    for name in STUDIES:
        assert not os.path.exists(os.path.join(ROOT, "zfnet", f"{name}.py")), name
    for name in set(STUDIES) - {"common", "occlusion"}:  # occlusion's names depend on the folder: outputs()
        source = open(os.path.join(ROOT, "zfnet", "studies", f"{name}.py")).read()
        assert "\nOUTPUTS = " in source and "\ndef plot" in source, name


def test_the_sites_markup_is_in_templates():
    for path in python_files(os.path.join("zfnet", "site")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "</" not in node.value and "<section" not in node.value, (path, node.value[:60])


def test_the_installed_package_imports_from_anywhere(tmp_path):
    """`pip install -e .` (which the Makefile runs) makes zfnet and model importable outside the project."""
    result = subprocess.run(
        [sys.executable, "-c", "import model, zfnet.studies, zfnet.site.pages; print(model.__file__)"],
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert os.path.samefile(result.stdout.strip(), os.path.join(ROOT, "model.py"))
