# sandboxd Python driver: one code context's interpreter.
#
# The sandbox agent writes this file into its private run directory and
# starts `python3 driver.py` through its spawn wrapper (so it runs in the
# sandbox's user cgroup). File descriptors:
#   0  /dev/null
#   1  stdout of the user's code (a pipe read by the agent)
#   2  stderr of the user's code (a pipe read by the agent)
#   3  requests from the agent (framed JSON)
#   4  replies to the agent (framed JSON)
#   5  acks from the agent: one byte per result or error frame
# A frame is a 4-byte big-endian length and that many bytes of JSON.
#
# Output and results reach the caller in the order they happened: before
# writing a frame the driver flushes stdout and stderr, and the agent
# drains those pipes before it hands the frame on; after a result or error
# frame the driver waits for the agent's ack, so nothing printed after the
# frame can be read before it.
#
# Requests:  {"type":"init","cwd":...,"env":{...}}     -> {"type":"inited"}
#            {"type":"run","code":...}                 -> result*, error?, done
# Replies:   {"type":"ready","version":...}            (once, at start)
#            {"type":"fatal","kind":"missing","message":...} (then exit)
#            {"type":"result","data":{mime: value},"main":bool}
#            {"type":"error","name":...,"value":...,"traceback":[...]}
#            {"type":"done","executionCount":N}
#
# SIGINT (sent by the agent when a run passes its timeout) raises
# KeyboardInterrupt in the running cell only; the interpreter and its state
# survive.

import os
import struct
import sys

REQ_FD, REP_FD, ACK_FD = 3, 4, 5
MAX_FRAME = 64 << 20
# The largest representation sent for one result; larger ones are dropped
# (the text form is cut instead) and the result is marked truncated.
MAX_REPR = 16 << 20

# User output is line-buffered, as on a terminal: a line is one write (and
# one event), and what is left is flushed before every frame.
sys.stdout.reconfigure(line_buffering=True)
sys.stderr.reconfigure(line_buffering=True)

# Children of user code must not inherit the protocol pipes.
os.set_inheritable(REQ_FD, False)
os.set_inheritable(REP_FD, False)
os.set_inheritable(ACK_FD, False)

import json  # noqa: E402


def _flush_user_streams():
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass


def send(msg):
    _flush_user_streams()
    data = json.dumps(msg, default=str).encode("utf-8", "surrogatepass")
    if len(data) > MAX_FRAME:
        data = json.dumps({"type": "error", "name": "OutputTooLarge",
                           "value": "a result was too large to send", "traceback": []}).encode()
    buf = memoryview(struct.pack(">I", len(data)) + data)
    while buf:
        n = os.write(REP_FD, buf)
        buf = buf[n:]
    if msg.get("type") in ("result", "error"):
        while True:
            try:
                os.read(ACK_FD, 1)  # b"" when the agent is gone: go on
                break
            except InterruptedError:
                continue


