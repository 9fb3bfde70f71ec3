"""``InferenceSession`` with onnxruntime's surface, so that ``import refrt as ort`` works."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from onnx import ModelProto

from . import executor, registry
from .errors import InputError, ModelError
from .graph import PlanContext, build_plan, load_model, opset_map
from .graph.load import is_ort_model
from .ops._kernels import TWINS
from .types import check_value, shape_of, type_string

NUMERICS_MODES = ("ort", "spec")
KERNEL_PATHS = ("numba", "twins")
KERNELS_ENV = "REFRT_KERNELS"           # read when a session is created, never at import
KERNELS_CONFIG = "refrt.kernels"        # SessionOptions.add_session_config_entry key


class GraphOptimizationLevel:
    """onnxruntime's levels (refrt's values are onnxruntime's; its own enum is accepted too).

    * ORT_DISABLE_ALL runs every node on its own on every run.
    * Above it refrt runs Constant nodes and nodes of constants once, when the session is built
      (see refrt/graph/fold.py), and some chains of nodes as one step (see refrt/fusion.py), both
      with bit-identical results and only when no hooks are attached (hooks see every node run).
    * ORT_ENABLE_EXTENDED and above also do what onnxruntime does to QDQ models there: each
      DequantizeLinear -> op -> QuantizeLinear unit becomes onnxruntime's quantized op
      (QLinearConv, QLinearMatMul, QLinearAdd, ...; see refrt/optimize/qdq.py). That changes
      results, by up to one quantization step, exactly as it does in onnxruntime: refrt then
      matches onnxruntime's default results bit for bit, and ORT_ENABLE_BASIC or
      ORT_DISABLE_ALL match onnxruntime at those levels. ``InferenceSession.optimized_model``
      is the graph run."""
    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class SessionOptions:
    """onnxruntime's SessionOptions, plus refrt's numerics switches.

    * ``numerics``: ``"ort"`` (default) reproduces onnxruntime's CPU results where the spec leaves a
      choice; ``"spec"`` follows the ONNX specification literally.
    * ``emulate_avx2_u8s8``: reproduce onnxruntime's AVX2 (no VNNI) u8 x s8 GEMM, whose int16
      saturation returns wrong sums for full-range int8 weights. Off by default (refrt is exact);
      ``refrt.host.ort_matching_options()`` says whether this machine's onnxruntime needs it.
    * ``max_tensor_bytes``: the most bytes one tensor whose size comes from the model or its data
      may take (a sparse tensor densified, ConstantOfShape/Expand/Tile/Range/Pad/Resize outputs);
      above it the node fails with a NodeError naming the bytes. None: half the machine's memory.
    * ``kernels``: ``"numba"`` runs the Numba kernels of ``kernels/``; ``"twins"`` runs each
      one's NumPy twin (``kernels/twins.py``) instead, the same bits, so that a debugger steps
      through the arithmetic in Python. None (default): the session config entry
      ``refrt.kernels``, else the environment variable ``REFRT_KERNELS`` (read when the session
      is created), else ``"numba"``. See :func:`kernel_path`.

    refrt uses ``graph_optimization_level`` (``ORT_DISABLE_ALL`` runs every node on its own;
    ``ORT_ENABLE_EXTENDED`` and above apply onnxruntime's QDQ fusions, see
    :class:`GraphOptimizationLevel`), ``optimized_model_filepath`` (the graph run is saved there),
    ``intra_op_num_threads`` (0, the default, means onnxruntime's default: the number of physical
    cores; onnxruntime's float GEMMs and DynamicQuantizeLSTM results depend on it, and refrt's
    "ort" numerics follow it),
    ``log_severity_level``, and ``enable_profiling`` with ``profile_file_prefix`` (a profile in
    onnxruntime's JSON format, written by ``InferenceSession.end_profiling()``; see
    ``refrt.profiling``). onnxruntime's other attributes are accepted, so that code written for
    onnxruntime runs, but a session built with one of them changed from its default warns that
    refrt does not implement it (``IGNORED``). Setting an attribute onnxruntime does not have
    raises AttributeError, as onnxruntime does.
    """

    # onnxruntime's attributes refrt accepts but does not act on, with their defaults
    IGNORED = {"enable_cpu_mem_arena": True, "enable_mem_pattern": True, "enable_mem_reuse": True,
               "execution_mode": 0, "execution_order": 0,
               "log_verbosity_level": 0, "logid": "",
               "use_deterministic_compute": False}
    _USED = ("graph_optimization_level", "intra_op_num_threads", "inter_op_num_threads",
             "log_severity_level", "numerics", "emulate_avx2_u8s8", "max_tensor_bytes", "kernels",
             "enable_profiling", "profile_file_prefix", "optimized_model_filepath")

    def __init__(self, **options):
        self.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.log_severity_level = 2
        self.numerics = "ort"
        self.emulate_avx2_u8s8 = False
        self.max_tensor_bytes = None     # refrt's limit on one tensor sized from data (None: half the RAM)
        self.kernels = None              # "numba" or "twins"; None: config entry, env, "numba"
        self.enable_profiling = False
        self.profile_file_prefix = "onnxruntime_profile_"
        self.optimized_model_filepath = ""   # where to save the graph refrt runs (optimized_model)
        self.config_entries: dict[str, str] = {}
        for k, v in self.IGNORED.items():
            setattr(self, k, v)
        for k, v in options.items():
            if k not in self._USED and k not in self.IGNORED:
                raise TypeError(f"unknown session option {k!r}")
            setattr(self, k, v)

    def __setattr__(self, name, value):
        if name not in self._USED and name not in self.IGNORED and name != "config_entries":
            raise AttributeError(f"SessionOptions has no attribute {name!r} (onnxruntime's "
                                 f"attributes and refrt's numerics and emulate_avx2_u8s8 only)")
        object.__setattr__(self, name, value)

    def add_session_config_entry(self, key: str, value: str) -> None:
        self.config_entries[key] = value

    def get_session_config_entry(self, key: str) -> str:
        return self.config_entries[key]

    def ignored_settings(self) -> dict:
        """The attributes refrt does not implement that differ from onnxruntime's defaults."""
        return {k: getattr(self, k) for k, default in self.IGNORED.items()
                if getattr(self, k) != default}


