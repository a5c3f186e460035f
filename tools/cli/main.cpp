// tfla: the command-line tool. git-style subcommands:
//   tfla info      library, NVRTC, driver and device information
//   tfla compile   compile kernel templates with NVRTC (no GPU needed)
//   tfla bench     time kernels on the GPU
//   tfla cache     inspect and maintain the tuned-config and cubin cache
//   tfla tune      tune kernels (GPU work in hidden `tfla tune-worker` processes)
#include <cstdio>
#include <string>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "tfla/tfla.hpp"
#include "tfla_cache/error.hpp"

namespace {
void usage(FILE* out) {
  std::fprintf(out,
               "usage: tfla <command> [options]\n\n"
               "commands:\n"
               "  info       library version, NVRTC, driver and device properties (--json)\n"
               "  compile    compile kernel templates with NVRTC, no GPU needed\n"
               "             (--arch sm_90a --all | --dtype bf16 --dims 256x512; --jobs N; --json)\n"
               "             stores the cubins in the cache (--no-cache: don't; --force: recompile\n"
               "             the ones already cached; --cache PATH)\n"
               "  bench      time kernels: bench forward [--variant exp,sig] [--seqs 512,...]\n"
               "             [--tokens 65536] [--nh 8] [--dqk 256] [--dv 512] [--dtype bf16]\n"
               "             [--config chunk=256,...] [--csv FILE] [--json]; bench backward|fwbw\n"
               "             [--saved]; bench overhead; bench step [--batch 1,4,16,64,256]\n"
               "             [--tokens 1,4]; bench gemm [--m 8192 --n 8192 --k 8192 --dtype bf16];\n"
               "             bench tma-copy [--mib 1024] (gemm and tma-copy need sm_90a)\n"
               "  cache      the tuned-config and cubin cache (--json, --cache PATH everywhere):\n"
               "               list [--op fwd --variant exp --dtype bf16 --env ID]   tuned entries\n"
               "               show <id | filter>     one entry with all its candidates\n"
               "               explain --op fwd --variant exp --dtype bf16 --dqk 256 --dv 512\n"
               "                       --bh 64 --seq 8192 [--no-normalize] [--layout bhsd]\n"
               "                                      which entry a lookup would use, and why\n"
               "               export FILE [--env ID,..] [--no-cubins] | import FILE (merge)\n"
               "               prune [--all-but-current] [--dry-run]   drop stale environments\n"
               "               verify                 integrity, checksums, cubin loads (GPU)\n"
               "               stats                  counts and sizes per environment\n"
               "               recorded [--env ID] [--clear]   shapes seen untuned (TFLA_RECORD_SHAPES=1)\n"
               "  tune       tune kernels on the GPU and store the winners in the cache:\n"
               "             [--op fwd|bwd|fwbw|step] [--variant exp,sig] [--dtype bf16] [--dqk 256]\n"
               "             [--dv 512] [--bh 64] [--seq 8192] | --shapes FILE (one shape a line:\n"
               "             op=fwbw variant=exp dtype=bf16 dqk=256 dv=512 bh=64 seq=8192)\n"
               "             | --from-recorded (the shapes recorded on this GPU);\n"
               "             --budget N (candidates per kernel family, default 24) --resume\n"
               "             --reps N --json --cache PATH\n"
               "  version    print the version\n\n"
               "exit codes: 0 ok, 1 failed, 2 usage error, 3 no CUDA driver or GPU\n"
               "environment: TFLA_LOG_LEVEL (trace..off), TFLA_DEVICE (ordinal),\n"
               "             TFLA_CACHE (cache file), TFLA_CACHE_DISABLE=1 (no disk cache),\n"
               "             TFLA_TUNED=0 (ignore tuned entries), TFLA_RECORD_SHAPES=1 (record\n"
               "             shapes without a tuned entry for tune --from-recorded)\n");
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
    if (cmd == "cache") return cmd_cache(rest);
    if (cmd == "tune") return cmd_tune(rest);
    if (cmd == "tune-worker") return cmd_tune_worker(rest);
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
  } catch (const tfla::cache::CacheError& e) {
    std::fprintf(stderr, "tfla %s: cache error (%s): %s\n", cmd.c_str(),
                 tfla::cache::to_string(e.code()), e.what());
    return kFailed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tfla %s: error: %s\n", cmd.c_str(), e.what());
    return kFailed;
  }
}
