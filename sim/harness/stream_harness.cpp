// Generic stream testbench for a Verilated sparqforge block.
//
// Drives every input stream from a file of payload words and collects every output
// stream into a file, with independent random valid/ready stalls per stream, entirely in
// compiled code: Python only writes the stimulus and reads the results.
//
// Usage: harness DIR, where DIR/run.txt holds lines
//   seed S | max_cycles N | in NAME BEATS STALL PHASE | out NAME BEATS STALL
// An input stream starts once every input stream of a lower PHASE is consumed (so that
// configuration tables are written before data flows).
// and DIR/in_NAME.bin holds BEATS x WORDS little-endian uint32 payload words. Writes
// DIR/out_NAME.bin and DIR/result.txt ("status ok|timeout", "cycles", "first_fire",
// "sim_ns": wall time of the simulation loop).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "verilated.h"
#include "ports.h"  // generated: DUT, port accessors, IN_PORTS[], OUT_PORTS[]

namespace {

uint64_t xorshift(uint64_t &s) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

bool chance(uint64_t &s, double p) {
    if (p <= 0.0) return false;
    return static_cast<double>(xorshift(s) >> 11) * (1.0 / 9007199254740992.0) < p;
}

struct Stream {
    const PortDef *def = nullptr;
    std::vector<uint32_t> words;
    size_t beats = 0, index = 0;
    double stall = 0.0;
    unsigned phase = 0;
    uint64_t rng = 0;
    bool holding = false;
};

bool read_file(const std::string &path, std::vector<uint32_t> &words, size_t count) {
    words.assign(count, 0);
    if (count == 0) return true;
    FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    size_t got = std::fread(words.data(), sizeof(uint32_t), count, f);
    std::fclose(f);
    return got == count;
}

const PortDef *find_port(const PortDef *ports, size_t n, const std::string &name) {
    for (size_t i = 0; i < n; i++)
        if (name == ports[i].name) return &ports[i];
    return nullptr;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];
    std::vector<Stream> ins, outs;
    uint64_t seed = 1, max_cycles = 1000000;
    FILE *cfg = std::fopen((dir + "/run.txt").c_str(), "r");
    if (!cfg) {
        std::fprintf(stderr, "cannot open %s/run.txt\n", dir.c_str());
        return 2;
    }
    char kind[16], name[128];
    while (std::fscanf(cfg, "%15s", kind) == 1) {
        if (!std::strcmp(kind, "seed")) {
            if (std::fscanf(cfg, "%lu", &seed) != 1) return 2;
        } else if (!std::strcmp(kind, "max_cycles")) {
            if (std::fscanf(cfg, "%lu", &max_cycles) != 1) return 2;
        } else {
            Stream s;
            unsigned long beats;
            if (std::fscanf(cfg, "%127s %lu %lf", name, &beats, &s.stall) != 3) return 2;
            bool in = !std::strcmp(kind, "in");
            if (in && std::fscanf(cfg, "%u", &s.phase) != 1) return 2;
            s.def = in ? find_port(IN_PORTS, N_IN_PORTS, name)
                       : find_port(OUT_PORTS, N_OUT_PORTS, name);
            if (!s.def) {
                std::fprintf(stderr, "no %s stream named %s\n", kind, name);
                return 2;
            }
            s.beats = beats;
            if (in && !read_file(dir + "/in_" + name + ".bin", s.words, beats * s.def->words)) {
                std::fprintf(stderr, "short stimulus file for %s\n", name);
                return 2;
            }
            (in ? ins : outs).push_back(std::move(s));
        }
    }
    std::fclose(cfg);
    for (size_t i = 0; i < ins.size(); i++) ins[i].rng = seed * 0x9E3779B97F4A7C15ull + i + 1;
    for (size_t i = 0; i < outs.size(); i++) outs[i].rng = seed * 0xD1B54A32D192ED03ull + i + 1;

    auto context = std::make_unique<VerilatedContext>();
    auto dut = std::make_unique<DUT>(context.get());
    dut->clk = 0;
    dut->rst = 1;
    for (int i = 0; i < 4; i++) {
        dut->clk = 0; dut->eval();
        dut->clk = 1; dut->eval();
    }
    dut->rst = 0;

    const auto started = std::chrono::steady_clock::now();
    uint64_t cycle = 0, first_fire = 0;
    bool any_fire = false, timeout = false;
    std::vector<uint32_t> scratch(64);
    for (;;) {
        unsigned phase = ~0u;
        for (auto &s : ins)
            if (s.index < s.beats && s.phase < phase) phase = s.phase;
        for (auto &s : ins) {
            if (!s.holding && s.index < s.beats && s.phase <= phase &&
                !chance(s.rng, s.stall)) {
                s.holding = true;
                s.def->set_payload(dut.get(), &s.words[s.index * s.def->words]);
            }
            s.def->valid(dut.get()) = s.holding;
        }
        for (auto &s : outs) s.def->ready(dut.get()) = !chance(s.rng, s.stall);
        dut->clk = 0;
        dut->eval();
        bool done = true;
        for (auto &s : ins) {
            if (s.holding && s.def->ready(dut.get())) {
                s.holding = false;
                s.index++;
                if (!any_fire) first_fire = cycle;
                any_fire = true;
            }
            done = done && s.index == s.beats;
        }
        for (auto &s : outs) {
            if (s.def->valid(dut.get()) && s.def->ready(dut.get()) && s.index < s.beats) {
                s.def->get_payload(dut.get(), scratch.data());
                s.words.insert(s.words.end(), scratch.begin(), scratch.begin() + s.def->words);
                s.index++;
            }
            done = done && s.index == s.beats;
        }
        dut->clk = 1;
        dut->eval();
        cycle++;
        if (done) break;
        if (cycle >= max_cycles) {
            timeout = true;
            break;
        }
    }

    const auto sim_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::steady_clock::now() - started).count();
    for (auto &s : outs) {
        FILE *f = std::fopen((dir + "/out_" + s.def->name + ".bin").c_str(), "wb");
        if (!f) return 3;
        if (!s.words.empty()) std::fwrite(s.words.data(), sizeof(uint32_t), s.words.size(), f);
        std::fclose(f);
    }
    FILE *res = std::fopen((dir + "/result.txt").c_str(), "w");
    if (!res) return 3;
    std::fprintf(res, "status %s\ncycles %lu\nfirst_fire %lu\nsim_ns %lld\n",
                 timeout ? "timeout" : "ok", cycle, first_fire, static_cast<long long>(sim_ns));
    std::fclose(res);
    dut->final();
    return 0;
}
