"""The OpenAPI description is true: it names exactly the HTTP functions of the index with their methods
and keys, and the API's replies (fuzzed from the description with schemathesis, through the real
handlers, a real Azurite queue and the simulator) match its status codes, headers and schemas."""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import parse_qs

import azure.functions as func
import jsonschema
import pytest
import schemathesis  # requirements-dev.txt; scripts/test installs it

from connector.service import runs
from connector.service.openapi import RUN_ID_PATTERN, document
from simulator import Simulator, TenantSpec
from tests.conftest import apply_env

KEY = "k3y-" + "o" * 20


def http_functions(indexed) -> dict[str, tuple[str, list[str], str]]:
    """name -> (route, methods, auth level) of every HTTP trigger in the index."""
    out = {}
    for name, fn in indexed.items():
        trigger = json.loads(fn.get_function_json())["bindings"][0]
        if trigger["type"] == "httpTrigger":
            out[name] = (trigger["route"], [m.upper() for m in trigger["methods"]], trigger["authLevel"].upper())
    return out


def test_description_matches_the_function_index(indexed):
    doc = document()
    assert doc["servers"] == [{"url": "/api", "description": doc["servers"][0]["description"]}]
    described = {(path, method.upper()): op for path, item in doc["paths"].items() for method, op in item.items()}
    indexed_ops = {}
    for name, (route, methods, auth) in http_functions(indexed).items():
        for method in methods:
            indexed_ops[("/" + route, method)] = (name, auth)
    assert set(described) == set(indexed_ops), "paths and methods of the description != the function index"
    for key, op in described.items():
        name, auth = indexed_ops[key]
        anonymous = op.get("security", doc["security"]) == []
        assert anonymous == (auth == "ANONYMOUS"), f"{key} ({name}): security {op.get('security')} vs {auth}"
        if not anonymous:
            assert "401" in op["responses"], f"{key}: a keyed operation documents the host's 401"
        params = set(re.findall(r"\{(\w+)\}", key[0]))
        assert params == {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}, key
    assert RUN_ID_PATTERN.strip("^$") in runs.RUN_ID_RE.pattern


def test_description_is_valid_and_served_keyed(indexed):
    doc = document()
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema), name
    response = indexed["openapi"].get_user_function()(func.HttpRequest("GET", "http://localhost/api/openapi.json",
                                                                       body=b""))
    assert response.status_code == 200 and json.loads(response.get_body())["paths"] == doc["paths"]
    from connector.cli.docgen import OPENAPI_FILE, ROOT

    assert json.loads((ROOT / OPENAPI_FILE).read_text()) == doc, "run: m365-connector docs"


# -- the replies, fuzzed ----------------------------------------------------------------------------------------

class FunctionsHost:
    """A WSGI stand-in for the Functions host's HTTP front: routes from the function index, the function-key
    check (401 without a key, as the host does for AuthLevel.FUNCTION), then the real handler."""

    def __init__(self, indexed) -> None:
        self.routes = []
        for name, (route, methods, auth) in http_functions(indexed).items():
            pattern = re.compile("^/api/" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", route) + "$", re.I)
            self.routes.append((pattern, methods, auth, indexed[name].get_user_function()))

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        for pattern, methods, auth, handler in self.routes:
            match = pattern.match(path)
            if not match or method not in methods:
                continue
            if auth != "ANONYMOUS" and KEY not in (headers.get("x-functions-key"), query.get("code")):
                start_response("401 Unauthorized", [("Content-Length", "0")])
                return [b""]
            qs = environ.get("QUERY_STRING")
            url = f"http://localhost:7071{path}" + (f"?{qs}" if qs else "")
            resp = handler(func.HttpRequest(method, url, headers=headers, params=query, body=body,
                                            route_params=match.groupdict()))
            payload = resp.get_body()
            out_headers = [(k, v) for k, v in resp.headers.items() if k.lower() != "content-type"]
            start_response(f"{resp.status_code} X", [*out_headers, ("Content-Type", resp.mimetype),
                                                     ("Content-Length", str(len(payload)))])
            return [payload]
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]


@pytest.fixture(scope="module")
def api_env(azurite):
    with Simulator(TenantSpec(seed=12, users=120)) as sim:
        env = sim.env(secret_in="env")
        env.update({"SNAPSHOT_CONNECTION_STRING": azurite.connection_string,
                    "SNAPSHOT_CONTAINER": f"o{uuid.uuid4().hex[:12]}", "AzureWebJobsStorage": azurite.connection_string,
                    "M365_DATASETS": "organization,users,subscribed_skus"})
        yield env


def test_replies_match_the_description(indexed, api_env, monkeypatch):
    from hypothesis import HealthCheck, given, settings

    for name in runs.FUNCTION_SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    apply_env(monkeypatch, api_env)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", FunctionsHost(indexed),
                                            headers={"x-functions-key": KEY})
    served = schema.raw_schema["components"]["schemas"]["RunRequest"]["properties"]["datasets"]["items"]["enum"]
    assert served == ["organization", "users", "subscribed_skus"]  # this deployment's M365_DATASETS
    failures: list[str] = []
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations.append(operation.label)

        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(headers={"x-functions-key": KEY})

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all failures are reported
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    described = {f"{m.upper()} {path}" for path, item in document()["paths"].items() for m in item}
    # schemathesis leaves out the document's own path; test_description_is_valid_and_served_keyed covers it
    assert set(operations) == described - {"GET /openapi.json"}
    assert not failures, "\n".join(failures[:5])


def test_readme_and_function_docs_list_every_endpoint_and_function(indexed):
    from connector.cli.docgen import ROOT

    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "docs/function-app.md").read_text()
    for path, item in document()["paths"].items():
        for method in item:
            assert f"`{method.upper()} /api{path}" in readme, f"README's HTTP API table lacks {method.upper()} {path}"
            assert f"`{method.upper()} /api{path}" in guide, f"docs/function-app.md lacks {method.upper()} {path}"
    for name in indexed:
        assert f"| `{name}` |" in guide, f"docs/function-app.md's function table lacks {name}"
