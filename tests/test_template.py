"""template.yaml: cfn-lint passes clean, and the example function is wired as the docs say —
the exec wrapper on, and IAM permissions for exactly the secrets it declares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

cfn_yaml = pytest.importorskip("cfnlint.decode.cfn_yaml", reason="cfn-lint is not installed (pip install cfn-lint==1.58.0)")

from lambdawrap.devtools.layer_build import DEFAULT_PYTHON_VERSION  # noqa: E402
from lambdawrap.shared.secret_sources import SECRETS_MANAGER, SSM, parse_sources  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
# The console script may not be on PATH; run its entry point with this interpreter.
CFN_LINT = [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.argv[0] = 'cfn-lint'; sys.exit(main())"]


def run_cfn_lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CFN_LINT, str(path)], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def template() -> dict:
    return cfn_yaml.load(str(TEMPLATE))


@pytest.fixture(scope="module")
def function(template) -> dict:
    return template["Resources"]["HelloFunction"]["Properties"]


def _statements(function: dict) -> list:
    return [statement for policy in function["Policies"] if isinstance(policy, dict) for statement in policy["Statement"]]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _sub_text(value) -> str:
    """The text of a literal or an Fn::Sub string."""
    return value["Fn::Sub"] if isinstance(value, dict) else value


def _allows(statement: dict, action: str, resource_suffix: str) -> bool:
    return (
        statement.get("Effect") == "Allow"
        and action in _as_list(statement["Action"])
        and any(_sub_text(resource).endswith(resource_suffix) for resource in _as_list(statement["Resource"]))
    )


def test_cfn_lint_passes_clean():
    result = run_cfn_lint(TEMPLATE)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_cfn_lint_is_really_checking(tmp_path):
    # GIVEN the template with a property SAM does not know WHEN linted THEN cfn-lint objects:
    # the clean pass above is not a linter that skipped the SAM resources.
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("      Handler: app.handler\n", "      Handler: app.handler\n      Handlr: app.handler\n"))
    result = run_cfn_lint(broken)
    assert result.returncode != 0 and "Handlr" in result.stdout


def test_function_runs_through_the_layer(template, function):
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    variables = function["Environment"]["Variables"]
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/wrapper.sh"
    assert variables["OTEL_EXPORTER_OTLP_ENDPOINT"] == {"Ref": "OtlpEndpoint"} and "OtlpEndpoint" in template["Parameters"]
    assert variables["OTEL_SERVICE_NAME"]
    assert (function["CodeUri"], function["Handler"], function["Runtime"]) == ("examples/hello/", "app.handler", "python3.12")
    assert function["Layers"] == [{"Ref": "LambdawrapLayerX8664"}]


@pytest.mark.parametrize(("resource", "arch"), [("LambdawrapLayerX8664", "x86_64"), ("LambdawrapLayerArm64", "arm64")])
def test_layers(template, resource, arch):
    layer = template["Resources"][resource]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    properties = layer["Properties"]
    assert properties["ContentUri"] == f"build/layer-{arch}/"
    assert properties["CompatibleArchitectures"] == [arch]
    # A layer serves the one runtime it is built for; the example function uses it.
    assert properties["CompatibleRuntimes"] == [f"python{DEFAULT_PYTHON_VERSION}"] == [template["Resources"]["HelloFunction"]["Properties"]["Runtime"]]
    assert template["Outputs"][f"{resource}Arn"]["Value"] == {"Ref": resource}


def test_policies_cover_every_declared_secret(template, function):
    # GIVEN the secrets the function declares, parsed by lambdawrap's own parser
    sources, problems = parse_sources(function["Environment"]["Variables"]["LAMBDAWRAP_SECRETS"])
    assert not problems and {s.service for s in sources} == {SECRETS_MANAGER, SSM}
    statements = _statements(function)
    for source in sources:
        if source.service == SECRETS_MANAGER:
            # THEN each secret is readable (its ARN ends with "-" and six random characters)...
            assert any(_allows(s, "secretsmanager:GetSecretValue", f":secret:{source.identifier}-??????") for s in statements), source
        else:
            name = source.identifier if source.identifier.startswith("/") else "/" + source.identifier
            assert any(_allows(s, "ssm:GetParameter", f":parameter{name}") for s in statements), source
    # ...and KMS decryption is allowed only through the services that hold them.
    kms = [s for s in statements if "kms:Decrypt" in _as_list(s["Action"])]
    assert len(kms) == 1
    via = {_sub_text(v) for v in _as_list(kms[0]["Condition"]["StringEquals"]["kms:ViaService"])}
    assert via == {f"{service}.${{AWS::Region}}.amazonaws.com" for service in {s.service for s in sources}}
    # Nothing broader than that.
    assert all(_sub_text(r) != "*" for s in statements for r in _as_list(s["Resource"]))


def test_function_and_layer_arns_are_outputs(template):
    assert template["Outputs"]["HelloFunctionArn"]["Value"] == {"Fn::GetAtt": ["HelloFunction", "Arn"]}
