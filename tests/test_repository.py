"""The repository itself: pinned environments agree, notebooks are clean, code is linted."""

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils.tools.workshop_check import read_pins

ROOT = Path(__file__).resolve().parent.parent


def test_requirements_and_conda_environment_pin_the_same_versions():
    pip_pins = read_pins(ROOT / "requirements.txt")
    conda_pins = read_pins(ROOT / "environment.yml")
    assert len(pip_pins) >= 15
    assert pip_pins == conda_pins


def test_key_packages_are_pinned():
    assert {"ray", "torch", "transformers", "datasets", "nbval", "pytest"} <= set(
        read_pins(ROOT / "requirements.txt")
    )
    # data: Ray Data; default: the dashboard's pages and the state API that notebook 07 uses
    assert "ray[data,default]==" in (ROOT / "requirements.txt").read_text()


def notebooks():
    return sorted((ROOT / "notebooks").rglob("*.ipynb"))


def test_there_are_notebooks():
    names = [p.name for p in notebooks()]
    assert "00_overview.ipynb" in names and "01_sequential_inference.ipynb" in names


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, (
                f"{path.name}: strip outputs before committing"
            )


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebooks_that_use_ray_end_by_shutting_it_down(path):
    """A kernel left holding a Ray instance keeps its workers (and their memory) alive."""
    code = [c["source"] for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    code = ["".join(source) if isinstance(source, list) else source for source in code]
    if not any(re.search(r"^\s*(import ray|ray\.init\()", source, re.M) for source in code):
        return
    last_use = max(i for i, source in enumerate(code) if re.search(r"\bray\.\w", source))
    assert "ray.shutdown()" in code[last_use], (
        f"{path.name}: shut Ray down (ray.shutdown()) once the notebook is done with it"
    )


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_code_and_notebooks_are_ruff_clean(command):
    """`ruff check` and `ruff format --check` pass on the whole tree, notebooks included."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_diagrams_are_the_bytes_the_script_draws(tmp_path):
    """The script promises identical bytes on every run: regenerated files equal the committed."""
    subprocess.run(
        [sys.executable, str(ROOT / "assets" / "make_diagrams.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    made = {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}
    committed = {p.name: p.read_bytes() for p in (ROOT / "assets" / "diagrams").glob("*.png")}
    assert sorted(made) == sorted(committed) and len(made) >= 6
    differ = sorted(name for name in made if made[name] != committed[name])
    assert not differ, (
        f"{differ} differ from what assets/make_diagrams.py draws: "
        "run `make diagrams` and commit the result"
    )


def test_a_deprecated_call_made_by_the_course_fails_the_tests():
    """pyproject's filter turns a DeprecationWarning attributed to a `utils` module into an
    error, while one raised inside a third-party module stays a warning."""
    code = "import warnings\nwarnings.warn('old API', DeprecationWarning)\n"
    with pytest.raises(DeprecationWarning, match="old API"):
        exec(compile(code, "course_module.py", "exec"), {"__name__": "utils.inference"})
    with pytest.warns(DeprecationWarning, match="old API"):
        exec(compile(code, "library_module.py", "exec"), {"__name__": "somelibrary.module"})


def test_importing_utils_imports_no_heavy_library_until_a_helper_is_used():
    """A Ray worker that needs only `utils.inference` must not pay for datasets, transformers
    and matplotlib; every exported helper still resolves, to the module that defines it."""
    code = (
        "import sys, utils\n"
        "heavy = ('torch', 'datasets', 'transformers', 'matplotlib', 'pandas')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "import utils.inference\n"
        "print(sorted(m for m in ('datasets', 'transformers', 'matplotlib') if m in sys.modules))\n"
        "print(sorted(utils.__all__) == sorted(utils._HELPERS))\n"
        "print(all(getattr(utils, n).__module__ == 'utils.' + m for n, m in utils._HELPERS.items()"
        " if hasattr(getattr(utils, n), '__module__')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["[]", "[]", "True", "True"], result.stdout


def test_importing_ray_builds_no_grammar_parsers():
    """Every Ray process imports jsonschema. From jsonschema 4.25, with rfc3987-syntax (which
    Jupyter's dependencies install) that import builds about 35 Lark parsers: 2.3 s of CPU in
    each driver, worker and Ray agent. requirements.txt pins jsonschema below 4.25."""
    code = (
        "import sys, ray\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rfc3987_syntax', 'lark'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", (
        f"importing ray imported {result.stdout.strip()}: is jsonschema 4.25 or newer installed?"
    )


def utils_sources() -> dict[str, str]:
    return {
        path.relative_to(ROOT).as_posix(): path.read_text()
        for path in sorted((ROOT / "utils").rglob("*.py"))
    }


def test_settings_are_read_from_the_environment_in_config_only():
    """COURSE_*, RAY_ADDRESS and HF_* are parsed once, in utils/config.py; elsewhere code asks
    `get_config()` (cluster.py forwards the environment to workers without parsing it)."""
    read = re.compile(
        r"(environ(\.get)?[\[(]|getenv\()\s*[\"'](COURSE_|RAY_ADDRESS|HF_|TRANSFORMERS_)"
    )
    found = [
        f"{name}: {line.strip()}"
        for name, text in utils_sources().items()
        if name != "utils/config.py"
        for line in text.splitlines()
        if read.search(line)
    ]
    assert not found, found


def test_no_module_imports_another_modules_private_names():
    """Private names (`_name`) stay inside their module; private modules (`_upsample`) are
    imported by the public module that fronts them."""
    found = [
        f"{name}: from {node.module} import {alias.name}"
        for name, text in utils_sources().items()
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.ImportFrom)
        and (node.level > 0 or (node.module or "").split(".")[0] == "utils")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not found, found


def test_the_readme_lists_every_module_of_utils():
    """The README's repository map names every module, so a newcomer finds each one there."""
    readme = (ROOT / "README.md").read_text()
    repository = readme[readme.index("## Repository") :]
    missing = [
        name
        for name in utils_sources()
        if not name.endswith("__init__.py") and Path(name).name not in repository
    ]
    assert not missing, missing


# Written out in the notebook that teaches them, kept in `utils` for every later notebook, the
# benchmark and the tests (the d2l book's `#@save` rule): the two copies must stay one code.
TAUGHT_HELPERS = {
    "02_ray_tasks.ipynb": {
        "model_recipe": "utils/model.py",
        "build_replica": "utils/model.py",
        "match_threads_to_cpus": "utils/cluster.py",
        "make_batches": "utils/images.py",
        "predict_batch": "utils/workers.py",
        "add_predictions": "utils/check.py",
    },
    "03_ray_actors.ipynb": {
        "PredictionActor": "utils/workers.py",
        "run_on_actors": "utils/workers.py",
    },
    "04_actor_pool.ipynb": {"predict_on": "utils/workers.py"},
    "05_ray_data.ipynb": {
        "file_bytes": "utils/data.py",
        "write_images_parquet": "utils/data.py",
        "SegmentImages": "utils/workers.py",
        "actor_cpus": "utils/cluster.py",
        "spans_from": "utils/timing.py",
    },
    # The exercise's answer: the learner's copy has a stub in its place.
    "solutions/06_checkpoint_predictor.ipynb": {
        "PredictFromCheckpoint": "utils/predictor.py",
        "batch_predict": "utils/predictor.py",
    },
}


def function_statements(source: str, name: str) -> str:
    """The function or class `name` in `source`, docstring and body, without the import
    statements of its body (a module imports inside a function what a notebook imported in an
    earlier cell)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            node.body = [s for s in node.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
            return ast.dump(node)
    raise AssertionError(f"no function {name} found")


@pytest.mark.parametrize("notebook", sorted(TAUGHT_HELPERS))
def test_helpers_a_notebook_teaches_are_the_code_utils_keeps(notebook):
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    for name, module in TAUGHT_HELPERS[notebook].items():
        in_notebook = function_statements(code, name)
        in_utils = function_statements((ROOT / module).read_text(), name)
        assert in_notebook == in_utils, f"{notebook}'s {name} and {module}'s have drifted apart"
