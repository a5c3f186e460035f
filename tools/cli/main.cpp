// tfla: the command-line tool. git-style subcommands:
//   tfla info      library, NVRTC, driver and device information
//   tfla compile   compile kernel templates with NVRTC (no GPU needed)
//   tfla bench     time kernels on the GPU
//   tfla cache     inspect and maintain the tuned-config and cubin cache
//   tfla tune      tune kernels (GPU work in hidden `tfla tune-worker` processes)
// Exit codes: 0 ok, 1 failure, 2 usage error, 3 no CUDA driver or GPU. A usage error is found
// before any driver call. With --json, stdout holds one JSON document, also on failure (an
// error object); --help (or -h) after any command prints that command's help.
#include <cstdio>
#include <string>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "tfla/tfla.hpp"
#include "tfla_cache/error.hpp"

namespace {

const char* const kOverview =
    "usage: tfla <command> [options]      (tfla <command> --help: that command's options)\n\n"
    "commands:\n"
    "  info       library version, NVRTC, driver and device properties\n"
    "  compile    compile kernel templates with NVRTC into the cache, no GPU needed\n"
    "  bench      time kernels on the GPU: forward, backward, fwbw, step, overhead,\n"
    "             gemm, tma-copy (the sm_90a primitives)\n"
    "  cache      the tuned-config and cubin cache: list, show, explain, export, import,\n"
    "             prune, verify, stats, recorded\n"
    "  tune       tune kernels on the GPU and store the winners in the cache\n"
    "  version    print the version\n\n"
    "exit codes: 0 ok, 1 failed, 2 usage error, 3 no CUDA driver or GPU\n"
    "--json: stdout is one JSON document; on failure {\"ok\": false, \"exit_code\": N,\n"
    "        \"error\": {\"kind\": ..., \"message\": ...}}\n"
    "environment: TFLA_LOG_LEVEL (trace..off), TFLA_DEVICE (ordinal),\n"
    "             TFLA_CACHE (cache file; default $XDG_CACHE_HOME/tfla/tfla.sqlite, else\n"
    "             ~/.cache/tfla/tfla.sqlite, never the working directory),\n"
    "             TFLA_CACHE_DISABLE=1 (no disk cache), TFLA_TUNED=0 (ignore tuned entries),\n"
    "             TFLA_RECORD_SHAPES=1 (record shapes without a tuned entry for\n"
    "             tune --from-recorded); boolean variables take 1/0, true/false, yes/no, on/off\n";

const char* const kInfoHelp =
    "usage: tfla info [--json]\n"
    "  library version, NVRTC version, templates hash, driver and device properties, cache path.\n"
    "  Works without a GPU (it says why there is none).\n";

const char* const kCompileHelp =
    "usage: tfla compile (--all | --dtype bf16[,fp16,...] | --dims DQKxDV[,...]) [options]\n"
    "  deviceless NVRTC compilation of kernel template instantiations; stores the cubins in the\n"
    "  cache, where a process on a GPU of that arch finds them. A cached cubin that was imported\n"
    "  unverified is compiled again and checked byte for byte against the fresh one. The kernels\n"
    "  are those the library's default selections run on that arch (forward, backward with and\n"
    "  without states or saved states, step) for both variants, short and long sequences, one head\n"
    "  and a batch of heads.\n"
    "  --arch sm_90a     target: sm_80 or later, sm_90a and up with the a suffix (default sm_90a)\n"
    "  --every-family    also every other kernel family's default where it serves (fallbacks and\n"
    "                    the tuner's starting points)\n"
    "  --jobs N          compile threads (default: all cores)\n"
    "  --emit DIR        also write each cubin to DIR (an existing directory)\n"
    "  --cache PATH      the cache file (default: TFLA_CACHE or the default path)\n"
    "  --no-cache        do not read or store cubins; --force: recompile cached ones\n"
    "  --packed N:MAXLEN[,...]  instead, the kernels of packed calls (cu_seqlens) of N sequences\n"
    "                    up to MAXLEN tokens, at --heads NH (default 8), for --dtype and --dims\n"
    "                    (a call's kernels depend on the dims, MAXLEN's bucket and N's power of 2)\n"
    "  --verbose, --json\n"
    "  exit 1 when a kernel fails to compile or a compiled cubin could not be stored (unless\n"
    "  --no-cache or TFLA_CACHE_DISABLE=1 asked for no cache).\n";

const char* const kBenchHelp =
    "usage: tfla bench forward|backward|fwbw [--variant exp,sig] [--seqs 512,...] [--tokens 65536]\n"
    "                  [--nh 8] [--dqk 256] [--dv 512] [--dtype bf16] [--gate-dtype fp32]\n"
    "                  [--config chunk=256,...] [--saved] [--warmup 3] [--reps 10]\n"
    "                  [--csv FILE] [--json] [--varlen N] [--forget-mean 3]\n"
    "  --forget-mean M: forget-gate preactivations drawn from N(M, 1) (smaller M: faster decay)\n"
    "  --varlen N: N packed sequences (cu_seqlens) of random lengths, mean tokens / N, beside N\n"
    "              sequences of equal length (B = N, S = tokens / N), with the ratio of the times\n"
    "       tfla bench step [--batch 1,4,16,64,256] [--tokens 1,4] [same shape options]\n"
    "       tfla bench overhead [--json]\n"
    "       tfla bench gemm [--m 8192 --n 8192 --k 8192 --dtype bf16|fp16 --reps 20 --samples 4096]\n"
    "       tfla bench tma-copy [--mib 1024]   (gemm and tma-copy need sm_90a)\n"
    "  times kernels on the GPU (exit 3 without one; bad arguments are exit 2 first).\n";

const char* const kCacheHelp =
    "usage: tfla cache <command> [--cache PATH] [--json]\n"
    "  list [--op fwd --variant exp --dtype bf16 --env ID]   tuned entries\n"
    "  show <id | filter>     one entry with all its candidates\n"
    "  explain --op fwd|bwd|step --variant exp|sig --dtype bf16 --dqk 256 --dv 512 --bh 64\n"
    "          --seq 8192 [--no-normalize] [--layout bhsd]   which entry a lookup would use\n"
    "  export FILE [--env ID,...] [--no-cubins] [--force]\n"
    "                         write a bundle; an existing FILE is refused unless --force\n"
    "  import FILE [--trust-cubins]\n"
    "                         merge a bundle (older schemas are migrated); every row is\n"
    "                         validated and rejected rows are listed (exit 1 if any). Cubins\n"
    "                         arrive unverified: never loaded until a local compile of their\n"
    "                         key matches them (tfla compile, or the first use).\n"
    "                         --trust-cubins: load them as they are (trusted bundles only).\n"
    "  prune [--all-but-current] [--dry-run]   drop stale environments\n"
    "  verify                 integrity, row rules, checksums, cubin loads (GPU); exit 1 on\n"
    "                         any problem, including a damaged file moved aside by this run\n"
    "  stats                  counts and sizes per environment\n"
    "  recorded [--env ID] [--clear]   shapes seen untuned (TFLA_RECORD_SHAPES=1)\n"
    "  A file at the cache path that is not a tfla cache is never modified (exit 1, naming it);\n"
    "  a damaged tfla cache is renamed to PATH.corrupt-<time> and reported.\n";

const char* const kTuneHelp =
    "usage: tfla tune [--op fwd|bwd|fwbw|step] [--variant exp,sig] [--dtype bf16] [--dqk 256]\n"
    "                 [--dv 512] [--bh 64] [--seq 8192] [--normalize 0|1]\n"
    "       tfla tune --shapes FILE   (one shape a line:\n"
    "                 op=fwbw variant=exp dtype=bf16 dqk=256 dv=512 bh=64 seq=8192)\n"
    "       tfla tune --from-recorded (the shapes recorded on this GPU)\n"
    "  options: --budget N (candidates per kernel family, default 24) --resume --reps N\n"
    "           --warmup N --jobs N --timeout S --cache PATH --json\n"
    "  GPU work runs in `tfla tune-worker` processes started from this executable.\n";

const char* help_for(const std::string& cmd) {
  if (cmd == "info") return kInfoHelp;
  if (cmd == "compile") return kCompileHelp;
  if (cmd == "bench") return kBenchHelp;
  if (cmd == "cache") return kCacheHelp;
  if (cmd == "tune") return kTuneHelp;
  if (cmd == "version") return "usage: tfla version [--json]\n";
  return nullptr;
}

bool has_arg(const std::vector<std::string>& args, std::initializer_list<const char*> names) {
  for (const std::string& a : args)
    for (const char* n : names)
      if (a == n) return true;
  return false;
}

// Reports a failure: on stderr, and with --json also as the JSON error object on stdout.
int fail(const std::string& cmd, int exit_code, const char* kind, const std::string& message,
         const std::string& details = "", const char* code = nullptr) {
  using namespace tfla::cli;
  if (exit_code == kUsage)
    std::fprintf(stderr, "tfla %s: %s (see tfla %s --help)\n", cmd.c_str(), message.c_str(), cmd.c_str());
  else
    std::fprintf(stderr, "tfla %s: error: %s\n", cmd.c_str(), message.c_str());
  if (!details.empty()) std::fprintf(stderr, "%s\n", details.c_str());
  if (json_output()) {
    nlohmann::json err = {{"kind", kind}, {"message", message}};
    if (code) err["code"] = code;
    if (!details.empty()) err["details"] = details;
    print_json({{"ok", false}, {"exit_code", exit_code}, {"command", cmd}, {"error", err}});
  }
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tfla::cli;
  if (argc < 2) {
    std::fputs(kOverview, stderr);
    return kUsage;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    const char* text = rest.empty() ? kOverview : help_for(rest[0]);
    std::fputs(text ? text : kOverview, stdout);
    return text ? kOk : kUsage;
  }
  if (cmd != "tune-worker" && has_arg(rest, {"--help", "-h"})) {
    if (const char* text = help_for(cmd)) {
      std::fputs(text, stdout);
      return kOk;
    }
  }
  if (cmd == "version" || cmd == "--version") {
    const bool json = has_arg(rest, {"--json"});
    set_json_output(json);
    for (const std::string& a : rest)
      if (a != "--json") return fail("version", kUsage, "usage", "unexpected argument '" + a + "'");
    if (json) std::printf("{\"version\": \"%s\"}\n", tfla::version().c_str());
    else std::printf("tfla %s\n", tfla::version().c_str());
    return kOk;
  }
  set_json_output(cmd != "tune-worker" && has_arg(rest, {"--json"}));
  try {
    if (cmd == "info") return cmd_info(rest);
    if (cmd == "compile") return cmd_compile(rest);
    if (cmd == "bench") return cmd_bench(rest);
    if (cmd == "cache") return cmd_cache(rest);
    if (cmd == "tune") return cmd_tune(rest);
    if (cmd == "tune-worker") return cmd_tune_worker(rest);
    std::fprintf(stderr, "tfla: unknown command '%s'\n\n", cmd.c_str());
    std::fputs(kOverview, stderr);
    if (json_output()) fail(cmd, kUsage, "usage", "unknown command '" + cmd + "'");
    return kUsage;
  } catch (const UsageError& e) {
    return fail(cmd, kUsage, "usage", e.what());
  } catch (const CommandFailed& e) {
    return fail(cmd, e.exit_code(), e.exit_code() == kNoGpu ? "no_driver" : "failed", e.what());
  } catch (const tfla::Error& e) {
    const bool no_gpu = e.code() == tfla::ErrorCode::NoDriver;
    return fail(cmd, no_gpu ? kNoGpu : kFailed, no_gpu ? "no_driver" : "error", e.what(),
                e.details(), tfla::to_string(e.code()));
  } catch (const tfla::cache::CacheError& e) {
    return fail(cmd, kFailed, "cache", std::string("cache error: ") + e.what(), "",
                tfla::cache::to_string(e.code()));
  } catch (const std::exception& e) {
    return fail(cmd, kFailed, "error", e.what());
  }
}
