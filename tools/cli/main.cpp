// tfla: the command-line tool. git-style subcommands:
//   tfla info      library, NVRTC, driver and device information
//   tfla compile   compile kernel templates with NVRTC (no GPU needed)
//   tfla bench     time kernels on the GPU
#include <cstdio>
#include <string>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "tfla/tfla.hpp"

namespace {
void usage(FILE* out) {
  std::fprintf(out,
               "usage: tfla <command> [options]\n\n"
               "commands:\n"
               "  info       library version, NVRTC, driver and device properties (--json)\n"
               "  compile    compile kernel templates with NVRTC, no GPU needed\n"
               "             (--arch sm_90a --all | --dtype bf16 --dims 256x512; --jobs N; --json)\n"
               "  bench      time kernels: bench forward [--variant exp,sig] [--seqs 512,...]\n"
               "             [--tokens 65536] [--nh 8] [--dqk 256] [--dv 512] [--dtype bf16]\n"
               "             [--config chunk=256,...] [--csv FILE] [--json]\n"
               "  version    print the version\n\n"
               "exit codes: 0 ok, 1 failed, 2 usage error, 3 no CUDA driver or GPU\n"
               "environment: TFLA_LOG_LEVEL (trace..off), TFLA_DEVICE (ordinal)\n");
}
}  // namespace

int main(int argc, char** argv) {
  using namespace tfla::cli;
  if (argc < 2) {
    usage(stderr);
    return kUsage;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  try {
    if (cmd == "info") return cmd_info(rest);
    if (cmd == "compile") return cmd_compile(rest);
    if (cmd == "bench") return cmd_bench(rest);
    if (cmd == "version" || cmd == "--version") {
      std::printf("tfla %s\n", tfla::version().c_str());
      return kOk;
    }
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
      usage(stdout);
      return kOk;
    }
    std::fprintf(stderr, "tfla: unknown command '%s'\n\n", cmd.c_str());
    usage(stderr);
    return kUsage;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tfla %s: %s (see tfla help)\n", cmd.c_str(), e.what());
    return kUsage;
  } catch (const tfla::Error& e) {
    std::fprintf(stderr, "tfla %s: error: %s\n", cmd.c_str(), e.what());
    if (!e.details().empty()) std::fprintf(stderr, "%s\n", e.details().c_str());
    return e.code() == tfla::ErrorCode::NoDriver ? kNoGpu : kFailed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tfla %s: error: %s\n", cmd.c_str(), e.what());
    return kFailed;
  }
}
