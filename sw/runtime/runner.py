"""Compile a bundle for an accelerator and run it: the same code for every backend.

Matmul layers (Linear, and Conv2d after im2col on the host) run on the device; im2col,
pooling and flatten run on the host with the golden model's own functions. Consecutive
matmul layers form a *segment* that stays on the device: each layer reads its input rows
from one half of the activation banks and writes its output rows to the other half, and
only the segment's first input and last output cross the link. Batches are cut into chunks
of rows that fit a half. Weights, requantization parameters and thresholds of all layers
are loaded once (``load``); operand tables are rewritten before each layer that needs them.
"""

__all__ = ["CompileError", "LayerPlan", "Runner"]

import time
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError, DeviceRestarted
from .. import golden, nm_format
from . import layouts
from ...protocol import Mode, RunDescriptor, Space, encode_address


class CompileError(ConfigError):
    """The bundle does not fit or does not suit the accelerator; the message says which
    layer and what to change."""


@dataclass
class LayerPlan:
    """Where a matmul layer lives on the device and how it is tiled."""
    index: int
    layer: dict
    sparse: bool
    step: int
    k_steps: int
    a_stride: int
    n_tiles: int
    w_base: int
    group_base: int
    mode: int


def _ceil(a, b):
    return -(-a // b)


class Runner:
    """Runs a :class:`~sparqforge.sw.bundle.Bundle` on a
    :class:`~sparqforge.sw.runtime.link.Device`.

    Raises
    ------
    CompileError
        When a layer cannot run on this accelerator (too large, needs tables, N:M pattern
        or accumulator width it lacks).
    """

    def __init__(self, bundle, device):
        self.bundle = bundle
        self.device = device
        self.config = info = device.config
        self.plans = {}
        w_base = group_base = 0
        sparse_device = info.m != 0
        for index, layer in enumerate(bundle.layers):
            if layer["type"] != "matmul":
                continue
            where = f"Layer {layer['name']!r}"
            needs_tables = (layer.get("act_table") is not None
                            or layer.get("weight_table") is not None
                            or layer["output"] == "threshold")
            if needs_tables and not info.tables:
                raise CompileError(f"{where} uses power-exponent tables or thresholds; "
                                   f"generate the accelerator with tables")
            self._check_operands(layer, where)
            if layer["output"] == "threshold":
                count = layer["thresholds"].shape[1]
                if count > (1 << info.threshold_bits) - 1:
                    raise CompileError(f"{where} needs {count} thresholds per channel; the "
                                       f"threshold unit holds {(1 << info.threshold_bits) - 1}")
            sparsity = layer.get("sparsity")
            sparse = sparse_device and sparsity is not None and tuple(sparsity) == (info.n,
                                                                                 info.m)
            k, n = layer["in_features"], layer["out_features"]
            step = info.m if sparse else (info.n if sparse_device else 1)
            n_tiles = _ceil(n, info.cols)
            k_steps = _ceil(k, step)
            self._check_accumulator(layer, where)
            mode = ((Mode.SPARSE if sparse else 0)
                    | (Mode.THRESHOLD if layer["output"] == "threshold" else 0)
                    | (Mode.ACT_TABLE if layer.get("act_table") is not None else 0)
                    | (Mode.WEIGHT_TABLE if layer.get("weight_table") is not None else 0))
            self.plans[index] = LayerPlan(index, layer, sparse, step, k_steps,
                                          _ceil(k, info.cols), n_tiles, w_base, group_base,
                                          mode)
            w_base += n_tiles * k_steps
            group_base += n_tiles
        if w_base > info.w_depth:
            raise CompileError(f"The weights need {w_base} weight words; the accelerator holds "
                               f"{info.w_depth}: generate it with a larger weight memory")
        if group_base > info.groups:
            raise CompileError(f"The layers need {group_base} channel groups; the accelerator "
                               f"holds {info.groups}: generate it with more groups")
        for plan in self.plans.values():
            if max(plan.a_stride, plan.n_tiles) > info.act_depth // 2:
                raise CompileError(f"Layer {plan.layer['name']!r} rows need "
                                   f"{max(plan.a_stride, plan.n_tiles)} words; half a bank "
                                   f"holds {info.act_depth // 2}")
        self.cycles = 0
        self.runs = 0
        self.restarts = 0
        self._tables = (None, None)

    def _check_operands(self, layer, where):
        """Activation and weight operands must be the device's, judged from the arrays (the
        weights and tables a layer carries), never from what the bundle declares."""
        info = self.config
        if info.a_bits != golden.ACT_BITS:
            raise CompileError(f"{where} takes {golden.ACT_BITS}-bit activation codes; the "
                               f"accelerator's activations are {info.a_bits}-bit: generate "
                               f"it with a_bits={golden.ACT_BITS}")
        if layer.get("act_table") is not None:
            need = golden.signed_bits_for(0, int(np.max(layer["act_table"]))) - 1
            if need > info.a_bits:
                raise CompileError(f"{where}'s activation table holds {need}-bit operands; "
                                   f"the array multiplies {info.a_bits}-bit activations")
        w = np.asarray(layer["weight"], dtype=np.int64)
        if layer.get("weight_table") is not None:
            w = np.asarray(layer["weight_table"], dtype=np.int64)[w & 0xFF]
        need = golden.signed_bits_for(int(w.min(initial=0)), int(w.max(initial=0)))
        if need > info.w_bits:
            declared = layer.get("weight_bits")
            raise CompileError(f"{where}'s weights need {need}-bit signed operands (the bundle "
                               f"declares {declared}-bit weights); the array multiplies "
                               f"{info.w_bits}-bit weights: generate it with w_bits={need}")

    def _check_accumulator(self, layer, where):
        """The largest accumulator magnitude this layer can produce must fit the device."""
        w = np.asarray(layer["weight"], dtype=np.int64)
        if layer.get("weight_table") is not None:
            w = np.asarray(layer["weight_table"])[w & 0xFF]
        a_max = (int(np.max(layer["act_table"])) if layer.get("act_table") is not None
                 else (1 << self.config.a_bits) - 1)
        worst = int(np.abs(w).sum(axis=1).max()) * a_max
        if worst >= 1 << (self.config.acc_bits - 1):
            raise CompileError(f"{where} can reach accumulators of {worst}; the accelerator's "
                               f"{self.config.acc_bits}-bit accumulator cannot hold them: "
                               f"generate it with a larger max depth")

    # -- loading ------------------------------------------------------------------------
    def weight_words(self, plan):
        """The layer's weight beats as device words ``[n_tiles * k_steps, weight_bytes]``."""
        info, layer = self.config, plan.layer
        cols = info.cols
        w = np.asarray(layer["weight"], dtype=np.int64)
        n, k = w.shape
        padded = np.zeros((plan.n_tiles * cols, plan.k_steps * plan.step), dtype=np.int64)
        padded[:n, :k] = w
        if info.m == 0:
            values = padded.reshape(plan.n_tiles, cols, plan.k_steps).transpose(0, 2, 1)
            indices = np.zeros_like(values)
        elif plan.sparse:
            vals, idx = nm_format.compress(padded, info.n, info.m)
            shape = (plan.n_tiles, cols, plan.k_steps, info.n)
            values = vals.reshape(shape).transpose(0, 2, 1, 3)
            indices = idx.reshape(shape).transpose(0, 2, 1, 3)
        else:
            values = padded.reshape(plan.n_tiles, cols, plan.k_steps, info.n) \
                .transpose(0, 2, 1, 3)
            indices = np.broadcast_to(np.arange(info.n), values.shape)
        beats = plan.n_tiles * plan.k_steps
        return layouts.pack_weight_words(values.reshape(beats, cols, -1),
                                         np.asarray(indices).reshape(beats, cols, -1), info)

    def load(self, *, restarts=3):
        """Write every layer's weights, requantization parameters and thresholds (again
        from the start after the device opened anew, when it restarts meanwhile).

        Raises
        ------
        DeviceRestarted
            When the device restarts more than ``restarts`` times in all.
        """
        try:
            self._load()
        except DeviceRestarted:
            if self.restarts >= restarts:
                raise
            self.restarts += 1
            self._reload(restarts)

    def _load(self):
        self._tables = (None, None)
        info = self.config
        for plan in self.plans.values():
            layer = plan.layer
            self.device.write(Space.WEIGHT, plan.w_base, self.weight_words(plan))
            n = layer["out_features"]
            for nt in range(plan.n_tiles):
                group = plan.group_base + nt
                lanes = slice(nt * info.cols, min((nt + 1) * info.cols, n))
                count = lanes.stop - lanes.start
                if layer["output"] == "requant":
                    records = layouts.pack_requant(
                        layer["bias"][lanes], layer["multiplier"][lanes],
                        layer["shift"][lanes], layer["zero_point"][lanes],
                        layer["relu"][lanes])
                    self.device.write(Space.REQUANT,
                                      encode_address(Space.REQUANT, info, group=group), records)
                else:
                    full = info.thresholds
                    t = np.full((count, full), (1 << 31) - 1, dtype=np.int64)
                    t[:, :layer["thresholds"].shape[1]] = layer["thresholds"][lanes]
                    for lane in range(count):
                        address = encode_address(Space.THRESHOLD, info, group=group, lane=lane)
                        words = t[lane].astype("<i4").view(np.uint8).reshape(full, 4)
                        self.device.write(Space.THRESHOLD, address, words)

    def _set_tables(self, layer):
        act, weight = layer.get("act_table"), layer.get("weight_table")
        current_act, current_weight = self._tables
        if act is not None and (current_act is None or not np.array_equal(act, current_act)):
            self.device.write(Space.ACT_TABLE, 0, np.asarray(act, dtype=np.int64)
                              .astype(np.uint8).reshape(256, 1))
            current_act = act
        if weight is not None and (current_weight is None
                                   or not np.array_equal(weight, current_weight)):
            self.device.write(Space.WEIGHT_TABLE,
                              encode_address(Space.WEIGHT_TABLE, self.config, all=1),
                              (np.asarray(weight, dtype=np.int64) & 0xFF).astype(np.uint8)
                              .reshape(256, 1))
            current_weight = weight
        self._tables = (current_act, current_weight)

    # -- running ------------------------------------------------------------------------
    def _segments(self):
        """Split the layer list into host operations and device segments."""
        items, segment = [], []
        for index, layer in enumerate(self.bundle.layers):
            if layer["type"] == "matmul":
                if layer.get("conv") and segment:
                    items.append(("device", segment))
                    segment = []
                segment.append(index)
            else:
                if segment:
                    items.append(("device", segment))
                    segment = []
                items.append(("host", index))
        if segment:
            items.append(("device", segment))
        return items

    def _write_rows(self, rows, base, stride):
        info = self.config
        padded_rows = _ceil(len(rows), info.rows) * info.rows
        data = np.zeros((padded_rows, stride * info.cols), dtype=np.uint8)
        data[:len(rows), :rows.shape[1]] = rows
        per_bank = data.reshape(-1, info.rows, stride, info.cols).transpose(1, 0, 2, 3)
        for bank in range(info.rows):
            self.device.write(Space.ACT, encode_address(Space.ACT, info, bank=bank, word=base),
                              per_bank[bank].reshape(-1, info.cols))

    def _read_rows(self, count, base, stride, width):
        info = self.config
        m_tiles = _ceil(count, info.rows)
        banks = [self.device.read_act(encode_address(Space.ACT, info, bank=bank, word=base),
                                      m_tiles * stride)
                 .reshape(m_tiles, stride * info.cols) for bank in range(info.rows)]
        rows = np.stack(banks, axis=1).reshape(m_tiles * info.rows, stride * info.cols)
        return rows[:count, :width].astype(np.int64)

    def _run_segment(self, indices, x):
        info = self.config
        plans = [self.plans[i] for i in indices]
        half = info.act_depth // 2
        widest = max(max(p.a_stride, p.n_tiles) for p in plans)
        chunk = info.rows * (half // widest)
        outputs = []
        for start in range(0, len(x), chunk):
            rows = x[start:start + chunk]
            m_tiles = _ceil(len(rows), info.rows)
            self._write_rows(rows, 0, plans[0].a_stride)
            src = 0
            for plan in plans:
                dst = half - src
                self._set_tables(plan.layer)
                descriptor = RunDescriptor(
                    m_tiles=m_tiles, n_tiles=plan.n_tiles, k_steps=plan.k_steps, a_base=src,
                    a_stride=plan.a_stride, step=plan.step, mode=plan.mode,
                    w_base=plan.w_base, out_base=dst, out_stride=plan.n_tiles,
                    group_base=plan.group_base)
                # Generous: a stalled or broken device times out instead of hanging.
                expected = m_tiles * plan.n_tiles * (plan.k_steps + info.rows + 16)
                self.cycles += self.device.run(descriptor, cycles=64 * expected + 100_000)
                self.runs += 1
                src = dst
            last = plans[-1]
            outputs.append(self._read_rows(len(rows), src, last.n_tiles,
                                           last.layer["out_features"]))
        return np.concatenate(outputs)

    def infer(self, codes, *, batch=None, progress=None, restarts=3):
        """Output codes ``[B, classes]`` for input codes ``[B, ...]`` (as from
        :meth:`Bundle.quantize_input`). ``progress(done, total)`` is called per batch.

        A device that restarts during a batch (its session changes: power cycle,
        reconfiguration, reset) has lost what :meth:`load` wrote: the batch is run again
        after the device is opened and loaded anew, at most ``restarts`` times in all.

        Raises
        ------
        DeviceRestarted
            When the device restarts more than ``restarts`` times.
        LinkError
            When the link fails.
        """
        codes = np.asarray(codes, dtype=np.int64)
        total = len(codes)
        batch = batch or total
        outputs = []
        for start in range(0, total, batch):
            while True:
                try:
                    outputs.append(self._infer_batch(codes[start:start + batch]))
                    break
                except DeviceRestarted:
                    if self.restarts >= restarts:
                        raise
                    self.restarts += 1
                    self._reload(restarts)
            if progress is not None:
                progress(min(start + batch, total), total)
        return np.concatenate(outputs)

    def _reload(self, restarts):
        """Open the restarted device and load it again (it may restart meanwhile)."""
        while True:
            try:
                if self.device.open().config != self.config:
                    raise ConfigError("The device came back with another configuration; "
                                      "compile the bundle for it again")
                self._load()
                return
            except DeviceRestarted:
                if self.restarts >= restarts:
                    raise
                self.restarts += 1

    def _infer_batch(self, x):
        for kind, item in self._segments():
            if kind == "host":
                layer = self.bundle.layers[item]
                if layer["type"] == "maxpool":
                    x = golden.max_pool(x, kernel=layer["kernel"], stride=layer["stride"])
                elif layer["type"] == "avgpool":
                    x = golden.avg_pool(x, kernel=layer["kernel"], stride=layer["stride"])
                else:
                    x = golden.flatten_nchw(x) if x.ndim == 4 else x.reshape(len(x), -1)
                continue
            first = self.bundle.layers[item[0]]
            conv = first.get("conv")
            images = len(x)
            if conv:
                x = golden.im2col(x, kernel=conv["kernel"], stride=conv["stride"],
                                  padding=conv["padding"], pad_code=first["pad_code"])
            else:
                x = x.reshape(images, -1)
            x = self._run_segment(item, x)
            last = self.bundle.layers[item[-1]]
            if last.get("conv"):
                x = x.reshape(images, last["conv"]["out_height"], last["conv"]["out_width"], -1)
        return x


def progress_bar(label, stream=None):
    """A text progress callback: ``label [#####.....] done/total  rate/s``."""
    import sys
    stream = stream or sys.stderr
    start = time.monotonic()

    def update(done, total):
        width = 30
        filled = int(width * done / max(total, 1))
        rate = done / max(time.monotonic() - start, 1e-9)
        stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                     f"{rate:.1f}/s")
        if done >= total:
            stream.write("\n")
        stream.flush()
    return update
