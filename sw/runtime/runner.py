"""Compile a bundle for an accelerator and run it: the same code for every backend.

A bundle is a graph of layers (``docs/bundle.md``). Matmul layers (Linear and Conv2d) run on
the device; on an accelerator with the window walk so do convolutions, depthwise
convolutions, average and global average pooling and residual adds (image segments,
:mod:`~sparqforge.sw.runtime.windows`, :mod:`~sparqforge.sw.runtime.image_segments`,
:mod:`~sparqforge.sw.runtime.residual`); everything else (clamps, max pooling,
concatenation, and the layers an accelerator lacks the units for) runs on the host with the
golden model's own functions. A chain of matrix layers in which each layer reads only the
one before it, and is that one's only reader, forms a *segment* that stays on the device:
each layer reads its input rows from one half of the activation banks and writes its
output rows to the other half, and only the segment's first input and last output cross the
link; batches are cut into chunks of rows that fit a half. Image segments are graphs whose
images live in the banks (spilled to the host only when the banks are full). A convolution
the walk cannot run is lowered by im2col on the host and starts a segment of its own (its
rows are image positions). Weights, requantization parameters and thresholds of all device
layers are loaded once (``load``) when they fit the device together (``resident``);
otherwise each segment's are written before it runs (streamed), and a layer larger than the
device alone runs in parts of channel tiles, each written before its RUN. Operand tables
are rewritten before each layer that needs them, add tables when they hold another add's.
Tensors between segments and host layers are kept by layer name and dropped once no later
item reads them.
"""

__all__ = ["CompileError", "LayerPlan", "Runner", "layer_macs"]

from dataclasses import replace

import numpy as np

