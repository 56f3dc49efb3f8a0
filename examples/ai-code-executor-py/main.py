#!/usr/bin/env python3
"""The reference SDK's "Build an AI code executor" tutorial, on the sandboxd
Python SDK: take a question, have a model write Python for it, run the code
in a sandbox, and answer {success, question, code, output, error}.

    python3 main.py --question "What is the 10th Fibonacci number?"
    python3 main.py --code 'print(sum(range(101)))'
    python3 main.py --serve 8787        # POST /execute {"question": "..."}

With ANTHROPIC_API_KEY set, Claude writes the code (the Messages API over
urllib, no SDK needed). Without it, give the code yourself (``code`` in the
body, or --code), or the built-in Fibonacci program stands in for the model's
answer. The sandbox, not the model, is what makes running it safe. The daemon
is found through SANDBOX_URL and SANDBOX_TOKEN; the SDK comes from
``pip install ./sdk/python`` (or, in this repository, from sdk/python/src).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple

try:
    import sandboxd
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python", "src"))
    import sandboxd

DEFAULT_QUESTION = "What is the 10th Fibonacci number?"
DEFAULT_CODE = """def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

print(fibonacci(10))
"""

client = sandboxd.Client.from_env()


def generate_code(question: str, api_key: str) -> str:
    """Asks Claude for Python code answering the question, as the tutorial does."""
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{
            "role": "user",
            "content": f'Generate Python code to answer: "{question}"\n\nRequirements:\n'
                       "- Use only Python standard library\n- Print the result using print()\n"
                       "- Keep code simple and safe\n\nReturn ONLY the code, no explanations.",
        }],
    }
    req = urllib.request.Request(
        "https://api.anthropic.com/v1/messages", data=json.dumps(body).encode(), method="POST",
        headers={"x-api-key": api_key, "anthropic-version": "2023-06-01", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        msg = json.load(resp)
    first = (msg.get("content") or [{}])[0]
    text = first.get("text", "") if first.get("type") == "text" else ""
    return re.sub(r"^```(?:python)?\n|```\s*$", "", text)


def execute(question: Optional[str], code: Optional[str], api_key: Optional[str] = os.environ.get("ANTHROPIC_API_KEY")) -> Tuple[int, Dict[str, Any]]:
    """The tutorial's handler: returns (HTTP status, JSON answer)."""
    if not question and not code:
        return 400, {"error": "Question is required"}
    try:
        generated = code or (generate_code(question, api_key) if api_key else DEFAULT_CODE if question == DEFAULT_QUESTION else "")
        if not generated:
            return 500, {"error": "Failed to generate code (set ANTHROPIC_API_KEY, or send code)"}
        sandbox = client.sandbox("demo-user")
        sandbox.files.write("/tmp/code.py", generated)
        try:
            result = sandbox.exec("python3 /tmp/code.py", timeout=30)
        except sandboxd.TimeoutError as e:
            return 200, {"success": False, "question": question, "code": generated, "output": e.result.stdout if e.result else "", "error": "the code ran for more than 30 s and was killed"}
        return 200, {"success": result.success, "question": question, "code": generated, "output": result.stdout, "error": result.stderr}
    except sandboxd.SandboxError as e:
        return 500, {"error": "Internal server error", "message": e.message, "code": e.code}


class Handler(BaseHTTPRequestHandler):
    """POST /execute, as the tutorial's Worker."""

    def do_POST(self) -> None:
        if self.path != "/execute":
            return self._send(200, 'POST /execute with { "question": "your question" }')
        n = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self._send(400, {"error": "body is not JSON"})
        status, answer = execute(req.get("question"), req.get("code"))
        self._send(status, answer)

    def _send(self, status: int, body: Any) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--question")
    ap.add_argument("--code")
    ap.add_argument("--serve", type=int, metavar="PORT")
    args = ap.parse_args()
    if args.serve:
        print(f"listening on http://127.0.0.1:{args.serve}/execute", file=sys.stderr)
        ThreadingHTTPServer(("127.0.0.1", args.serve), Handler).serve_forever()
        return 0
    question = args.question or (None if args.code else DEFAULT_QUESTION)
    status, answer = execute(question, args.code)
    print(json.dumps(answer, indent=2))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