class RunOptions:
    """onnxruntime's RunOptions: ``terminate`` (set it, before or during a run, from any thread, to
    stop the run before its next node with a RunAborted error), ``logid`` (onnxruntime's run tag:
    a profiled run's ``model_run`` event carries it as ``args.run_tag``), ``log_severity_level``,
    ``log_verbosity_level``, ``only_execute_path_to_fetches`` (accepted; refrt runs every node of
    the plan, which gives the same outputs), run config entries, ``add_active_adapter`` (accepted
    and kept; refrt has no LoRA adapters); plus refrt's ``time_limit`` in seconds (None: no
    limit), also taken from the config entry ``refrt.time_limit_s``. onnxruntime's own RunOptions
    object is accepted by ``InferenceSession.run`` as well."""

    def __init__(self, **options):
        self.terminate = False
        self.log_severity_level = 2
        self.log_verbosity_level = 0
        self.logid = ""
        self.only_execute_path_to_fetches = False
        self.time_limit: float | None = None
        self.config_entries: dict[str, str] = {}
        self.active_adapters: list = []
        for k, v in options.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown run option {k!r}")
            setattr(self, k, v)

    def add_run_config_entry(self, key: str, value: str) -> None:
        self.config_entries[key] = value

    def get_run_config_entry(self, key: str) -> str:
        return self.config_entries[key]

    def add_active_adapter(self, adapter) -> None:
        self.active_adapters.append(adapter)


def kernel_path(options) -> str:
    """``"numba"`` or ``"twins"`` for a session built with ``options``: its ``kernels`` attribute
    when set, else its config entry ``refrt.kernels``, else the environment variable
    ``REFRT_KERNELS``, else ``"numba"``."""
    import os

    value = getattr(options, "kernels", None)
    source = "SessionOptions.kernels"
    if value is None:
        value = (getattr(options, "config_entries", None) or {}).get(KERNELS_CONFIG)
        source = f"session config entry {KERNELS_CONFIG!r}"
    if value is None:
        value = os.environ.get(KERNELS_ENV) or None
        source = f"environment variable {KERNELS_ENV}"
    if value is None:
        return "numba"
    value = str(value).strip().lower()
    if value not in KERNEL_PATHS:
        raise ValueError(f"{source} must be one of {KERNEL_PATHS}, not {value!r}")
    return value


