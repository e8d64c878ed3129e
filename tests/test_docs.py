"""The documentation in docs/ says what the code does: every column, source label, model.json
key and module is documented, and the public transforms and handlers say their arguments."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import synthsieve
from synthsieve.schema import ERRORS_SCHEMA, SCORES_SCHEMA, SOURCE_CLASSES, VERDICTS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _documented_names(page: str) -> set[str]:
    """Names a page documents: `code` spans and the first cell of its table rows."""
    text = (DOCS / page).read_text()
    names = set(re.findall(r"`([^`]+)`", text))
    for row in re.findall(r"^\|([^|\n]+)\|", text, re.M):
        names.update(n.strip(" `") for n in row.split(","))
    return names


def test_every_column_of_both_tables_is_documented():
    documented = _documented_names("output.md")
    missing = [n for n in SCORES_SCHEMA.names + ERRORS_SCHEMA.names if n not in documented]
    assert missing == []


def test_the_taxonomy_page_lists_exactly_the_schemas_labels():
    text = (DOCS / "taxonomy.md").read_text()
    labels = text[text.index("## Source labels"):text.index("## Names found in metadata")]
    listed = set(re.findall(r"`([a-z0-9_]+)`", labels))
    assert set(SOURCE_CLASSES) <= listed
    # anything else quoted there is a column or a verdict, never a label the code lacks
    assert listed - set(SOURCE_CLASSES) - set(SCORES_SCHEMA.names) - set(VERDICTS) == set()


def _model_json_keys() -> set[str]:
    """Every model.json key ModelSpec.from_dict reads, as `section.key`."""
    source = (ROOT / "synthsieve" / "inference" / "spec.py").read_text()
    body = source[source.index("def from_dict"):source.index("def _validate")]
    sections = {"inp": "input.", "pre": "preprocess.", "out": "outputs.", "thr": "thresholds.",
                "raw": ""}
    keys = set()
    for var, key in re.findall(r"\b(inp|pre|out|thr|raw)(?:\[|\.get\()\"(\w+)\"", body):
        keys.add(sections[var] + key)
    return keys - {"input", "preprocess", "outputs", "thresholds"}


def test_every_model_json_key_the_pipeline_reads_is_documented():
    keys = _model_json_keys()
    assert {"input.name", "preprocess.mean", "thresholds.ai_generated", "name"} <= keys
    documented = _documented_names("model-contract.md")
    assert sorted(k for k in keys if k not in documented) == []


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(synthsieve.__path__, "synthsieve.")
                  if not m.name.endswith("__main__"))


def _defines_names(module: str) -> bool:
    """False for a package whose __init__ is only its docstring."""
    path = ROOT / Path(*module.split(".")) / "__init__.py"
    if not path.exists():
        return True
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
               for n in body)


def test_every_layer_and_top_level_module_is_on_the_layout_page():
    text = (DOCS / "layout.md").read_text()
    for name in _modules():
        parts = name.split(".")
        if len(parts) == 2 and not (ROOT / "synthsieve" / parts[1]).is_dir():
            assert f"`{parts[1]}.py`" in text, name  # a top-level module
        else:
            assert f"`{parts[1]}/`" in text, name  # its layer


@pytest.mark.parametrize("module", [m for m in _modules()
                                    if "tensorrt" not in m and _defines_names(m)])
def test_public_modules_say_what_they_export(module):
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{module} has no __all__"
    assert [n for n in exported if not hasattr(mod, n)] == []


def test_public_transforms_and_handlers_document_their_arguments():
    undocumented = []
    for path in (ROOT / "synthsieve").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = " ".join(ast.unparse(b) for b in node.bases)
            if "PTransform" not in bases and "ModelHandler" not in bases:
                continue
            init = next((f for f in node.body
                         if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            takes_args = init is not None and len(init.args.args) + len(
                init.args.kwonlyargs) > 1
            doc = (ast.get_docstring(node) or "") + (
                (ast.get_docstring(init) or "") if init else "")
            if takes_args and "Args:" not in doc:
                undocumented.append(f"{path.name}:{node.name}")
    assert undocumented == []


def test_readme_links_to_docs_that_exist():
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    assert {"docs/output.md", "docs/model-contract.md", "docs/taxonomy.md",
            "docs/layout.md"} <= linked
    assert [p for p in linked if not (ROOT / p).exists()] == []


def test_readme_has_each_section_once():
    headings = re.findall(r"^#{2,3} .+$", (ROOT / "README.md").read_text(), re.M)
    assert [h for h in set(headings) if headings.count(h) > 1] == []


def test_every_command_option_has_help_text_and_help_renders_clean():
    import argparse

    from synthsieve.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = {}
    for name, sub in commands.choices.items():
        missing = [a.option_strings[0] if a.option_strings else a.dest for a in sub._actions
                   if not a.help and not isinstance(a, argparse._HelpAction)]
        if missing:
            bare[name] = missing
        text = sub.format_help()
        assert "%%" not in text and "%(" not in text, name
    assert bare == {}


def test_readme_sample_table_shows_the_scores_every_cpu_computes():
    """The README's sample table is what the first command prints: the scores the build
    recorded (tests/test_kernels.py checks that every CPU computes those)."""
    import json

    spec = json.loads((ROOT / "synthsieve/models/default/model.json").read_text())
    recorded = spec["build"]["sample_scores"]["ai_generated"]
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| file | ai_generated | verdict |"):]
    table = table[:table.index("\n\n")]
    shown = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        scores = [float(v) for v in re.findall(r"\d\.\d+", cells[1])]
        if scores:
            shown.update(zip(names, scores, strict=True))
    assert sorted(shown) == sorted(recorded)
    assert {n: round(v, 2) for n, v in recorded.items()} == shown
