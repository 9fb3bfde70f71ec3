"""Candidates: the runtimes the kit tests against refrt.

A candidate is named by a string, so that a child process can build it too:

``onnxruntime``                 onnxruntime's CPU provider at its default level (all optimizations)
``onnxruntime:LEVEL``           LEVEL one of ``disable``, ``basic``, ``extended``, ``all``
``onnxruntime:LEVEL@PROVIDER``  another execution provider
``refrt`` / ``refrt:ort`` / ``refrt:spec``   refrt itself (``refrt`` is "spec" numerics)
``onnx.reference``              onnx's reference evaluator
``backend:MODULE:CLASS``        an ``onnx.backend.base.Backend`` subclass (``prepare(model).run``)
``MODULE:FUNCTION``             ``FUNCTION(model_bytes, feeds) -> list of outputs``

:class:`Isolated` runs a candidate in a child process that it restarts when the candidate kills
it (a segfault, SIGFPE, an abort) or hangs: such a case becomes a ``crash`` finding and the run
goes on.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading

import numpy as np

__all__ = ["Candidate", "make_candidate", "Isolated", "CandidateCrash", "CandidateError",
           "max_opset"]

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
           "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class CandidateError(Exception):
    """The candidate raised: ``type_name`` and ``message`` are its exception's."""

    def __init__(self, type_name: str, message: str):
        self.type_name, self.message = type_name, message
        super().__init__(f"{type_name}: {message}")


class CandidateCrash(Exception):
    """The candidate's process died or stopped answering."""


class Candidate:
    """A runtime under test: ``run(model_bytes, feeds) -> list of outputs``."""

    def __init__(self, spec: str, run, opset_limit: int | None = None):
        self.spec, self._run, self.opset_limit = spec, run, opset_limit

    @property
    def name(self) -> str:
        return self.spec

    def run(self, model: bytes, feeds: dict) -> list:
        try:
            out = self._run(model, {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                    for k, v in feeds.items()})
        except Exception as e:   # noqa: BLE001 -- any failure of the candidate is a finding
            raise CandidateError(type(e).__name__, str(e)) from e
        return list(out)

    def close(self) -> None:
        pass


def _ort(level: str, provider: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    opts.log_severity_level = 3

    def run(model, feeds):
        sess = ort.InferenceSession(model, opts, providers=[provider])
        return sess.run(None, feeds)
    return run


def _refrt(numerics: str):
    from .strategies import run_refrt

    def run(model, feeds):
        return run_refrt(model, feeds, numerics=numerics)
    return run


def _onnx_reference():
    from onnx.reference import ReferenceEvaluator

    def run(model, feeds):
        return ReferenceEvaluator(model).run(None, feeds)
    return run


def _backend(module: str, cls: str):
    backend = getattr(importlib.import_module(module), cls)

    def run(model, feeds):
        import onnx
        m = onnx.load_from_string(model)
        inits = {t.name for t in m.graph.initializer}
        names = [i.name for i in m.graph.input if i.name not in inits]
        return backend.prepare(m, "CPU").run([feeds[n] for n in names if n in feeds])
    return run


def make_candidate(spec: str) -> Candidate:
    """The candidate a spec string names (see the module's docstring)."""
    head, _, rest = spec.partition(":")
    if head == "onnxruntime":
        level, _, provider = (rest or "all").partition("@")
        if level not in _LEVELS:
            raise ValueError(f"candidate {spec!r}: optimization level must be one of "
                             f"{', '.join(_LEVELS)}")
        return Candidate(spec, _ort(level, provider or "CPUExecutionProvider"),
                         opset_limit=max_opset())
    if head == "refrt":
        numerics = rest or "spec"
        if numerics not in ("ort", "spec"):
            raise ValueError(f"candidate {spec!r}: refrt numerics are 'ort' or 'spec'")
        return Candidate(spec, _refrt(numerics))
    if spec == "onnx.reference":
        return Candidate(spec, _onnx_reference())
    if head == "backend":
        module, _, cls = rest.rpartition(":")
        if not module or not cls:
            raise ValueError(f"candidate {spec!r}: expected backend:MODULE:CLASS")
        return Candidate(spec, _backend(module, cls))
    module, _, fn = spec.rpartition(":")
    if not module or not fn:
        raise ValueError(f"unknown candidate {spec!r}: use onnxruntime[:LEVEL][@PROVIDER], refrt[:ort|"
                         f"spec], onnx.reference, backend:MODULE:CLASS or MODULE:FUNCTION")
    return Candidate(spec, getattr(importlib.import_module(module), fn))


_MAX_OPSET: dict = {}


def max_opset() -> int:
    """The newest default-domain opset the installed onnxruntime loads (probed once)."""
    if "ort" not in _MAX_OPSET:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        best = 7
        for v in range(onnx.defs.onnx_opset_version(), 6, -1):
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", v)])
            m.ir_version = min(m.ir_version, 10)
            try:
                ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            except Exception:   # noqa: BLE001 -- this opset is too new for it
                continue
            best = v
            break
        _MAX_OPSET["ort"] = best
    return _MAX_OPSET["ort"]


# -- running a candidate in a child process ----------------------------------------------------------

def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


class Isolated:
    """``candidate`` (a spec string) run in a child process, restarted after a crash or a hang."""

    def __init__(self, spec: str, timeout: float = 60.0):
        self.spec, self.timeout = spec, timeout
        self.opset_limit = max_opset() if spec.startswith("onnxruntime") else None
        self._proc = None

    @property
    def name(self) -> str:
        return self.spec

    def _start(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] +
                                            [env.get("PYTHONPATH", "")])
        self._proc = subprocess.Popen([sys.executable, "-m", "refrt.testing.candidates", self.spec],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, env=env)
        status = self._read(120.0)
        if status != "ready":
            self.close()
            raise RuntimeError(f"candidate {self.spec!r} could not start: {status}")

    def _read(self, timeout: float):
        box: list = []

        def reader():
            try:
                box.append(("ok", _recv(self._proc.stdout)))
            except Exception as e:   # noqa: BLE001 -- EOF: the child died
                box.append(("eof", e))
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            self.close()
            raise CandidateCrash(f"no answer within {timeout:g} s (hang); the child was killed")
        kind, value = box[0]
        if kind == "eof":
            code = self._proc.wait()
            self._proc = None
            if code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = f"signal {-code}"
                raise CandidateCrash(f"the process died with {name}")
            raise CandidateCrash(f"the process exited with status {code}")
        return value

    def run(self, model: bytes, feeds: dict) -> list:
        if self._proc is None:
            self._start()
        try:
            _send(self._proc.stdin, (model, feeds))
        except (BrokenPipeError, OSError):
            self.close()
            raise CandidateCrash("the process died before the case was sent")
        kind, payload = self._read(self.timeout)
        if kind == "error":
            raise CandidateError(*payload)
        return payload

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._proc.kill()
                self._proc.wait(5)
            except Exception:   # noqa: BLE001 -- already gone
                pass
            self._proc = None

    def __del__(self):
        self.close()


def _serve(spec: str) -> None:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr                  # stray prints must not corrupt the channel
    try:
        cand = make_candidate(spec)
    except Exception as e:   # noqa: BLE001
        _send(out, f"{type(e).__name__}: {e}")
        return
    _send(out, "ready")
    while True:
        try:
            model, feeds = _recv(sys.stdin.buffer)
        except EOFError:
            return
        try:
            _send(out, ("ok", cand.run(model, feeds)))
        except CandidateError as e:
            _send(out, ("error", (e.type_name, e.message)))


if __name__ == "__main__":
    _serve(sys.argv[1])