def _guard(run_options):
    """The executor's RunGuard for these run options, or None when nothing can stop the run."""
    if run_options is None:
        return None
    limit = getattr(run_options, "time_limit", None)
    entries = getattr(run_options, "config_entries", None) or {}
    if limit is None and "refrt.time_limit_s" in entries:
        limit = float(entries["refrt.time_limit_s"])
    deadline = None if limit is None else time.monotonic() + float(limit)
    return executor.RunGuard(run_options, deadline)


@dataclass
class NodeArg:
    """An input or output description: ``.name``, ``.type`` ("tensor(float)"), ``.shape``."""
    name: str
    type: str
    shape: list


@dataclass
class ModelMetadata:
    producer_name: str = ""
    graph_name: str = ""
    domain: str = ""
    description: str = ""
    graph_description: str = ""
    version: int = 0
    custom_metadata_map: dict = field(default_factory=dict)


def _node_arg(vi) -> NodeArg:
    return NodeArg(vi.name, type_string(vi.type), shape_of(vi.type))


class InferenceSession:
    """Load a model (path, bytes or ModelProto), plan it once, run it many times."""

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None,
                 required_operators=None, **options):
        """``required_operators``: a reduced-operator config (path; see
        ``refrt.optimize.ops_config``): the session refuses a model with an op (or, when the
        config has types, an element type) it does not list, with an OperatorNotInConfigError
        naming the node, and imports only the op families the model needs."""
        self._required = required_operators
        self._options = _merge_options(sess_options, options)
        self._twins = kernel_path(self._options) == "twins"
        self._profiler = None
        if self._options.enable_profiling:
            from .profiling import Profiler

            self._profiler = Profiler(self._options.profile_file_prefix)
        token = registry.TENSOR_LIMIT.set(self._options.max_tensor_bytes)
        try:
            self._load(path_or_bytes, providers)
        finally:
            registry.TENSOR_LIMIT.reset(token)

    def _load(self, path_or_bytes, providers):
        prof = self._profiler
        started = prof.now() if prof else 0
        try:
            model, self._base_dir, blobs = load_model(path_or_bytes)
        except RecursionError:
            raise ModelError("the model is nested too deeply to read (subgraphs within subgraphs)") from None
        if prof:
            prof.event("Session", "model_loading_uri" if isinstance(path_or_bytes, (str, os.PathLike))
                       else "model_loading_array", started)
            started = prof.now()
        _check_versions(model)
        self._model = model
        self._blobs = blobs     # weights read apart from the proto; see the model property
        self._qdq = None        # onnxruntime's QDQ fusions applied (level >= EXTENDED); see optimized_model
        if (int(self._options.graph_optimization_level) >= GraphOptimizationLevel.ORT_ENABLE_EXTENDED
                and not is_ort_model(path_or_bytes)):    # .ort files are run as stored, as onnxruntime does
            from .optimize import qdq

            if qdq.has_qdq(model):
                self._qdq = qdq.fuse_qdq(model, blobs, weights_to_u8=self._weights_to_u8())
                model = self._qdq.model
        if self._required is not None:     # checked on the graph that runs
            self._check_required(model)
        self._hooks: list = []
        self._split = executor.NO_HOOKS
        if not model.opset_import:
            raise ModelError("the model declares no opset_import")
        pctx = PlanContext(opsets=opset_map(model.opset_import),
                           functions={(registry.canonical_domain(f.domain), f.name): f
                                      for f in model.functions},
                           options=self._options)
        if not model.graph.output:
            raise ModelError("the graph declares no outputs: there is nothing to compute")
        # constant nodes are run while planning: with the kernels the runs will use
        twins = TWINS.set(True) if self._twins else None
        try:
            self._plan = build_plan(model.graph, pctx, blobs=blobs)
        except RecursionError:
            raise ModelError("the model is nested too deeply to plan (subgraphs within subgraphs)") from None
        finally:
            if twins is not None:
                TWINS.reset(twins)
        inits = self._plan.initializers
        self._inputs = [vi for vi in model.graph.input if vi.name not in inits]
        self._overridable = [vi for vi in model.graph.input if vi.name in inits]
        self._declared = {vi.name: vi.type for vi in model.graph.input}
        self._providers = _providers(providers)
        if self._options.optimized_model_filepath:
            _save(self.optimized_model, self._options.optimized_model_filepath)
        if prof:
            prof.index_nodes(model.graph)
            prof.parameters = frozenset(inits)
            self._profiled = executor.split_hooks(self._hooks + [prof])
            prof.event("Session", "session_initialization", started)

    # ---- onnxruntime's description API
    def get_inputs(self) -> list[NodeArg]:
        return [_node_arg(vi) for vi in self._inputs]

    def get_outputs(self) -> list[NodeArg]:
        return [_node_arg(vi) for vi in self._model.graph.output]

    def get_overridable_initializers(self) -> list[NodeArg]:
        return [_node_arg(vi) for vi in self._overridable]

    def get_modelmeta(self) -> ModelMetadata:
        m = self._model
        return ModelMetadata(
            producer_name=m.producer_name, graph_name=m.graph.name, domain=m.domain,
            description=m.doc_string, graph_description=m.graph.doc_string,
            version=m.model_version,
            custom_metadata_map={p.key: p.value for p in m.metadata_props})

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def get_session_options(self) -> SessionOptions:
        return self._options

    def _check_required(self, model) -> None:
        from .errors import OperatorNotInConfigError, TypeNotInConfigError
        from .graph import required_ops

        config = required_ops.as_config(self._required)
        try:
            registry.load_families(required_ops.check_model(model, config))
        except OperatorNotInConfigError as e:
            if self._qdq is not None and not isinstance(e, TypeNotInConfigError):
                raise OperatorNotInConfigError(
                    e.node, e.op_type, e.domain, e.opset, e.since, config=e.config,
                    message=f"{e} (at this graph_optimization_level the session runs the QDQ model "
                            f"after onnxruntime's QDQ fusions: make the config with `refrt ops-config "
                            f"--level extended`, or run at ORT_ENABLE_BASIC)") from None
            raise

    def _weights_to_u8(self) -> bool:
        """onnxruntime's AVX2 precision mode (int8 QDQ weights made uint8): asked for with the
        config entry ``session.x64quantprecision=1`` and in effect where its u8 x s8 products
        saturate, which refrt reproduces with ``emulate_avx2_u8s8``."""
        return (self._options.config_entries.get("session.x64quantprecision") == "1"
                and bool(self._options.emulate_avx2_u8s8))

    @property
    def optimized_model(self):
        """The graph refrt runs: :attr:`model`, or at ``ORT_ENABLE_EXTENDED`` and above on a QDQ
        model the model after onnxruntime's QDQ fusions (:mod:`refrt.optimize.qdq`), which is what
        ``SessionOptions.optimized_model_filepath`` saves. refrt's own bit-identical fusions are
        not graph rewrites and do not show here."""
        if self._qdq is None:
            return self.model
        return _with_blobs(self._qdq.model, self._blobs)

    @property
    def model(self):
        """The loaded ModelProto (external data resolved). Large weights are read apart from
        the proto at load time; they are put back into it on the first access."""
        if self._blobs:
            self._model = _with_blobs(self._model, self._blobs)
            if self._qdq is not None:
                self._qdq.model = _with_blobs(self._qdq.model, self._blobs)
            self._blobs = {}
        return self._model

    # ---- hooks (tracing, intermediate capture, the debugger)
    def add_hook(self, hook) -> None:
        """Call ``hook(node, inputs, outputs)`` after every node (``hook.on_node`` for objects;
        an object's ``before_node(node, inputs)`` is called before it)."""
        self._hooks.append(hook)
        self._rehook()

    def remove_hook(self, hook) -> None:
        self._hooks.remove(hook)
        self._rehook()

    def _rehook(self) -> None:
        self._split = executor.split_hooks(self._hooks)
        if self._profiler is not None:     # the profiler times each node last, after the hooks
            self._profiled = executor.split_hooks(self._hooks + [self._profiler])

    # ---- profiling (onnxruntime's API)
    def end_profiling(self) -> str:
        """Write the profile (``SessionOptions.enable_profiling``) to
        ``<profile_file_prefix>_<date>_<time>.json`` in onnxruntime's format and return the file
        name; "" when profiling is off or the profile was already written."""
        return "" if self._profiler is None else self._profiler.write()

    def get_profiling_start_time_ns(self) -> int:
        """When profiling started (time.time_ns()), 0 when it is off."""
        return 0 if self._profiler is None else self._profiler.start_ns

    # ---- running
    def run(self, output_names, input_feed: dict, run_options=None) -> list:
        """Outputs as numpy arrays (lists for sequences, None for empty optionals).
        ``run_options`` (refrt's or onnxruntime's RunOptions): ``terminate`` set from another
        thread stops the run between two nodes; refrt's ``time_limit`` bounds it in seconds."""
        plan = self._plan
        run_started = self._profiler.now() if self._profiler is not None else 0
        if output_names is None:
            output_names = plan.output_names
        known = set(plan.output_names)
        for name in output_names:
            if name not in known:
                raise InputError(f"unknown output name {name!r}; the model's outputs are "
                                 f"{plan.output_names}")
        if not isinstance(input_feed, dict):
            raise InputError(f"input_feed must be a dict of name -> array, not "
                             f"{type(input_feed).__name__}")
        env = dict(plan.initializers)
        for name, value in input_feed.items():
            if name not in self._declared:
                raise InputError(f"unknown input {name!r}; the model's inputs are "
                                 f"{[vi.name for vi in self._inputs]}")
            env[name] = check_value(name, value, self._declared[name])
        missing = [vi.name for vi in self._inputs if vi.name not in input_feed]
        if missing:
            raise InputError(f"missing input(s) {missing}; the model needs "
                             f"{[_describe(vi) for vi in self._inputs]}")
        guard = _guard(run_options)
        token = executor.RUN_GUARD.set(guard)
        limit = registry.TENSOR_LIMIT.set(self._options.max_tensor_bytes)
        twins = TWINS.set(True) if self._twins else None
        try:
            if self._profiler is None:
                results = executor.run_plan(plan, env, self._split)
            else:
                results = self._profiled_run(plan, env, run_options, run_started)
        finally:
            executor.RUN_GUARD.reset(token)
            registry.TENSOR_LIMIT.reset(limit)
            if twins is not None:
                TWINS.reset(twins)
        by_name = dict(zip(plan.output_names, results))
        fed, given = _fed_ids(input_feed), set()
        return [_detach(by_name[n], fed, given) for n in output_names]

    def _profiled_run(self, plan, env, run_options, started: int):
        """The run as onnxruntime's ``model_run`` event (from ``started``: feeds checked too) with
        ``SequentialExecutor::Execute`` inside (the node loop); the profiler, a hook, records one
        event per node."""
        prof = self._profiler
        tag = getattr(run_options, "logid", "") if run_options is not None else ""
        executing = prof.now()
        results = executor.run_plan(plan, env, self._profiled)
        prof.event("Session", "SequentialExecutor::Execute", executing)
        prof.event("Session", "model_run", started, {"run_tag": tag} if tag else {})
        return results


