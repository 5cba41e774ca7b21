"""Image segments: graphs of window-walk layers run out of the activation banks.

An image segment (:func:`~sparqforge.sw.runtime.planning.segments`) is a graph: its
convolutions, depthwise layers, pooling and residual adds read images that earlier layers of
the segment left in the banks, and a tensor may have several readers (a residual shortcut).
The host writes the segment's inputs, reads back the tensors that other items read, and in
between every image lives in a region of the banks that a first-fit allocator gives it:

* an image is allocated when it is written or made, with room for every row its RUN writes
  (a whole number of tiles), and freed after its last reader in the segment;
* a residual add writes its output over an input that it reads for the last time (an add
  reads each word before it writes it, and nothing after: safe, see ``docs/design.md``);
  every other layer writes words it does not read;
* when the banks are full, the image whose next reader is farthest away is *spilled*: read
  back by the host and written again before that reader runs (the link pays for it; the
  bench counts it). When even that leaves no room in one piece, the images the layer reads
  are read back and written again from word 0 (compaction).

A segment of a convolution too large for the banks runs band by band instead
(:func:`~sparqforge.sw.runtime.windows.run_bands`).
"""

__all__ = ["run_image_segment"]

import numpy as np

from ...protocol import Space
from .planning import ceil_div, matrix_run, segment_io
from .residual import add_descriptor
from .windows import conv_descriptor, image_region, image_words, run_bands, write_image


def run_image_segment(runner, indices, inputs):
    """Run image segment ``indices`` on ``runner``'s device for ``inputs`` (``{tensor name:
    [images, ...]}``, every tensor it reads from outside); return ``{tensor name: [images,
    ...]}`` for every tensor it makes that other items read."""
    graph, plans = runner.graph, runner.plans
    if plans[indices[0]].band_rows:
        (x,) = inputs.values()
        runner.stream_layer(indices, plans[indices[0]])
        return {graph[indices[0]][0]: np.stack([run_bands(runner, plans[indices[0]], image)
                                                for image in np.asarray(x, dtype=np.int64)])}
    _, outputs = segment_io(indices, graph, runner.virtual)
    images = len(next(iter(inputs.values())))
    results = {name: [] for name in outputs}
    for i in range(images):
        got = _Segment(runner, indices, outputs).run({name: np.asarray(value[i], np.int64)
                                                      for name, value in inputs.items()})
        for name in outputs:
            results[name].append(got[name])
    return {name: np.stack(values) for name, values in results.items()}


