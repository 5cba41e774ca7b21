"""The accelerator's address spaces as the executor writes them: where a WRITE's word goes
(a memory, the requantizer's or threshold unit's parameters, an operand or add table), and
whether its address names a word that exists (:mod:`sparqforge.protocol`'s address
encodings)."""

__all__ = ["AddressSpaces"]

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..protocol import (ACT_LANES_WORD_BITS, REQUANT_BYTES, REQUANT_RECORD, TABLE_SPACES,
                        Space, address_fields, address_limit, word_bytes)


class AddressSpaces(wiring.Component):
    """Decodes a word's space and address into the write port it belongs to.

    A word offered with ``commit`` is written in that cycle's port (the memories and tables
    register it). ``known`` says whether ``space`` exists on this accelerator and
    ``word_bytes`` how long its words are; ``addressable`` (registered: a cycle after
    ``target`` and ``space``) whether ``target`` names a word of it: inside the space, and a
    lane and threshold index that exist. The banks a host word goes to and the lanes an
    ACT_LANES word zeroes are registered the same way.

    Parameters
    ----------
    config : AcceleratorConfig
    core_signature : wiring.Signature
        The array core's (for its ``cfg_*`` table write ports).

    Attributes
    ----------
    space : In(8), target : In(32), word : In(...), commit : In(1)
    known : Out(1), word_bytes : Out(...), addressable : Out(1)
    host_write, weight_write : Out
        The memories' write ports (see :class:`~sparqforge.hw.memories.Memories`).
    program_write : Out
        The executor's descriptor memory's write port (``addr``, ``data``, ``en``; with
        ``program_depth`` only).
    cfg_requant, cfg_act, cfg_weight, cfg_threshold, cfg_add : Out(stream)
        The core's table write ports (those it has).
    """

    def __init__(self, config, *, core_signature):
        if config.depthwise != ("cfg_add" in core_signature.members):
            raise ValueError(f"An accelerator with depthwise {config.depthwise} needs a core "
                             f"{'with' if config.depthwise else 'without'} add tables "
                             f"(ArrayCore lane_operands={config.depthwise})")
        self._config = config
        word = data.ArrayLayout(8, config.cols)
        depth_bits = config.act_depth_bits
        widest = max(config.cols, config.weight_bytes, REQUANT_BYTES)
        # (An ``In`` member's signature is seen from the core; its source sees it flipped.)
        cfg = {name: Out(member.signature.flip())
               for name, member in core_signature.members.items() if name.startswith("cfg_")}
        if config.program_depth:
            cfg["program_write"] = Out(wiring.Signature({
                "addr": Out(range(address_limit(Space.PROGRAM, config))), "data": Out(8),
                "en": Out(1)}))
        super().__init__({
            "space": In(8),
            "target": In(32),
            "word": In(max(config.cols * 8, config.weight_bits, REQUANT_BYTES * 8, 32)),
            "commit": In(1),
            "known": Out(1),
            "word_bytes": Out(range(widest + 1)),
            "addressable": Out(1),
            "host_write": Out(wiring.Signature({"addr": Out(depth_bits), "data": Out(word),
                                                "en": Out(config.rows)})),
            "weight_write": Out(wiring.Signature({"addr": Out(16),
                                                  "data": Out(config.weight_bits),
                                                  "en": Out(1)})),
            **cfg,
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        target, word, space, commit = self.target, self.word, self.space, self.commit
        fields = {sp: address_fields(sp, config) for sp in Space}

        def field(sp, name):
            f = fields[sp][name]
            return target[f.offset:f.offset + f.width] if f.width is not None \
                else target[f.offset:]
        act = fields[Space.ACT]
        # ACT_LANES: a word of ``lanes + 1`` bytes fills the low lanes; the others are 0. (Its
        # lanes field never changes within a WRITE: the word field is wider than any depth,
        # so the WRITE stops at RANGE before a carry could reach it.)
        lanes = field(Space.ACT_LANES, "lanes")
        act_lanes = space == Space.ACT_LANES
        m.d.comb += [self.host_write.addr.eq(field(Space.ACT, "word")),
                     self.weight_write.addr.eq(target), self.weight_write.data.eq(word),
                     self.weight_write.en.eq(commit & (space == Space.WEIGHT))]
        # The lanes an ACT_LANES word zeroes and the banks a word goes to, registered (as
        # ``addressable``): the host's words reach banks far apart through one register.
        zeroed = Signal(config.cols)
        banks = Signal(config.rows)
        m.d.sync += [zeroed[j].eq(act_lanes & (lanes < j)) for j in range(config.cols)]
        for j in range(config.cols):
            m.d.comb += self.host_write.data[j].eq(Mux(zeroed[j], 0, word.word_select(j, 8)))
        # (ACT_ALL's and ACT_LANES' word fields are ACT's: the low address bits.)
        for r in range(config.rows):
            m.d.sync += banks[r].eq(((space == Space.ACT) & (target[act["bank"].offset:] == r))
                                    | (space == Space.ACT_ALL) | act_lanes)
            m.d.comb += self.host_write.en[r].eq(commit & banks[r])
        lane_bits = config.lane_bits
        requant = self.cfg_requant
        m.d.comb += [requant.valid.eq(commit & (space == Space.REQUANT)),
                     requant.payload.lane.eq(field(Space.REQUANT, "lane") if lane_bits else 0),
                     requant.payload.group.eq(field(Space.REQUANT, "group"))]
        # The record's fields at their protocol positions, whatever the requantizer's output
        # width (its zero point is out_bits + 1 bits wide and takes the record's low bits).
        offset = 0
        for name, width, _ in REQUANT_RECORD:
            m.d.comb += getattr(requant.payload.param, name).eq(word[offset:offset + width])
            offset += width
        spaces = [Space.ACT, Space.ACT_ALL, Space.ACT_LANES, Space.WEIGHT, Space.REQUANT]
        if config.depthwise:
            # Residual add tables: every address below the limit names an entry.
            spaces.append(Space.ADD_TABLE)
            add_cfg = self.cfg_add
            m.d.comb += [add_cfg.valid.eq(commit & (space == Space.ADD_TABLE)),
                         add_cfg.payload.code.eq(field(Space.ADD_TABLE, "code")),
                         add_cfg.payload.input.eq(field(Space.ADD_TABLE, "input")),
                         add_cfg.payload.table.eq(field(Space.ADD_TABLE, "table")),
                         add_cfg.payload.value.eq(word[:32].as_signed())]
        if config.program_depth:
            # Stored RUN descriptors: a byte a word, every address below the limit.
            spaces.append(Space.PROGRAM)
            program = self.program_write
            m.d.comb += [program.addr.eq(target), program.data.eq(word[:8]),
                         program.en.eq(commit & (space == Space.PROGRAM))]
        if config.tables:
            spaces += list(TABLE_SPACES)
            act_cfg, w_cfg, t_cfg = self.cfg_act, self.cfg_weight, self.cfg_threshold
            m.d.comb += [
                act_cfg.valid.eq(commit & (space == Space.ACT_TABLE)),
                act_cfg.payload.all.eq(1),
                act_cfg.payload.code.eq(field(Space.ACT_TABLE, "code")),
                act_cfg.payload.value.eq(word[:8]),
                w_cfg.valid.eq(commit & (space == Space.WEIGHT_TABLE)),
                w_cfg.payload.lane.eq(
                    target[fields[Space.WEIGHT_TABLE]["lane"].offset:][:lane_bits]
                    if lane_bits else 0),
                w_cfg.payload.all.eq(field(Space.WEIGHT_TABLE, "all")),
                w_cfg.payload.code.eq(field(Space.WEIGHT_TABLE, "code")),
                w_cfg.payload.value.eq(word[:8]),
                t_cfg.valid.eq(commit & (space == Space.THRESHOLD)),
                t_cfg.payload.index.eq(field(Space.THRESHOLD, "index")),
                t_cfg.payload.lane.eq(field(Space.THRESHOLD, "lane") if lane_bits else 0),
                t_cfg.payload.group.eq(field(Space.THRESHOLD, "group")),
                t_cfg.payload.value.eq(word[:32].as_signed()),
            ]
        limit = Signal(32)
        with m.Switch(space):
            for sp in spaces:
                with m.Case(sp):
                    m.d.comb += [self.known.eq(1), limit.eq(address_limit(sp, config))]
                    if sp == Space.ACT_LANES:
                        m.d.comb += self.word_bytes.eq(Mux(lanes < config.cols, lanes + 1,
                                                           config.cols))
                    else:
                        m.d.comb += self.word_bytes.eq(word_bytes(sp, config))
        # Lane and threshold-index fields must name a real lane / threshold. (A lane field
        # exactly ``lane_bits`` wide on a power-of-two array always does.)
        lane_ok = Signal()
        m.d.comb += lane_ok.eq(1)
        some_lanes_missing = lane_bits and (1 << lane_bits) != config.cols
        with m.Switch(space):
            if some_lanes_missing:
                with m.Case(Space.REQUANT):
                    m.d.comb += lane_ok.eq(field(Space.REQUANT, "lane") < config.cols)
                with m.Case(Space.THRESHOLD):
                    m.d.comb += lane_ok.eq(field(Space.THRESHOLD, "lane") < config.cols)
            if config.tables:
                with m.Case(Space.WEIGHT_TABLE):
                    # The table's lane field is wider than ``lane_bits``: its upper bits must
                    # be clear, unless the entry goes to every lane.
                    lane = field(Space.WEIGHT_TABLE, "lane")
                    named = (lane[lane_bits:] == 0) & ((lane[:lane_bits] < config.cols)
                                                       if some_lanes_missing else 1)
                    m.d.comb += lane_ok.eq(field(Space.WEIGHT_TABLE, "all") | named)
        index_ok = Signal()
        m.d.comb += index_ok.eq(lane_ok)
        with m.If(act_lanes):
            # Every lane count's words lie below ``act_depth``.
            m.d.comb += index_ok.eq(target[:ACT_LANES_WORD_BITS] < config.act_depth)
        if config.tables:
            with m.If(space == Space.THRESHOLD):
                m.d.comb += index_ok.eq(lane_ok
                                        & (field(Space.THRESHOLD, "index") < config.thresholds))
        # Whether ``target`` may be written, registered: it changes only in WRITE_COMMIT and
        # DECODE, each at least two cycles before the next WRITE_COMMIT reads this.
        m.d.sync += self.addressable.eq((target < limit) & index_ok)
        return m

