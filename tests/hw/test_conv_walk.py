"""The convolution window walk in Amaranth's simulator: every row's word and padding flag for
every beat of a ``Mode.CONV`` layer (depthwise ones too), against a plain reading of
``sparqforge.protocol.RunDescriptor``'s docstring, with random gaps between beats."""

import random
from dataclasses import asdict

import pytest
from amaranth.sim import Simulator

from sparqforge.config import AcceleratorConfig
from sparqforge.hw.conv_walk import ConvWalk
from sparqforge.protocol import Mode, RunDescriptor

WRAP = 1 << 16


def conv_desc(*, in_shape, kernel, stride, padding, words, m_tiles, k_steps, step=1,
              pad_code=0, **fields):
    """A ``Mode.CONV`` descriptor as a dict of the hardware's fields (the loop bounds minus
    one included)."""
    fields.setdefault("mode", 0)
    fields["mode"] |= Mode.CONV
    defaults = dict(n_tiles=1, w_base=0, out_base=0, out_stride=1, group_base=0)
    d = asdict(RunDescriptor.convolution(
        in_shape=in_shape, kernel=kernel, stride=stride, padding=padding, pad_code=pad_code,
        a_base=fields.pop("a_base", 0), words=words, m_tiles=m_tiles, k_steps=k_steps,
        step=step, **{**defaults, **fields}))
    return with_lasts(d)


def with_lasts(d):
    return {**d, "k_last": d["k_steps"] - 1, "m_last": d["m_tiles"] - 1,
            "n_last": d["n_tiles"] - 1, "out_w_last": d["out_w"] - 1, "kw_last": d["kw"] - 1}


def pixels(d, count):
    """``(pb, iy, ix)`` of output pixels ``0 .. count - 1``, as the docstring defines them."""
    out, pb = [], d["origin"]
    for m in range(count):
        oy, ox = divmod(m, d["out_w"])
        out.append((pb, oy * d["sh"] - d["ph"], ox * d["sw"] - d["pw"]))
        pb = (pb + (d["x_step"] if ox < d["out_w"] - 1 else d["row_step"])) % WRAP
    return out