def _detach(value, fed: set, given: set):
    """Outputs are the caller's own: they never alias the session's (read-only) weights, the
    caller's feeds (sequence elements included) or each other. Ops such as Identity, Reshape or
    Transpose may return their input or a view of it; two graph outputs may be one value."""
    if isinstance(value, (str, np.str_)) or (isinstance(value, np.ndarray) and value.dtype.kind in "US"):
        value = np.array(value, dtype=object)      # string tensors are object arrays, as in onnxruntime
    if isinstance(value, np.ndarray):
        # a view is returned as it is only when the array whose memory it views is one an op
        # made for this run: writable, owning its data, neither fed nor given out already
        root = _root(value)
        if (not value.flags.writeable or not root.flags.writeable or not root.flags.owndata
                or id(root) in fed or id(root) in given):
            value = value.copy()
            root = value
        given.add(id(root))
        return value
    if isinstance(value, list):
        return [_detach(v, fed, given) for v in value]
    return value


def _root(a: np.ndarray) -> np.ndarray:
    """The array whose memory ``a`` views (``a`` itself when it owns its data)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _fed_ids(feeds: dict) -> set:
    """ids of the fed arrays (sequence elements included) and of the arrays they view."""
    ids = set()
    for v in feeds.values():
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            ids.add(id(x))
            if isinstance(x, np.ndarray):
                ids.add(id(_root(x)))
    return ids


def _check_versions(model) -> None:
    """onnxruntime's rule: a model newer than the ONNX release refrt runs with is refused."""
    import onnx

    if model.ir_version > onnx.IR_VERSION:
        raise ModelError(f"the model's IR version is {model.ir_version}; refrt (with onnx "
                         f"{onnx.__version__}) reads up to {onnx.IR_VERSION}")
    newest = onnx.defs.onnx_opset_version()
    for o in model.opset_import:
        if registry.is_default_domain(o.domain) and o.version > newest:
            raise ModelError(f"the model imports opset {o.version} of the default domain; refrt "
                             f"(with onnx {onnx.__version__}) knows opsets up to {newest}")