from ...errors import ConfigError, DeviceRestarted
from ...protocol import Mode, Space, encode_address
from .. import golden, nm_format
from . import image_segments, layouts, program, residual, windows
from .planning import (CompileError, LayerPlan, ceil_div as _ceil, check_accumulator,
                       check_operands, layer_macs, matrix_run, segment_io, segments)


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
        self.device = program.QueuedRuns(device, self._account)
        self.config = info = device.config
        self.plans = {}
        self.graph = golden.layer_graph(bundle.layers)
        w_base = group_base = 0
        #: The shapes ``(h, w, c)`` of the image tensors, by name.
        self.images_shapes = windows.image_shapes(bundle, self.graph)
        for index, layer in enumerate(bundle.layers):
            kind, source = layer["type"], self.graph[index][1][0]
            if kind in ("global_avgpool", "avgpool") and source in self.images_shapes:
                layer = windows.pool_layer(layer, self.images_shapes[source])
            elif kind == "add":
                # Residual adds: through the add tables when both inputs are images.
                plan = residual.add_plan(self, index, layer)
                if plan is not None:
                    self.plans[index] = plan
                    w_base += plan.n_tiles * plan.k_steps
                    group_base += plan.n_tiles
                continue
            elif kind != "matmul":
                continue
            if golden.is_depthwise(layer):
                # Depthwise convolutions and pooling: on the window walk when the device has
                # it and the layer suits it; on the host otherwise (they always can run there).
                if not info.depthwise:
                    continue
                try:
                    plan = self._plan(index, layer)
                except CompileError:
                    continue
                if plan.step != 1 or not plan.image:
                    continue
            else:
                plan = self._plan(index, layer)
            self.plans[index] = plan
            w_base += plan.n_tiles * plan.k_steps
            group_base += plan.n_tiles
        #: Whether every layer's weights and parameters stay in the device at once (loaded
        #: by :meth:`load`); else each device segment's are written before it runs.
        self.resident = w_base <= info.w_depth and group_base <= info.groups
        for plan in self.plans.values():
            if not plan.image and max(plan.a_stride, plan.n_tiles) > info.act_depth // 2:
                raise CompileError(f"Layer {plan.layer['name']!r} rows need "
                                   f"{max(plan.a_stride, plan.n_tiles)} words; half a bank "
                                   f"holds {info.act_depth // 2}")
        self.cycles = 0
        self.runs = 0
        #: Image words read back to the host to make room in the banks (and written again),
        #: the times the images a layer reads were laid out afresh, and the residual blocks
        #: run in bands of rows instead (:mod:`~sparqforge.sw.runtime.image_segments`).
        self.spilled_words = 0
        self.compactions = 0
        self.banded_blocks = 0
        self.restarts = 0
        self.images = 0
        self.layer_cycles = [0] * len(bundle.layers)
        self._tables = (None, None)
        #: The order of work: ``("host", index)`` and ``("device", [indices])`` items.
        self.schedule, self.virtual = segments(bundle.layers, self.graph, self.plans,
                                               self.images_shapes)
        self._place()
        self._loaded = None
        self._weight_cache = {}
        #: Which add table each residual add uses, and what each holds.
        self.add_tables = residual.AddTables(self.device, self.plans)
        #: What each item reads from the host's tensors: a host layer its inputs, a matrix
        #: segment its first layer's input, an image segment every tensor it does not make.
        self._reads = []
        for kind, item in self.schedule:
            if kind == "host":
                self._reads.append(list(self.graph[item][1]))
            elif self.plans[item[0]].image:
                self._reads.append(segment_io(item, self.graph, self.virtual)[0])
            else:
                self._reads.append(list(self.graph[item[0]][1][:1]))
        self._last_use = {}
        for position, reads in enumerate(self._reads):
            for name in reads:
                self._last_use[name] = position

    def _plan(self, index, layer):
        """The plan of matmul layer ``index``: its mode, tiling and, for a convolution that
        suits the window walk, its image layout.

        Raises
        ------
        CompileError
            When the layer cannot run on this accelerator.
        """
        info = self.config
        sparse_device = info.m != 0
        where = f"Layer {layer['name']!r}"
        needs_tables = (layer.get("act_table") is not None
                        or layer.get("weight_table") is not None
                        or layer["output"] == "threshold")
        if needs_tables and not info.tables:
            raise CompileError(f"{where} uses power-exponent tables or thresholds; "
                               f"generate the accelerator with tables")
        check_operands(info, layer, where)
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
        check_accumulator(info, layer, where)
        mode = ((Mode.SPARSE if sparse else 0)
                | (Mode.THRESHOLD if layer["output"] == "threshold" else 0)
                | (Mode.ACT_TABLE if layer.get("act_table") is not None else 0)
                | (Mode.WEIGHT_TABLE if layer.get("weight_table") is not None else 0)
                | (Mode.DEPTHWISE if golden.is_depthwise(layer) else 0))
        plan = LayerPlan(index, layer, sparse, step, k_steps, _ceil(k, info.cols),
                         n_tiles, 0, 0, mode)
        if layer.get("conv"):
            image = replace(plan, a_stride=_ceil(layer["conv"]["in_channels"], info.cols),
                            image=True)
            if windows.fits_image(info, image):
                plan = image
            elif bands := windows.band_rows(info, image):
                # Too large for the banks at once: on the walk in bands of output rows.
                plan = replace(image, band_rows=bands)
        return plan

    def _place(self):
        """Give every device layer its weight words and channel groups: one after the other
        when they all fit (resident), else from 0 for each segment (streamed); a segment
        whose layers do not fit together is split into one-layer segments, except an image
        segment, whose layers are each written before they run (its images stay in the
        banks)."""
        info = self.config
        #: Image segments whose layers are written one by one (``_stream_layer``).
        self.layer_streamed = set()
        if not self.resident:
            schedule = []
            for kind, item in self.schedule:
                if kind == "device" and not self._fits(item) and self.plans[item[0]].image:
                    self.layer_streamed.add(tuple(item))
                    schedule.append((kind, item))
                elif kind == "device" and not self._fits(item):
                    for index in item:
                        # A flatten between two layers of the segment runs on the host.
                        between = [v for v in self.virtual
                                   if self.graph[v][0] == self.graph[index][1][0]]
                        schedule += [("host", v) for v in between]
                        self.virtual -= set(between)
                        schedule.append(("device", [index]))
                else:
                    schedule.append((kind, item))
            self.schedule = schedule
        w_base = group_base = 0
        for kind, item in self.schedule:
            if kind != "device":
                continue
            if not self.resident:
                w_base = group_base = 0
            for index in item:
                if tuple(item) in self.layer_streamed:
                    w_base = group_base = 0
                plan = self.plans[index]
                plan.parts = ((0, plan.n_tiles),)
                if not self._fits([index]):
                    # Larger than the device alone: run it in parts of channel tiles.
                    tiles = min(info.w_depth // plan.k_steps, info.groups)
                    if tiles == 0:
                        raise CompileError(
                            f"Layer {plan.layer['name']!r} needs {plan.k_steps} weight words "
                            f"for one channel tile; the accelerator holds {info.w_depth}: "
                            f"generate it with a larger weight memory")
                    plan.parts = tuple((first, min(tiles, plan.n_tiles - first))
                                       for first in range(0, plan.n_tiles, tiles))
                plan.w_base, plan.group_base = w_base, group_base
                w_base += plan.n_tiles * plan.k_steps
                group_base += plan.n_tiles

    def _fits(self, indices):
        plans = [self.plans[i] for i in indices]
        return (sum(p.n_tiles * p.k_steps for p in plans) <= self.config.w_depth
                and sum(p.n_tiles for p in plans) <= self.config.groups)

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
        self._loaded = None
        if self.resident:
            self._load_plans(self.plans.values())
        self.add_tables.load()

    def _load_plans(self, plans):
        for plan in plans:
            if len(plan.parts) == 1:     # a layer in parts writes each before it runs
                self._load_part(plan, 0, plan.n_tiles, plan.w_base, plan.group_base)

    def _load_part(self, plan, first, tiles, w_base, group_base):
        """Write channel tiles ``first .. first + tiles - 1`` of a layer: their weight words
        from ``w_base`` on, their parameters from group ``group_base`` on."""
        info, layer = self.config, plan.layer
        words = self._weight_cache.get(plan.index)
        if words is None:
            words = self._weight_cache[plan.index] = self.weight_words(plan)
        self.device.write(Space.WEIGHT, w_base,
                          words[first * plan.k_steps:(first + tiles) * plan.k_steps])
        n = layer["out_features"]
        for nt in range(first, first + tiles):
            group = group_base + nt - first
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
                    words_t = t[lane].astype("<i4").view(np.uint8).reshape(full, 4)
                    self.device.write(Space.THRESHOLD, address, words_t)

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

    def run_parts(self, plan, descriptor):
        """Run one layer: its operand tables, then a RUN per part (a part's weights written
        first when the layer is larger than the device), each RUN's descriptor
        ``descriptor(first_tile, tiles, w_base, group_base)``; count the cycles."""
        self._set_tables(plan.layer)
        for first, tiles in plan.parts:
            w_base, group_base = plan.w_base, plan.group_base
            if len(plan.parts) > 1:
                # A layer larger than the device: this part's weights first.
                self._load_part(plan, first, tiles, 0, 0)
                self._loaded = None
                w_base = group_base = 0
            run = descriptor(first, tiles, w_base, group_base)
            # Generous: a stalled or broken device times out instead of hanging.
            expected = run.m_tiles * tiles * (plan.k_steps + self.config.rows + 16)
            self.device.run(run, 64 * expected + 100_000, plan.index)

    def _account(self, index, cycles):
        """Layer ``index`` ran a RUN of ``cycles`` cycles."""
        self.cycles += cycles
        self.layer_cycles[index] += cycles
        self.runs += 1

    def _stream(self, indices):
        """Before a segment runs on a device that does not hold every layer: its weights and
        parameters replace the last segment's (or, layer by layer, :meth:`stream_layer`)."""
        if (not self.resident and self._loaded != tuple(indices)
                and tuple(indices) not in self.layer_streamed):
            self._load_plans([self.plans[i] for i in indices])
            self._loaded = tuple(indices)

    def stream_layer(self, indices, plan):
        """Before a layer of segment ``indices`` runs: its weights, when the segment's are
        written layer by layer."""
        if tuple(indices) in self.layer_streamed and self._loaded != (plan.index,):
            self._load_plans([plan])
            self._loaded = (plan.index,)

    def _run_segment(self, indices, x):
        info = self.config
        plans = [self.plans[i] for i in indices]
        self._stream(indices)
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
                self.run_parts(plan, matrix_run(plan, m_tiles, src, dst))
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
        if total == 0:
            raise ValueError("No inputs to run: give at least one item")
        batch = batch or total
        outputs = []
        for start in range(0, total, batch):
            while True:
                counted = list(self.layer_cycles)
                try:
                    outputs.append(self._infer_batch(codes[start:start + batch]))
                    self.device.flush()
                    self.images += len(outputs[-1])
                    break
                except DeviceRestarted:
                    # The batch runs again: its cycles so far are not the layers'.
                    self.layer_cycles = counted
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
        layers, graph = self.bundle.layers, self.graph
        tensors = {golden.NETWORK_INPUT: x}
        for position, (kind, item) in enumerate(self.schedule):
            if kind == "host":
                name, reads = graph[item]
                tensors[name] = golden.apply_layer(layers[item], [tensors[i] for i in reads])
            elif self.plans[item[0]].image:
                reads = self._reads[position]
                self._stream(item)
                tensors.update(image_segments.run_image_segment(
                    self, item, {name: tensors[name] for name in reads}))
            else:
                reads = self._reads[position]
                tensors[graph[item[-1]][0]] = self._device_segment(item, tensors[reads[0]])
            for name in set(reads):
                if self._last_use[name] == position:
                    del tensors[name]
        return tensors[graph[-1][0]]

    def _device_segment(self, indices, x):
        """A segment's output ``[images, ...]`` for its input tensor ``x [images, ...]``."""
        first, last = self.bundle.layers[indices[0]], self.bundle.layers[indices[-1]]
        conv = first.get("conv")
        images = len(x)
        if conv:
            x = golden.im2col(x, kernel=conv["kernel"], stride=conv["stride"],
                              padding=conv["padding"], pad_code=first["pad_code"])
        else:
            x = x.reshape(images, -1)
        x = self._run_segment(indices, x)
        if last.get("conv"):
            x = x.reshape(images, last["conv"]["out_height"], last["conv"]["out_width"], -1)
        return x

    def report(self):
        """Per layer, in the bundle's order, a dict: ``name``, ``type``, ``where`` (``"device"``
        or ``"host"``), ``macs`` (per inference, :func:`layer_macs`) and ``cycles`` (the device
        cycles of the layer's RUNs per inference, over every image :meth:`infer` has run; 0
        on the host and before any inference)."""
        rows = []
        for index, (layer, (name, _)) in enumerate(zip(self.bundle.layers, self.graph)):
            rows.append({"name": name, "type": layer["type"],
                         "where": ("device" if index in self.plans or index in self.virtual
                                   else "host"),
                         "macs": layer_macs(layer),
                         "cycles": self.layer_cycles[index] / self.images if self.images
                         else 0.0})
        return rows