def _read_exact(n):
    chunks = []
    while n > 0:
        b = os.read(REQ_FD, min(n, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def recv():
    head = _read_exact(4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > MAX_FRAME:
        raise SystemExit("request frame too large")
    body = _read_exact(n)
    if body is None:
        return None
    return json.loads(body)


try:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from traitlets.config import Config
except ImportError as e:
    send({"type": "fatal", "kind": "missing",
          "message": "IPython is not installed for %s (%s)" % (sys.executable, e)})
    sys.exit(3)

import signal  # noqa: E402
import base64  # noqa: E402

# The driver's own directory must not shadow user modules.
if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = ""

_in_cell = False


def _on_sigint(signum, frame):
    __tracebackhide__ = True  # noqa: F841 (IPython leaves this frame out)
    if _in_cell:
        raise KeyboardInterrupt
    # Between cells an interrupt has nothing to stop.


signal.signal(signal.SIGINT, _on_sigint)


def _clip(value):
    """Bounds one representation; returns (value, truncated)."""
    if isinstance(value, str) and len(value) > MAX_REPR:
        return value[:MAX_REPR], True
    return value, False


def _wire(format_dict):
    data = {}
    truncated = False
    for mime, value in format_dict.items():
        if mime.startswith("image/") and isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(value).decode("ascii")
        if mime == "application/json":
            # JSON is sent as JSON, not as a string.
            try:
                raw = json.dumps(value)
            except (TypeError, ValueError):
                continue
            if len(raw) > MAX_REPR:
                truncated = True
                continue
            data[mime] = value
            continue
        if isinstance(value, (bytes, bytearray)):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            continue
        if len(value) > MAX_REPR:
            truncated = True
            if mime != "text/plain":
                continue
            value = value[:MAX_REPR]
        data[mime] = value
    return data, truncated


def publish(format_dict, main):
    data, truncated = _wire(format_dict)
    if data:
        msg = {"type": "result", "data": data, "main": main}
        if truncated:
            msg["truncated"] = True
        send(msg)


class Hook(DisplayHook):
    """The last expression's value becomes the main result."""

    def write_output_prompt(self):
        pass

    def write_format_data(self, format_dict, md_dict=None):
        publish(format_dict, True)

    def finish_displayhook(self):
        pass


class Publisher(DisplayPublisher):
    """display(...) and figures become results, in order."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        publish(data, False)

    def clear_output(self, wait=False):
        pass


# matplotlib: the inline backend (Agg underneath) sends every figure a cell
# shows, or leaves open, as a PNG result and closes it. It is chosen when
# user code first imports matplotlib, so contexts that never plot never
# pay for importing it; no environment variable leaks the choice to the
# user's subprocesses.
import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402


class _MatplotlibBackend(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "matplotlib":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_choose(module):
            exec_module(module)
            try:
                if importlib.util.find_spec("matplotlib_inline") is not None:
                    module.use("module://matplotlib_inline.backend_inline")
                else:
                    module.use("Agg")
            except Exception:
                pass

        spec.loader.exec_module = exec_and_choose
        return spec


sys.meta_path.insert(0, _MatplotlibBackend())

config = Config()
config.HistoryManager.enabled = False
config.InteractiveShell.colors = "NoColor"
config.InteractiveShell.xmode = "Context"
shell = InteractiveShell.instance(config=config, displayhook_class=Hook, display_pub_class=Publisher)


def _traceback_lines(etype, evalue, tb):
    try:
        stb = shell.InteractiveTB.structured_traceback(etype, evalue, tb)
        text = "\n".join(stb)
    except Exception:
        import traceback
        text = "".join(traceback.format_exception(etype, evalue, tb))
    return text.splitlines()


def _report_error(etype, evalue, tb):
    send({"type": "error", "name": etype.__name__ if etype else "Error",
          "value": str(evalue), "traceback": _traceback_lines(etype, evalue, tb)})


def _showtraceback(exc_tuple=None, filename=None, tb_offset=None, exception_only=False,
                   running_compiled_code=False):
    try:
        etype, evalue, tb = shell._get_exc_info(exc_tuple)
    except ValueError:
        return
    if exception_only or issubclass(etype, SyntaxError):
        tb = None
    _report_error(etype, evalue, tb)


def _showsyntaxerror(filename=None, running_compiled_code=False):
    etype, evalue, tb = sys.exc_info()
    _report_error(etype, evalue, None)


shell.showtraceback = _showtraceback
shell.showsyntaxerror = _showsyntaxerror
shell.showindentationerror = _showsyntaxerror


def run(code):
    global _in_cell
    try:
        _in_cell = True
        try:
            shell.run_cell(code, store_history=True, silent=False)
        finally:
            _in_cell = False
    except KeyboardInterrupt:
        # The interrupt came after the cell ended but before the flag was
        # cleared; the cell's own outcome was already reported.
        pass
    send({"type": "done", "executionCount": shell.execution_count - 1})


def init(req):
    cwd = req.get("cwd")
    if cwd:
        os.chdir(cwd)
    for k, v in (req.get("env") or {}).items():
        os.environ[k] = v
    send({"type": "inited"})


def main():
    send({"type": "ready", "version": sys.version.split()[0]})
    while True:
        req = recv()
        if req is None:
            return
        kind = req.get("type")
        if kind == "run":
            run(req.get("code", ""))
        elif kind == "init":
            init(req)


if __name__ == "__main__":
    main()