def _with_blobs(model, blobs: dict):
    """``model`` with the weights read apart from it put back (a copy; ``model`` if none)."""
    if not blobs:
        return model
    full = ModelProto()
    full.CopyFrom(model)
    for t in full.graph.initializer:
        raw = blobs.get(t.name)
        if raw is not None:
            t.raw_data = raw.tobytes()
    return full


def _save(model, path: str) -> None:
    import onnx

    try:
        onnx.save(model, path)
    except OSError as e:
        raise ModelError(f"cannot write the optimized model to {path!r}: {e.strerror}") from e


def _describe(vi) -> str:
    shape = shape_of(vi.type)
    return f"{vi.name}: {type_string(vi.type)}{'' if shape is None else list(shape)}"


def _merge_options(sess_options, extra: dict) -> SessionOptions:
    opts = SessionOptions()
    if sess_options is not None:   # refrt's own, or onnxruntime's SessionOptions
        for k in (*SessionOptions._USED, *SessionOptions.IGNORED):
            if hasattr(sess_options, k):
                value = getattr(sess_options, k)
                if k in ("execution_mode", "execution_order", "graph_optimization_level"):
                    value = int(value)     # onnxruntime's enums
                setattr(opts, k, value)
        opts.config_entries.update(getattr(sess_options, "config_entries", {}) or {})
    for k, v in extra.items():
        if k not in SessionOptions._USED and k not in SessionOptions.IGNORED:
            raise TypeError(f"unknown session option {k!r}")
        setattr(opts, k, v)
    if opts.numerics not in NUMERICS_MODES:
        raise ValueError(f"numerics must be one of {NUMERICS_MODES}, not {opts.numerics!r}")
    ignored = opts.ignored_settings()
    if ignored:
        warnings.warn("refrt does not implement these onnxruntime session options and ignores "
                      f"them: {', '.join(f'{k}={v!r}' for k, v in ignored.items())}",
                      RuntimeWarning, stacklevel=3)
    return opts


def _providers(providers) -> list[str]:
    """onnxruntime's rule: providers it does not have are dropped with a warning, and the CPU
    provider runs. refrt runs everything on the CPU."""
    if not providers:
        return ["CPUExecutionProvider"]
    names = [p[0] if isinstance(p, (tuple, list)) else p for p in providers]
    others = [n for n in names if n != "CPUExecutionProvider"]
    if others:
        warnings.warn(f"refrt runs on the CPU only: {', '.join(map(str, others))} "
                      f"{'is' if len(others) == 1 else 'are'} not available; using "
                      "CPUExecutionProvider", RuntimeWarning, stacklevel=3)
    return ["CPUExecutionProvider"]


def run(model, feeds: dict, output_names=None, **options) -> list:
    """One-off: ``refrt.run(model, {"x": x})`` -> list of outputs."""
    return InferenceSession(model, **options).run(output_names, feeds)
