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
* a residual block (a convolution, a second one, the add of its output and the block's
  input ``x``) whose three images do not fit the banks together runs *in bands* of output
  rows, in place of ``x``, when the banks hold ``x`` and a band's two buffers
  (:meth:`_Segment._run_block_in_bands`; the first convolution recomputes the rows that
  neighbouring bands share; no link traffic);
* otherwise, when the banks are full, the image whose next reader is farthest away is
  *spilled*: read back by the host and written again before that reader runs (the link
  pays for it; the bench counts it). When even that leaves no room in one piece, the
  images the layer reads are read back and written again from word 0 (compaction).

A segment of a convolution too large for the banks runs band by band instead
(:func:`~sparqforge.sw.runtime.windows.run_bands`).
"""

__all__ = ["run_image_segment"]

import numpy as np

from ...protocol import Space
from .planning import ceil_div, matrix_run, segment_io
from .residual import add_descriptor
from .windows import (band_input, conv_descriptor, image_region, image_words, output_words,
                      run_bands, write_image)


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
        self._release(*self.where.pop(name))

    def _release(self, base, size):
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
        skip = 0
        for position, index in enumerate(self.indices):
            if skip:
                skip -= 1
                continue
            block = self._residual_block(position)
            if block is not None:
                results.update(self._run_block_in_bands(position, block))
                skip = 2
                continue
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

    # -- residual blocks in bands -------------------------------------------------------
    def _residual_block(self, position):
        """``(x, band rows, y1 words, y2 words)`` when the layers from ``position`` on are a
        residual block whose three images do not fit the banks together but do in bands of
        output rows (:meth:`_run_block_in_bands`); ``None`` otherwise.

        The block: a convolution reading image ``x`` alone, a second reading the first's
        output alone, an add of the second's output and ``x``; both convolutions keep the
        image's height and width, and nothing else reads ``x`` or the two convolutions'
        outputs."""
        indices, runner = self.indices, self.runner
        if position + 3 > len(indices) or tuple(indices) in runner.layer_streamed:
            return None
        block = indices[position:position + 3]
        plans = [runner.plans[i] for i in block]
        names = [self.graph[i][0] for i in block]
        reads = [self._reads(i) for i in block]
        first, second, add = plans
        if (add.layer.get("add_table") is None or not (first.image and second.image)
                or any(p.layer.get("add_table") is not None or p.band_rows
                       for p in (first, second))
                or any(len(p.parts) != 1 for p in plans)
                or len(reads[0]) != 1 or reads[1] != [names[0]]
                or sorted(reads[2]) != sorted([reads[0][0], names[1]])):
            return None
        x = reads[0][0]
        shape = self.runner.images_shapes.get(x)
        if (shape is None or x not in self.where
                or [use for use in self.uses[x] if use >= position] != [position, position + 2]
                or self.uses.get(names[0]) != [position + 1]
                or self.uses.get(names[1]) != [position + 2]
                or any(name in self.outputs or self._output_alias(name)
                       for name in (x, *names[:2]))):
            return None
        height, width = shape[:2]
        for plan in (first, second):
            conv = plan.layer["conv"]
            if (conv["in_height"], conv["in_width"], conv["out_height"],
                    conv["out_width"]) != (height, width, height, width):
                return None
        if (self._size(x) + output_words(self.config, first) + output_words(self.config, second)
                <= self.config.act_depth):
            return None                      # they fit: no bands needed
        for rows in range(height - 1, 0, -1):
            bands = _bands(height, rows)
            # Every band's RUNs write whole tiles; the add of band k writes over x's rows
            # of band k after the first convolution of band k + 1 ran, and before that of
            # band k + 2, which must not read them.
            if (any((b - a) * width % self.config.rows for a, b in bands)
                    or any(_first_input_row(first, second, later) < earlier[1]
                           for earlier, later in zip(bands, bands[2:]))):
                continue
            y1_words = max(output_words(self.config, first, b - a)
                           for a, b in (_conv_rows(second, band) for band in bands))
            y2_words = output_words(self.config, second, rows)
            if self._room(y1_words, y2_words):
                return x, rows, y1_words, y2_words
        return None

    def _run_block_in_bands(self, position, block):
        """Residual block ``position`` (:meth:`_residual_block`) band by band of output rows,
        in place of ``x``: the first convolution writes the rows of its output that the
        second reads for the band into one buffer, the second writes the band into another,
        and the add writes it over ``x``'s rows of the band, after the first convolution of
        the next band has read the rows of ``x`` it shares with this one. The banks hold
        ``x`` and the two buffers instead of three images."""
        x, rows, y1_words, y2_words = block
        runner, config = self.runner, self.config
        runner.banded_blocks += 1
        indices = self.indices[position:position + 3]
        first, second, add = (runner.plans[i] for i in indices)
        name = self.graph[indices[2]][0]
        x_base = self.where[x][0]
        height, width, channels = self._shape(x)
        row_words = image_words(config, (1, width, channels))
        y1_buffer, y2_buffer = self._room(y1_words, y2_words, take=True)
        reads = self._reads(indices[2])

        def first_convolution(band):
            a_base = x_base + _first_input_row(first, second, band) * row_words
            runner.run_parts(first, conv_descriptor(config, first, a_base, y1_buffer,
                                                    _conv_rows(second, band)))

        def second_convolution(band):
            runner.run_parts(second, conv_descriptor(config, second, y1_buffer, y2_buffer,
                                                     band))

        # (The segment's weights are resident or loaded whole: nothing to stream per layer.)
        bands = _bands(height, rows)
        first_convolution(bands[0])
        second_convolution(bands[0])
        for (oy0, oy1), later in zip(bands, bands[1:] + [None]):
            if later:
                first_convolution(later)
            band = x_base + oy0 * row_words
            src = [band if read == x else y2_buffer for read in reads]
            runner.run_parts(add, add_descriptor(config, add, src[0], src[1], band,
                                                 runner.add_tables.slot(add),
                                                 pixels=(oy1 - oy0) * width))
            if later:
                second_convolution(later)
        self._release(y1_buffer, y1_words)
        self._release(y2_buffer, y2_words)
        self.where[name] = self.where.pop(x)
        results = {}
        if name in self.outputs or self._output_alias(name):
            results = self._read_back(indices[2], add, name, x_base)
        if self._next_use(name, position + 2) == float("inf"):
            self._give(name)
        return results

    def _room(self, *sizes, take=False):
        """Whether regions of ``sizes`` words, taken first fit in that order, fit the free
        words; with ``take``, their bases (taken)."""
        free = list(self.free)
        bases = [self._take(size) for size in sizes]
        if take and None not in bases:
            return bases
        self.free = free
        return None not in bases

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


def _bands(height, rows):
    """Bands ``(oy0, oy1)`` of ``rows`` output rows (the last one shorter)."""
    return [(start, min(height, start + rows)) for start in range(0, height, rows)]


def _conv_rows(plan, band):
    """The input rows ``(iy0, iy1)`` that convolution ``plan``'s output rows ``band`` read."""
    return band_input(plan.layer["conv"], *band)


def _first_input_row(first, second, band):
    """The first row of the block's input that its output rows ``band`` depend on."""
    return _conv_rows(first, _conv_rows(second, band))[0]
