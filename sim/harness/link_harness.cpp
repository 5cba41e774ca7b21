// Byte-link harness for the Verilated accelerator top, driven by the host runtime through
// pipes: all clocking and byte transfer happen here, Python only exchanges whole requests.
//
// Protocol on stdin / stdout (little-endian):
//   request:  u32 length, u64 max_cycles, length bytes for the rx stream (a length of
//             pipe_io::RESET_REQUEST resets the design, as a device restart would)
//   response: u8 status (0 ok, 1 max_cycles reached), u64 cycles simulated for this request,
//             u64 total cycles, u64 loop nanoseconds (total), u32 n, n bytes from the tx stream
// For each request the harness feeds the bytes into rx (one per cycle while rx.ready), keeps
// tx.ready high (unless told to stall, below), and runs until every byte is consumed, no
// reply byte is pending on tx and the top reports idle. The top must have ports clk,
// exec_clk, core_clk, rst, rx (stream of 8), tx (stream of 8), idle, exec_active and
// core_active. exec_clk / core_clk tick with clk while exec_active / core_active was high
// after the previous edge (a clock gate that latches its enable while the clock is low);
// with the argument --no-gating they tick every cycle.
//
// With the arguments --stall P [--seed S] the link stalls at random: in each cycle, with
// probability P, rx.valid stays low although a request byte is waiting (a byte once offered
// is held until taken, as a stream source must), and, independently, tx.ready is low (the
// reply path is back-pressured). The default is no stalls; the same seed gives the same
// stalls.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "Vtop.h"
#include "pipe_io.h"
#include "verilated.h"

namespace {

uint64_t xorshift(uint64_t &s) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

// True with probability p (never for p <= 0, so the default draws no random numbers).
bool chance(uint64_t &s, double p) {
    if (p <= 0.0) return false;
    return static_cast<double>(xorshift(s) >> 11) * (1.0 / 9007199254740992.0) < p;
}

}  // namespace

int main(int argc, char **argv) {
    bool gating = true;
    double stall = 0.0;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const std::string arg = argv[i];
        if (arg == "--no-gating") gating = false;
        else if (arg == "--stall" && i + 1 < argc) stall = std::strtod(argv[++i], nullptr);
        else if (arg == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 0);
    }
    // Independent streams for rx and tx; never zero, which xorshift would keep.
    uint64_t rx_rng = seed * 0x9E3779B97F4A7C15ull + 1;
    uint64_t tx_rng = seed * 0xD1B54A32D192ED03ull + 2;
    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(argc, argv);
    auto top = std::make_unique<Vtop>(context.get());
    // Reset, then every domain ticks a few cycles so that each reset synchronizer releases.
    auto reset = [&]() {
        top->rst = 1;
        top->rx___05Fvalid = 0;
        top->tx___05Fready = 1;
        for (int i = 0; i < 12; i++) {
            if (i == 4) top->rst = 0;
            top->clk = 0; top->exec_clk = 0; top->core_clk = 0; top->eval();
            top->clk = 1; top->exec_clk = 1; top->core_clk = 1; top->eval();
        }
    };
    reset();
    bool exec_tick = true, core_tick = true;
    uint64_t total = 0;
    int64_t loop_ns = 0;
    std::vector<uint8_t> in, out;
    for (;;) {
        uint64_t max_cycles;
        bool restart;
        if (!pipe_io::read_request(in, max_cycles, restart)) break;
        const uint32_t length = in.size();
        out.clear();
        if (restart) {
            reset();
            exec_tick = core_tick = true;
            total += 12;
            pipe_io::write_reply(0, 12, total, loop_ns, out);
            continue;
        }
        const auto started = std::chrono::steady_clock::now();
        size_t next = 0;
        uint64_t cycles = 0;
        int quiet = 0;  // cycles in a row with nothing fed or pending and the top idle
        uint8_t status = 0;
        bool offered = false;  // rx.valid was high and the byte not yet taken
        while (true) {
            offered = next < length && (offered || !chance(rx_rng, stall));
            top->rx___05Fvalid = offered;
            if (next < length) top->rx___05Fpayload = in[next];
            top->tx___05Fready = !chance(tx_rng, stall);
            top->clk = 0;
            top->exec_clk = 0;
            top->core_clk = 0;
            top->eval();
            const bool fed = offered && top->rx___05Fready;
            if (fed) offered = false;
            const bool pending = top->tx___05Fvalid;
            if (pending && top->tx___05Fready) out.push_back(top->tx___05Fpayload);
            top->clk = 1;
            top->exec_clk = exec_tick;
            top->core_clk = core_tick;
            top->eval();
            exec_tick = !gating || top->exec_active;
            core_tick = !gating || top->core_active;
            cycles++;
            if (fed) next++;
            quiet = (!fed && next == length && !pending && top->idle) ? quiet + 1 : 0;
            if (quiet >= 2) break;
            if (cycles >= max_cycles) {
                status = 1;
                break;
            }
        }
        loop_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now() - started).count();
        total += cycles;
        pipe_io::write_reply(status, cycles, total, loop_ns, out);
    }
    top->final();
    return 0;
}
