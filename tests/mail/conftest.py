"""Small builders for inline test messages."""
from __future__ import annotations

import pytest


def build(headers: dict[str, str] | list[tuple[str, str]] | None = None, body: str | bytes = "Hello\n",
          *, crlf: bool = False) -> bytes:
    """A raw message from header pairs and a body (bytes bodies are used as they are)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if not any(k.lower() == "from" for k, _ in pairs):
        pairs.insert(0, ("From", "Alice Customer <alice@customer.example>"))
    if not any(k.lower() == "to" for k, _ in pairs):
        pairs.insert(1, ("To", "support@msp.example"))
    head = "".join(f"{k}: {v}\n" for k, v in pairs).encode("utf-8")
    data = head + b"\n" + (body if isinstance(body, bytes) else body.encode("utf-8"))
    return data.replace(b"\n", b"\r\n") if crlf else data


@pytest.fixture
def make_mail():
    return build
