// UART harness for the Verilated board system (hw/soc.py SocTop), driven by the host
// runtime through pipes exactly like link_harness.cpp, so PipeTransport works unchanged;
// the difference is that every request byte is serialized here into 8N1 bits on uart_rx and
// every reply byte is deserialized from uart_tx, at UART_DIVISOR clock cycles per bit (a
// compile-time define, the Soc's divisor).
//
// Protocol on stdin / stdout (little-endian):
//   request:  u32 length, u64 max_cycles, length bytes to send on uart_rx
//   response: u8 status (0 ok, 1 max_cycles reached, 2 framing error on uart_tx),
//             u64 cycles simulated for this request, u64 total cycles,
//             u64 loop nanoseconds (total), u32 n, n bytes received from uart_tx
// For each request the harness sends the bytes back to back (start bit, eight data bits
// LSB first, stop bit; no idle time between characters) and runs until every bit has been
// sent, the line from the top is idle and the top reports idle. The top must have ports
// clk, rst, uart_rx, uart_tx and idle. The receiver samples each bit of uart_tx in its
// middle, as a real UART does, and checks the stop bit.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "Vtop.h"
#include "pipe_io.h"
#include "verilated.h"

#ifndef UART_DIVISOR
#error "compile with -DUART_DIVISOR=<clock cycles per bit>"
#endif

namespace {

constexpr uint32_t kDivisor = UART_DIVISOR;


// Decodes 8N1 characters from a line sampled once per clock cycle.
struct Receiver {
    int state = -1;        // -1 idle, 0 start bit, 1..8 data bits, 9 stop bit
    uint32_t timer = 0;    // cycles to the next sample
    uint32_t shift = 0;
    bool framing_error = false;

    void tick(int line, std::vector<uint8_t> &out) {
        if (state < 0) {
            if (!line) {
                state = 0;
                timer = kDivisor / 2;
            }
            return;
        }
        if (--timer != 0) return;
        timer = kDivisor;
        if (state == 0) {
            if (line) state = -1;              // a glitch
            else state = 1;
        } else if (state <= 8) {
            shift = (shift >> 1) | (line ? 0x80 : 0);
            state++;
        } else {
            if (line) out.push_back(static_cast<uint8_t>(shift));
            else framing_error = true;
            state = -1;
        }
    }
    bool busy() const { return state >= 0; }
};

}  // namespace

int main(int argc, char **argv) {
    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(argc, argv);
    auto top = std::make_unique<Vtop>(context.get());
    // Reset, then a few cycles so that the reset synchronizer releases.
    auto reset = [&]() {
        top->rst = 1;
        top->uart_rx = 1;
        for (int i = 0; i < 12; i++) {
            if (i == 4) top->rst = 0;
            top->clk = 0; top->eval();
            top->clk = 1; top->eval();
        }
    };
    reset();
    Receiver receiver;
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
            total += 12;
            pipe_io::write_reply(0, 12, total, loop_ns, out);
            continue;
        }
        receiver.framing_error = false;
        const auto started = std::chrono::steady_clock::now();
        const uint64_t bits = uint64_t(length) * 10;
        uint64_t bit = 0;          // the bit on the line
        uint32_t bit_timer = kDivisor;
        uint64_t cycles = 0;
        int quiet = 0;
        uint8_t status = 0;
        while (true) {
            int level = 1;
            if (bit < bits) {
                const uint32_t index = bit % 10;
                const uint8_t byte = in[bit / 10];
                level = index == 0 ? 0 : index == 9 ? 1 : (byte >> (index - 1)) & 1;
            }
            top->uart_rx = level;
            top->clk = 0;
            top->eval();
            receiver.tick(top->uart_tx, out);
            top->clk = 1;
            top->eval();
            cycles++;
            if (bit < bits && --bit_timer == 0) {
                bit++;
                bit_timer = kDivisor;
            }
            quiet = (bit == bits && top->idle && top->uart_tx && !receiver.busy())
                        ? quiet + 1 : 0;
            if (quiet >= 2) break;
            if (cycles >= max_cycles) {
                status = 1;
                break;
            }
        }
        if (status == 0 && receiver.framing_error) status = 2;
        loop_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now() - started).count();
        total += cycles;
        pipe_io::write_reply(status, cycles, total, loop_ns, out);
    }
    top->final();
    return 0;
}
