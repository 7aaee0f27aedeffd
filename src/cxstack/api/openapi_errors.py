"""Answers the framework gives before a route runs, written into the OpenAPI schema so that it is true."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

# FastAPI answers 400 "There was an error parsing the body" for a JSON body that is not UTF-8 (a body that is
# UTF-8 but not JSON is a 422). Found by tests/test_fuzz_api.py.
UNDECODABLE_BODY = {"description": "the body is not text (not UTF-8); nothing stored"}


def document_body_errors(api: FastAPI) -> None:
    """Every operation that reads a JSON body documents the 400 for an undecodable one."""

    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = generate()  # FastAPI's own, cached on the app: amended once, in place
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    content = operation.get("requestBody", {}).get("content", {})
                    if "application/json" in content:
                        operation.setdefault("responses", {}).setdefault("400", UNDECODABLE_BODY)
        return generate()

    api.openapi = openapi  # type: ignore[method-assign]
