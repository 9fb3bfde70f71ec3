"""``TensorQuantOverrides``: per-tensor choices that win over the global settings.

    extra_options={"TensorQuantOverrides": {
        "conv1_out": [{"quant_type": QuantType.QUInt16, "symmetric": True}],     # one tensor
        "fc.weight": [{"axis": 0, "symmetric": True}],                           # per channel
        "logits":    [{"scale": np.float32(0.05), "zero_point": np.uint8(128)}],  # fixed params
    }}

Each value is a list of dicts: one dict for per-tensor overrides, or (with an ``axis`` in the first
dict) one dict for all channels or one per channel. Keys: ``quant_type``, ``scale`` and
``zero_point`` (together), ``symmetric``, ``reduce_range`` (initializers only), ``rmin`` and
``rmax``, ``axis``. onnxruntime's ``convert`` (mixed-precision boundaries) is not implemented.
"""

from __future__ import annotations

from .options import QuantType, as_quant_type

_KEYS = {"quant_type", "scale", "zero_point", "symmetric", "reduce_range", "rmin", "rmax", "axis"}
_NOT_WITH_SCALE = {"symmetric", "reduce_range", "rmin", "rmax"}


class TensorQuantOverrides:
    def __init__(self, raw: dict | None):
        self.raw = {name: [dict(d) for d in entries] for name, entries in (raw or {}).items()}
        for entries in self.raw.values():
            for d in entries:
                if "quant_type" in d:
                    d["quant_type"] = as_quant_type(d["quant_type"], "override quant_type")

    def __bool__(self):
        return bool(self.raw)

    def __contains__(self, name):
        return name in self.raw

    def entries(self, name: str) -> list[dict]:
        return self.raw.get(name) or []

    def is_per_channel(self, name: str) -> bool:
        entries = self.entries(name)
        return bool(entries) and "axis" in entries[0]

    def per_tensor(self, name: str) -> dict:
        """The per-tensor overrides of ``name`` ({} if none)."""
        entries = self.entries(name)
        if entries and "axis" in entries[0]:
            raise ValueError(f"tensor {name!r} has per-channel overrides where per-tensor ones "
                             f"were expected")
        return entries[0] if entries else {}

    def fixes_scale_zp(self, name: str) -> bool:
        entries = self.entries(name)
        return bool(entries) and "scale" in entries[0] and "zero_point" in entries[0]

    def quant_types(self) -> set[QuantType]:
        return {d["quant_type"] for entries in self.raw.values() for d in entries
                if "quant_type" in d}

    def validate(self, initializers: dict, tensor_names) -> None:
        """Raise ValueError for overrides onnxruntime would reject (refrt checks every entry)."""
        for name, entries in self.raw.items():
            if name not in initializers and name not in tensor_names:
                raise ValueError(f"tensor {name!r} in TensorQuantOverrides is not in the model")
            if not isinstance(entries, list):
                raise ValueError(f"TensorQuantOverrides[{name!r}] must be a list of dicts")
            if not entries or not entries[0]:
                continue
            for i, d in enumerate(entries):
                if not isinstance(d, dict):
                    raise ValueError(f"TensorQuantOverrides[{name!r}][{i}] is not a dict")
                if "convert" in d:
                    raise NotImplementedError(f"TensorQuantOverrides[{name!r}]: 'convert' "
                                              f"(mixed-precision boundaries) is not implemented")
                unknown = set(d) - _KEYS
                if unknown:
                    raise ValueError(f"TensorQuantOverrides[{name!r}]: unknown key(s) "
                                     f"{sorted(unknown)}")
                if ("scale" in d) != ("zero_point" in d):
                    raise ValueError(f"TensorQuantOverrides[{name!r}]: give both 'scale' and "
                                     f"'zero_point' or neither")
                if "scale" in d and _NOT_WITH_SCALE & set(d):
                    raise ValueError(f"TensorQuantOverrides[{name!r}]: "
                                     f"{sorted(_NOT_WITH_SCALE & set(d))} cannot be combined "
                                     f"with 'scale' and 'zero_point'")
            first = entries[0]
            if len(entries) > 1 or "axis" in first:
                self._validate_per_channel(name, entries, initializers)
            elif "reduce_range" in first and name not in initializers:
                raise ValueError(f"TensorQuantOverrides[{name!r}]: 'reduce_range' only applies "
                                 f"to initializers")

    @staticmethod
    def _validate_per_channel(name, entries, initializers):
        if name not in initializers:
            raise ValueError(f"tensor {name!r} has per-channel overrides but is not an "
                             f"initializer")
        first = entries[0]
        if first.get("axis") is None:
            raise ValueError(f"per-channel overrides of {name!r} need an 'axis' in the first "
                             f"dict")
        dims = list(initializers[name].dims)
        axis = first["axis"] + len(dims) if first["axis"] < 0 else first["axis"]
        if not 0 <= axis < len(dims):
            raise ValueError(f"override axis {first['axis']} is out of range for {name!r} "
                             f"(rank {len(dims)})")
        if len(entries) > 1 and len(entries) != dims[axis]:
            raise ValueError(f"{name!r} has {dims[axis]} channels along axis {axis} but "
                             f"{len(entries)} override dicts")
        if ("rmin" in first) != ("rmax" in first):
            raise ValueError(f"TensorQuantOverrides[{name!r}]: give both 'rmin' and 'rmax'")
        for i, d in enumerate(entries[1:], start=1):
            for key in ("quant_type", "symmetric", "reduce_range"):
                if key in d and d[key] != first.get(key):
                    raise ValueError(f"TensorQuantOverrides[{name!r}][{i}]: every channel must "
                                     f"use the same {key!r} as the first")
            if "scale" in first and "scale" not in d:
                raise ValueError(f"TensorQuantOverrides[{name!r}][{i}]: scale/zero_point must "
                                 f"be given for every channel")
            if "rmin" in first and "rmin" not in d:
                raise ValueError(f"TensorQuantOverrides[{name!r}][{i}]: rmin/rmax must be "
                                 f"given for every channel")
