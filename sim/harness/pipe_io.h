// The pipe protocol between the host runtime and the link / UART harnesses
// (link_harness.cpp, uart_harness.cpp), little-endian:
//   request:  u32 length, u64 max_cycles, length bytes
//             (length RESET_REQUEST: no bytes follow; the harness resets the design)
//   response: u8 status, u64 cycles simulated for this request, u64 total cycles,
//             u64 loop nanoseconds (total), u32 n, n bytes
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

namespace pipe_io {

inline bool read_exact(void *buffer, size_t size) {
    return std::fread(buffer, 1, size, stdin) == size;
}

inline void write_all(const void *buffer, size_t size) { std::fwrite(buffer, 1, size, stdout); }

// A request length that asks for a reset of the design instead of bytes.
constexpr uint32_t RESET_REQUEST = 0xFFFFFFFFu;

// Reads one request into ``in`` and ``max_cycles``; false at the end of input. ``reset`` is
// set for a reset request (``in`` is then empty).
inline bool read_request(std::vector<uint8_t> &in, uint64_t &max_cycles, bool &reset) {
    uint32_t length;
    if (!read_exact(&length, 4) || !read_exact(&max_cycles, 8)) return false;
    reset = length == RESET_REQUEST;
    if (reset) length = 0;
    in.resize(length);
    return length == 0 || read_exact(in.data(), length);
}

inline void write_reply(uint8_t status, uint64_t cycles, uint64_t total, int64_t loop_ns,
                        const std::vector<uint8_t> &out) {
    const uint32_t n = out.size();
    write_all(&status, 1);
    write_all(&cycles, 8);
    write_all(&total, 8);
    write_all(&loop_ns, 8);
    write_all(&n, 4);
    if (n) write_all(out.data(), n);
    std::fflush(stdout);
}

}  // namespace pipe_io
