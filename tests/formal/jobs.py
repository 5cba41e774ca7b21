"""The formal jobs: each block's harness with the depth it is proven to, and the broken
variants with the properties that must catch them (see ``docs/formal.md``)."""

from sparqforge.sim.formal import (
    feeder,
    host_link,
    mac_array,
    requantizer,
    threshold_unit,
    writeback,
)

#: name -> (make the harness, mode, depth). Every property of the harness must hold.
PROOFS = {
    "mac_array": (lambda: mac_array.MacArrayHarness(mac_array.mac_array()), "bmc", 24),
    "requantizer": (lambda: requantizer.make("pass"), "bmc", 28),
    "threshold_unit": (lambda: threshold_unit.make("pass"), "bmc", 18),
    "reply_queue": (lambda: host_link.make("reply_queue"), "bmc", 16),
    "transmitter": (lambda: host_link.make("transmitter"), "bmc", 16),
    "receiver": (lambda: host_link.make("receiver"), "bmc", 24),
    "receiver_idle": (lambda: host_link.make("receiver_idle"), "prove", 8),
    "feeder": (lambda: feeder.make("pass"), "bmc", 22),
    "writeback": (lambda: writeback.make("pass"), "bmc", 16),
}

#: name -> (make the harness, mode, depth, properties any one of which must fail).
BROKEN = {
    "mac_array_overflow": (
        lambda: mac_array.MacArrayHarness(mac_array.mac_array(max_depth=3), tile_beats=4),
        "bmc", 24, {"acc_in_range", "o_data"}),
    "mac_array_ready_ignores_shadow": (
        lambda: mac_array.MacArrayHarness(mac_array.mac_array(cls=mac_array.ReadyIgnoresShadow)),
        "bmc", 24, {"o_backlog", "o_data"}),
    "mac_array_unstable": (
        lambda: mac_array.MacArrayHarness(mac_array.mac_array(), fault="unstable"),
        "bmc", 24, {"o_payload_held"}),
    "mac_array_valid_drop": (
        lambda: mac_array.MacArrayHarness(mac_array.mac_array(), fault="valid_drop"),
        "bmc", 24, {"o_valid_held"}),
    "mac_array_drop": (
        lambda: mac_array.MacArrayHarness(mac_array.mac_array(), fault="drop"),
        "bmc", 24, {"o_data", "o_drained", "o_no_extra_row"}),
    "mac_array_duplicate": (
        lambda: mac_array.MacArrayHarness(mac_array.mac_array(), fault="duplicate"),
        "bmc", 24, {"o_data", "o_no_extra_row", "o_backlog"}),
    "requantizer_ready_ignores_queue": (
        lambda: requantizer.make("ready"), "bmc", 28,
        {"i_capacity", "o_in_order", "o_drained"}),
    "requantizer_drop": (lambda: requantizer.make("drop"), "bmc", 28,
                         {"o_in_order", "o_drained"}),
    "requantizer_unstable": (lambda: requantizer.make("unstable"), "bmc", 28,
                             {"o_payload_held"}),
    "threshold_unit_ready_ignores_queue": (
        lambda: threshold_unit.make("ready"), "bmc", 18,
        {"i_capacity", "o_in_order", "o_drained"}),
    "threshold_unit_duplicate": (lambda: threshold_unit.make("duplicate"), "bmc", 18,
                                 {"o_in_order", "o_no_extra_beat"}),
    "reply_queue_ready_ignores_stage": (
        lambda: host_link.make("reply_queue:ready"), "bmc", 16,
        {"empty", "o_in_order", "i_capacity", "o_drained"}),
    "reply_queue_drop": (lambda: host_link.make("reply_queue:drop"), "bmc", 16,
                         {"o_in_order", "o_drained", "empty"}),
    "reply_queue_valid_drop": (lambda: host_link.make("reply_queue:valid_drop"), "bmc", 16,
                               {"o_valid_held"}),
    "transmitter_always_ready": (lambda: host_link.make("transmitter:ready"), "bmc", 16,
                                 {"i_not_while_owed", "tx_data_owed"}),
    "transmitter_unstable": (lambda: host_link.make("transmitter:unstable"), "bmc", 16,
                             {"tx_payload_held"}),
    "transmitter_duplicate": (lambda: host_link.make("transmitter:duplicate"), "bmc", 16,
                              {"tx_data_owed", "tx_framing", "tx_no_stray_byte", "tx_crc"}),
    "receiver_keeps_length": (lambda: host_link.make("receiver:keeps_length"), "bmc", 24,
                              {"done_only_after_end", "frame_length", "frame_bytes"}),
    "receiver_takes_while_done": (lambda: host_link.make("receiver:takes_while_done"), "bmc",
                                  24, {"rx_not_while_done", "frame_length", "done_held"}),
    "receiver_idle_keeps_length": (lambda: host_link.make("receiver_idle:keeps_length"),
                                   "prove", 8, {"idle_after_release"}),
    "feeder_weights_pop_with_activations": (lambda: feeder.make("pop"), "bmc", 22,
                                            {"w_beat", "w_payload_held", "w_valid_held",
                                             "all_beats_out", "w_no_extra_beat"}),
    "writeback_writes_without_row": (lambda: writeback.make("writes_without_row"), "bmc", 16,
                                     {"one_write_per_row"}),
}
