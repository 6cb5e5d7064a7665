import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

DATA = Path(__file__).parent / "data"

if os.environ.get("PLANNER_TOY_METHOD"):  # see tests/test_kinds.py
    from toy_method import register

    register()


@pytest.fixture
def run_cli():
    """Invoke the `planner` CLI in-process; returns click's Result (stdout/stderr apart)."""
    from cli import main

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def plan_validator():
    """Validates a plan document against planner/schema/plan.schema.json."""
    import jsonschema

    from planner.core.plan import plan_schema

    schema = plan_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    def check(doc_or_path):
        doc = json.loads(Path(doc_or_path).read_text()) if isinstance(doc_or_path, (str, Path)) else doc_or_path
        validator.validate(doc)
        return doc

    return check