class _Segment:
    """One image through one image segment."""

    def __init__(self, runner, indices, outputs):
        self.runner, self.indices, self.outputs = runner, indices, set(outputs)
        self.config, self.device, self.graph = runner.config, runner.device, runner.graph
        # A flatten the segment runs through: its output is its input's words.
        made = {self.graph[i][0] for i in indices}
        self.alias = {self.graph[v][0]: self.graph[v][1][0] for v in runner.virtual
                      if self.graph[v][1][0] in made}
        self.uses = {}
        for position, index in enumerate(indices):
            for name in self._reads(index):
                self.uses.setdefault(name, []).append(position)
        self.where = {}       # resident tensor -> (base, size)
        self.host = {}        # tensor -> what the host writes for it: an image or raw words
        self.free = [(0, self.config.act_depth)]

    def _reads(self, index):
        return list(dict.fromkeys(self.alias.get(name, name) for name in self.graph[index][1]))

    # -- the banks ----------------------------------------------------------------------
    def _take(self, size, top=False):
        """First fit from the bottom (or from the top of the banks down): the base of
        ``size`` free words, or ``None``."""
        order = range(len(self.free) - 1, -1, -1) if top else range(len(self.free))
        for k in order:
            base, length = self.free[k]
            if length >= size:
                if top:
                    self.free[k] = (base, length - size)
                    base += length - size
                else:
                    self.free[k] = (base + size, length - size)
                if self.free[k][1] == 0:
                    del self.free[k]
                return base
        return None

    def _give(self, name):
        base, size = self.where.pop(name)
        self.free.append((base, size))
        self.free.sort()
        merged = []
        for start, length in self.free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self.free = merged

    def _next_use(self, name, position):
        later = [p for p in self.uses.get(name, []) if p > position]
        return later[0] if later else float("inf")

    def _spill(self, name):
        """Read a resident image back to the host, to be written again when next read."""
        base, size = self.where[name]
        self.host[name] = self.device.read_act(base, self._raw_words(name))
        self.runner.spilled_words += self._raw_words(name)
        self._give(name)

    def _allocate(self, size, position, keep, top=False):
        """``size`` words for position ``position`` (from the top down with ``top``), spilling
        images that ``keep`` (those it reads) does not name, farthest next reader first;
        compacting ``keep`` when that is not enough."""
        base = self._take(size, top)
        while base is None:
            # (Images only: a matrix layer's rows are a few words and stay where they are.)
            victims = [name for name in self.where
                       if name not in keep and name in self.runner.images_shapes]
            if not victims:
                break
            self._spill(max(victims, key=lambda name: self._next_use(name, position)))
            base = self._take(size, top)
        if base is None:
            # Only what this layer reads is left, in the wrong places: lay it out afresh.
            resident = [name for name in self.where if name in self.runner.images_shapes]
            self.runner.compactions += 1
            for name in resident:
                self._spill(name)
            for name in keep:
                if name in resident:
                    self._place(name, position, keep)
            base = self._take(size)
        if base is None:
            raise RuntimeError(f"{size} words do not fit the activation banks beside the "
                               f"layer's inputs (the planner checks that they do)")
        return base

    def _place(self, name, position, keep):
        """Make ``name`` resident (written by the host) if it is not."""
        if name in self.where:
            return
        size = self._size(name)
        base = self._allocate(size, position, keep)
        self.where[name] = (base, size)
        value = self.host[name]
        if value.ndim == 3:
            write_image(self.device, self.config, value, base)
        else:
            self.device.write(Space.ACT_ALL, base, value.astype(np.uint8))

    # -- tensor sizes -------------------------------------------------------------------
    def _shape(self, name):
        return self.runner.images_shapes[name]

    def _raw_words(self, name):
        return image_words(self.config, self._shape(name))

    def _size(self, name):
        return image_region(self.config, self._shape(name))

    # -- running ------------------------------------------------------------------------
    def run(self, inputs):
        runner, config = self.runner, self.config
        self.host.update(inputs)
        results = {}
        for position, index in enumerate(self.indices):
            plan = runner.plans[index]
            name = self.graph[index][0]
            reads = self._reads(index)
            for read in reads:
                self._place(read, position, reads)
            size = self._size(name) if plan.image else plan.n_tiles
            base = None
            if plan.layer.get("add_table") is not None:
                # In place over an input read for the last time.
                for read in reads:
                    if (self._next_use(read, position) == float("inf")
                            and self.where[read][1] >= size):
                        src = [self.where[r][0] for r in reads]
                        base, size = self.where.pop(read)
                        break
            if base is None:
                # At the other end of the banks from the first input, so that chains
                # alternate between the ends; room for it may move the inputs.
                top = 2 * self.where[reads[0]][0] < self.config.act_depth
                base = self._allocate(size, position, reads, top)
                src = [self.where[r][0] for r in reads]
            self.where[name] = (base, size)
            if plan.layer.get("add_table") is not None:
                descriptor = add_descriptor(config, plan, src[0], src[1], base,
                                            runner.add_tables.slot(plan))
            elif plan.image:
                descriptor = conv_descriptor(config, plan, src[0], base)
            else:
                # Row 0 of a matrix layer: the one pixel before it (or its row 0) in bank 0.
                descriptor = matrix_run(plan, 1, src[0], base)
            runner.stream_layer(self.indices, plan)
            runner.run_parts(plan, descriptor)
            for read in reads:
                if self._next_use(read, position) == float("inf") and read in self.where:
                    self._give(read)
            if name in self.outputs or self._output_alias(name):
                results.update(self._read_back(index, plan, name, base))
            if self._next_use(name, position) == float("inf"):
                self._give(name)
        return results

    def _output_alias(self, name):
        return any(self.alias.get(out) == name for out in self.outputs)

    def _read_back(self, index, plan, name, base):
        """The host's copy of the tensor ``name`` just made at ``base`` (and of a flatten of
        it that others read)."""
        layer = self.runner.bundle.layers[index]
        if plan.image:
            h, w, c = self._shape(name)
            words = ceil_div(c, self.config.cols)
            got = self.device.read_act(base, h * w * words).astype(np.int64)
            out = got.reshape(h, w, words * self.config.cols)[..., :c]
            if layer["type"] == "global_avgpool":
                out = out.reshape(-1)
        else:
            got = self.device.read_act(base, plan.n_tiles).astype(np.int64)
            out = got.reshape(-1)[:plan.layer["out_features"]]
        found = {name: out} if name in self.outputs else {}
        for alias, source in self.alias.items():
            if source == name and alias in self.outputs:
                found[alias] = out.reshape(-1)
        return found