def element(d, cols, pixel, e, nt=0):
    """``(word, lane, inside)`` of window element ``e`` of a pixel, for channel tile ``nt``
    (whose word is ``nt`` further on in ``Mode.DEPTHWISE``)."""
    pb, iy, ix = pixel
    t, c = divmod(e, d["in_c"])
    ky, kx = divmod(t, d["kw"])
    tile = nt if d["mode"] & Mode.DEPTHWISE else 0
    word = (pb + ky * d["tap_row"] + kx * d["a_stride"] + c // cols + tile) % WRAP
    inside = 0 <= iy + ky < d["in_h"] and 0 <= ix + kx < d["in_w"]
    return word, c % cols, inside


def expected_walk(config, d):
    """Each beat's ``[(word, inside) per row]``, in the feeder's order (nt, mt, s)."""
    rows = config.rows
    walk = pixels(d, d["m_tiles"] * rows)
    beats = []
    for nt in range(d["n_tiles"]):
        for mt in range(d["m_tiles"]):
            for s in range(d["k_steps"]):
                beats.append([element(d, config.cols, walk[mt * rows + r], s * d["step"], nt)
                              for r in range(rows)])
    return beats


def run_walk(config, d, *, gap, seed=0):
    """Issue the layer's beats (honouring ``go`` and ``ready``) with random gaps; returns
    each beat's ``[(word, lane, inside) per row]`` and the cycles from the first beat to the
    last."""
    dut = ConvWalk(config)
    rng = random.Random(seed)
    got, cycles = [], {}
    total = d["n_tiles"] * d["m_tiles"] * d["k_steps"]

    async def bench(ctx):
        for name, value in d.items():
            if hasattr(dut.desc, name):
                ctx.set(getattr(dut.desc, name), value)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(config.rows + 1):
            if ctx.get(dut.go):
                break
            await ctx.tick()
        assert ctx.get(dut.go)
        await ctx.tick()
        s, lane, first = 0, None, None
        for cycle in range(20 * total + 100):
            last = s == d["k_steps"] - 1
            issue = len(got) < total and rng.random() >= gap and (not last or ctx.get(
                dut.ready))
            ctx.set(dut.issue, issue)
            ctx.set(dut.last, last)
            lane = ctx.get(dut.lane)
            await ctx.tick()
            ctx.set(dut.issue, 0)
            if issue:
                first = cycle if first is None else first
                got.append([(ctx.get(dut.addr[r]), lane, ctx.get(dut.inside[r]))
                            for r in range(config.rows)])
                s = 0 if last else s + 1
                if len(got) == total:
                    cycles["issue"] = cycle - first + 1
                    break
        assert len(got) == total

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, cycles["issue"]


#: (name, config, descriptor) of the geometries checked.
GEOMETRIES = [
    ("3x3_pad1", AcceleratorConfig(rows=4, cols=4, act_depth=64, groups=4),
     conv_desc(in_shape=(5, 5, 2), kernel=(3, 3), stride=(1, 1), padding=(1, 1), words=1,
               m_tiles=7, k_steps=18, a_base=3)),
    ("stride2", AcceleratorConfig(rows=3, cols=4, act_depth=64, groups=4),
     conv_desc(in_shape=(6, 7, 3), kernel=(3, 3), stride=(2, 2), padding=(1, 1), words=1,
               m_tiles=4, k_steps=27, n_tiles=2)),
    ("10x4_stride2_pad4x1", AcceleratorConfig(rows=4, cols=4, act_depth=64, groups=4),
     conv_desc(in_shape=(12, 6, 1), kernel=(10, 4), stride=(2, 2), padding=(4, 1), words=1,
               m_tiles=5, k_steps=40)),
    ("1x1_k_steps_below_rows", AcceleratorConfig(rows=4, cols=4, act_depth=64, groups=4),
     conv_desc(in_shape=(4, 4, 8), kernel=(1, 1), stride=(1, 1), padding=(0, 0), words=2,
               m_tiles=4, k_steps=2, n_tiles=2, step=1)),
    ("in_c_above_cols_out_w_above_rows", AcceleratorConfig(rows=2, cols=4, act_depth=64,
                                                           groups=4),
     conv_desc(in_shape=(3, 7, 6), kernel=(2, 3), stride=(1, 1), padding=(1, 1), words=2,
               m_tiles=13, k_steps=36)),
    ("step2_sparse_array", AcceleratorConfig(rows=3, cols=4, sparsity=(2, 4), act_depth=64,
                                             groups=4),
     conv_desc(in_shape=(4, 5, 6), kernel=(3, 3), stride=(1, 2), padding=(1, 1), words=2,
               m_tiles=3, k_steps=27, step=2)),
    ("step4_one_row", AcceleratorConfig(rows=1, cols=4, sparsity=(2, 4), act_depth=64,
                                        groups=4),
     conv_desc(in_shape=(3, 3, 8), kernel=(2, 2), stride=(1, 1), padding=(1, 0), words=2,
               m_tiles=7, k_steps=8, step=4, n_tiles=2)),
    # ky past kh (the walk follows e alone) and past the image, from the most padding: the
    # bounds stop at their floor only once no row can be inside.
    ("ky_past_the_image", AcceleratorConfig(rows=2, cols=1, act_depth=64, groups=4),
     conv_desc(in_shape=(2, 3, 1), kernel=(1, 1), stride=(1, 1), padding=(255, 0), words=1,
               m_tiles=3, k_steps=520)),
    # Output rows and columns far past the image: coordinates stop past 2 ** 16.
    ("rows_past_2_16", AcceleratorConfig(rows=2, cols=1, act_depth=64, groups=4),
     with_lasts(dict(conv_desc(in_shape=(65535, 2, 1), kernel=(2, 1), stride=(255, 1),
                               padding=(0, 0), words=1, m_tiles=140, k_steps=2),
                     out_w=1))),
    ("columns_past_2_16", AcceleratorConfig(rows=3, cols=1, act_depth=64, groups=4),
     with_lasts(dict(conv_desc(in_shape=(2, 65535, 1), kernel=(1, 2), stride=(1, 255),
                               padding=(0, 7), words=1, m_tiles=100, k_steps=2),
                     out_w=300))),
    # Walk fields that no image gives: the walk follows them as they are.
    ("any_walk", AcceleratorConfig(rows=3, cols=2, act_depth=64, groups=4),
     with_lasts(dict(conv_desc(in_shape=(4, 4, 3), kernel=(2, 2), stride=(1, 1),
                               padding=(1, 1), words=2, m_tiles=3, k_steps=12),
                     origin=65530, x_step=7, row_step=65000, tap_row=300, out_w=2))),
]


#: Depthwise geometries (``in_c`` 1, a channel tile per word of a pixel).
DW_CONFIG = AcceleratorConfig(rows=4, cols=4, act_depth=64, groups=4)
DEPTHWISE = [
    ("dw_3x3_pad1", DW_CONFIG,
     conv_desc(in_shape=(5, 5, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1), words=2,
               m_tiles=7, k_steps=9, n_tiles=2, a_base=3, mode=Mode.DEPTHWISE)),
    ("dw_3x3_stride2", AcceleratorConfig(rows=3, cols=4, act_depth=64, groups=4),
     conv_desc(in_shape=(6, 7, 1), kernel=(3, 3), stride=(2, 2), padding=(1, 1), words=3,
               m_tiles=4, k_steps=9, n_tiles=3, mode=Mode.DEPTHWISE)),
    ("dw_10x4_pad4x1", DW_CONFIG,
     conv_desc(in_shape=(12, 6, 1), kernel=(10, 4), stride=(1, 1), padding=(4, 1), words=2,
               m_tiles=14, k_steps=40, n_tiles=2, mode=Mode.DEPTHWISE)),
    ("dw_out_w_below_rows", DW_CONFIG,
     conv_desc(in_shape=(3, 3, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1), words=2,
               m_tiles=3, k_steps=9, n_tiles=2, mode=Mode.DEPTHWISE)),
    ("dw_out_w_above_rows", AcceleratorConfig(rows=2, cols=4, act_depth=64, groups=4),
     conv_desc(in_shape=(4, 7, 1), kernel=(2, 3), stride=(1, 1), padding=(1, 1), words=2,
               m_tiles=18, k_steps=6, n_tiles=2, mode=Mode.DEPTHWISE)),
    ("dw_1x1_k_steps_below_rows", DW_CONFIG,
     conv_desc(in_shape=(4, 4, 1), kernel=(1, 1), stride=(1, 1), padding=(0, 0), words=3,
               m_tiles=4, k_steps=1, n_tiles=3, mode=Mode.DEPTHWISE)),
]


@pytest.mark.parametrize("name,config,d", GEOMETRIES + DEPTHWISE,
                         ids=[g[0] for g in GEOMETRIES + DEPTHWISE])
@pytest.mark.parametrize("gap", [0.0, 0.4])
def test_every_row_reads_its_window(name, config, d, gap):
    got, cycles = run_walk(config, d, gap=gap)
    want = expected_walk(config, d)
    assert len(got) == len(want)
    for index, (beat, rows) in enumerate(zip(got, want)):
        assert [(word, inside) for word, _, inside in beat] == \
            [(word, int(inside)) for word, _, inside in rows], (index, beat, rows)
        assert {lane for _, lane, _ in beat} == {rows[0][1]}, index
    if gap == 0.0 and d["k_steps"] >= config.rows:
        # One beat per cycle: the next tile's pixels are always ready in time.
        assert cycles == len(want)


def test_a_perturbed_walk_is_caught():
    # The comparison above is not vacuous: a pixel one column off changes words and flags.
    name, config, d = GEOMETRIES[0]
    got, _ = run_walk(config, d, gap=0.0)
    want = expected_walk(config, {**d, "origin": d["origin"] + 1, "pw": d["pw"] - 1})
    assert [[(w, i) for w, _, i in beat] for beat in got] != \
        [[(w, int(i)) for w, _, i in beat] for beat in want]


def test_a_depthwise_walk_moves_with_its_channel_tile():
    # The comparison catches a walk that forgets the channel tile (``nt`` words further on).
    name, config, d = DEPTHWISE[0]
    got, _ = run_walk(config, d, gap=0.0)
    plain = expected_walk(config, {**d, "mode": Mode.CONV})
    assert [[(w, i) for w, _, i in beat] for beat in got] != \
        [[(w, int(i)) for w, _, i in beat] for beat in plain]
    # ... and the same layer without Mode.DEPTHWISE reads the same word for every tile.
    got, _ = run_walk(config, {**d, "mode": Mode.CONV}, gap=0.0)
    assert [[(w, i) for w, _, i in beat] for beat in got] == \
        [[(w, int(i)) for w, _, i in beat] for beat in plain]
