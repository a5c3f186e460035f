// tfla: Tiled Flash Linear Attention kernels for the mLSTM on NVIDIA GPUs.
//
// The public C++ API. No CUDA, NVRTC or SQLite type appears here: device pointers are void*,
// streams are void* (a CUstream / cudaStream_t, null = the legacy default stream).
// Every function may throw tfla::Error; nothing here calls exit() or abort().
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace tfla {

// ---- errors --------------------------------------------------------------------------------
enum class ErrorCode {
  InvalidArgument = 1,  // a bad pointer, shape, stride, dtype or option
  Unsupported = 2,      // a valid request this build or device cannot run
  NoDriver = 3,         // no CUDA driver (libcuda) or no device
  Cuda = 4,             // a CUDA driver call failed
  Compile = 5,          // NVRTC failed to compile a kernel
  Cache = 6,            // the tuned-config cache failed
  Internal = 7,
};
const char* to_string(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, std::string details = {});
  ErrorCode code() const noexcept { return code_; }
  // Extra context: the NVRTC log and the kernel's name and arguments, a CUDA error name, ...
  const std::string& details() const noexcept { return details_; }

 private:
  ErrorCode code_;
  std::string details_;
};

// ---- enums ---------------------------------------------------------------------------------
enum class DType { BF16, FP16, FP32 };
enum class Variant { Exp, Sig };  // mLSTMexp (exponential input gate) / mLSTMsig (sigmoid)
const char* to_string(DType);
const char* to_string(Variant);
size_t dtype_bytes(DType);

// ---- library and device info ---------------------------------------------------------------
struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int64_t l2_bytes = 0;
  int64_t smem_optin_bytes = 0;  // max dynamic shared memory per block after opt-in
  int64_t smem_per_sm_bytes = 0; // shared memory of one SM, shared by its resident blocks
  int64_t total_memory_bytes = 0;
  std::string arch;  // NVRTC target, e.g. "sm_90a"
};
struct RuntimeInfo {
  std::string tfla_version;
  int nvrtc_major = 0, nvrtc_minor = 0;  // 0.0 when no NVRTC loads
  std::string nvrtc_path;           // the libnvrtc loaded, "" when none
  std::string nvrtc_found_by;       // where the search found it, e.g. "$CUDA_HOME"
  std::string nvrtc_builtins_path;  // the libnvrtc-builtins loaded with it
  std::string nvrtc_error;          // why none loaded (every place looked), empty when loaded
  bool driver_loaded = false;
  int driver_version = 0;      // e.g. 13000; 0 when no driver
  std::string driver_error;    // why the driver or device is unavailable, empty when fine
  std::vector<DeviceInfo> devices;
};
// Never throws for a missing driver or NVRTC: it reports them in driver_error, nvrtc_error.
RuntimeInfo runtime_info();
std::string version();

// ---- tensors -------------------------------------------------------------------------------
// Strides in elements of a (B, NH, S, D) tensor (or (B, NH, S) for gates). All zero means
// contiguous. The feature dimension D is always contiguous.
struct Strides {
  int64_t b = 0, h = 0, s = 0;
};

// The mLSTM problem: shapes, dtypes and math options shared by every op.
struct MlstmProblem {
  int64_t B = 0, NH = 0, S = 0, Dqk = 0, Dv = 0;
  DType dtype = DType::BF16;       // q, k, v, h (and dq, dk, dv, dh)
  DType gate_dtype = DType::FP32;  // i, f (FP32 or the input dtype)
  Variant variant = Variant::Exp;
  bool normalize = true;  // mLSTMsig only: divide by max(|n.q|, 1); mLSTMexp always normalizes
  float eps = 1e-6f;
  float scale = 0.f;  // 0 means 1 / sqrt(Dqk)
  // Packed sequences of variable lengths (FLA's cu_seqlens convention), for the forward and the
  // backward. num_seqs = N > 0: the B = 1, S = T tokens hold N sequences back to back, sequence
  // j at tokens [cu_seqlens[j], cu_seqlens[j + 1]) (ForwardTensors / BackwardTensors::
  // cu_seqlens: N + 1 non-decreasing offsets on the device, cu_seqlens[0] = 0, cu_seqlens[N] =
  // T). Each sequence runs from its own initial state and no token sees another sequence; an
  // empty sequence is allowed and does nothing (its last state is its initial state). States are
  // per sequence: C0, C_last, dC_last, dC0 (N, NH, Dqk, Dv), n (N, NH, Dqk), m (N, NH); h, norm,
  // m and the gradients keep the (1, NH, T, ...) layout. max_seqlen must bound every sequence's
  // length (it sizes grids and workspace; tokens past it are not processed, and offsets outside
  // [0, T] are clamped, as the library reads no offset on the host). Packed calls run the
  // chunkwise form, one walk per sequence (on the sm90 engine the fused forward walk or the
  // three kernels with mma.sync state walks, and its gradient tile kernels with the mma.sync dC
  // walk); a pinned config key that contradicts that is refused by name.
  int64_t num_seqs = 0;
  int64_t max_seqlen = 0;
};

// Kernel configuration: named integer parameters, e.g. {"chunk", 128}, {"siz_b_q", 64}.
// An empty config means "the library's choice" (the tuned or the heuristic default one).
using Config = std::map<std::string, int64_t>;
std::string to_string(const Config&);

struct ForwardTensors {
  const void* q = nullptr;  // (B, NH, S, Dqk) dtype
  const void* k = nullptr;  // (B, NH, S, Dqk) dtype
  const void* v = nullptr;  // (B, NH, S, Dv)  dtype
  const void* i = nullptr;  // (B, NH, S)      gate_dtype
  const void* f = nullptr;  // (B, NH, S)      gate_dtype
  Strides q_strides, k_strides, v_strides, i_strides, f_strides;
  void* h = nullptr;  // (B, NH, S, Dv) dtype, output
  Strides h_strides;
  float* norm = nullptr;  // (B, NH, S) fp32, optional out: the normalizer den_t
  float* m = nullptr;     // (B, NH, S) fp32, optional out: the stabilizer m_t
  // States are contiguous; C0 and C_last 8-byte aligned, the others 4-byte aligned.
  const float* C0 = nullptr;  // (B, NH, Dqk, Dv) fp32, optional initial state
  const float* n0 = nullptr;  // (B, NH, Dqk) fp32, optional
  const float* m0 = nullptr;  // (B, NH) fp32, optional
  float* C_last = nullptr;    // (B, NH, Dqk, Dv) fp32, optional out
  float* n_last = nullptr;    // (B, NH, Dqk) fp32, optional out
  float* m_last = nullptr;    // (B, NH) fp32, optional out
  // Optional: a caller-owned device buffer of mlstm_saved_size() bytes (256-byte aligned). The
  // forward keeps its gate data and chunk states there, and mlstm_backward given the same
  // buffer skips recomputing them (faster, at the cost of keeping the states alive).
  void* saved = nullptr;
  size_t saved_bytes = 0;
  // Packed sequences (MlstmProblem::num_seqs > 0): N + 1 offsets on the device, int32 (or int64
  // with cu_seqlens_int64).
  const void* cu_seqlens = nullptr;
  bool cu_seqlens_int64 = false;
};

struct LaunchOptions {
  void* stream = nullptr;          // CUstream; null = the legacy default stream
  void* workspace = nullptr;       // device scratch; null = the library allocates (stream-ordered)
  size_t workspace_bytes = 0;
  Config config;                   // pinned configuration; empty = the library's choice
};

// Bytes of device workspace mlstm_forward needs for this problem and configuration. with_saved:
// for a forward given a saved buffer (which holds everything else), the scratch of a state walk
// split into sequence segments (0 where the config does not split); without a workspace of that
// size such a forward allocates it stream-ordered itself.
size_t mlstm_forward_workspace_size(const MlstmProblem& problem, const Config& config = {},
                                    bool with_saved = false);
// The chunkwise TFLA forward. Asynchronous on options.stream; throws tfla::Error on bad input.
void mlstm_forward(const MlstmProblem& problem, const ForwardTensors& tensors,
                   const LaunchOptions& options = {});
// The configuration mlstm_forward would use for this problem (config keys filled in): the
// pinned keys over the tuned entry from the cache (when pinned is empty) or the default.
Config mlstm_forward_config(const MlstmProblem& problem, const Config& pinned = {});

struct BackwardTensors {
  const void* q = nullptr;  // (B, NH, S, Dqk) dtype, as given to the forward
  const void* k = nullptr;  // (B, NH, S, Dqk) dtype
  const void* v = nullptr;  // (B, NH, S, Dv)  dtype
  const void* i = nullptr;  // (B, NH, S)      gate_dtype
  const void* f = nullptr;  // (B, NH, S)      gate_dtype
  Strides q_strides, k_strides, v_strides, i_strides, f_strides;
  const void* dh = nullptr;  // (B, NH, S, Dv) dtype: gradient of h
  Strides dh_strides;
  const float* norm = nullptr;     // (B, NH, S) fp32: the forward's normalizer output (required)
  const float* C0 = nullptr;       // (B, NH, Dqk, Dv) fp32, 8-byte aligned: the forward's initial state, optional
  const float* n0 = nullptr;       // (B, NH, Dqk) fp32, optional
  const float* m0 = nullptr;       // (B, NH) fp32, optional
  const float* dC_last = nullptr;  // (B, NH, Dqk, Dv) fp32, 8-byte aligned: gradient of the returned C_S, optional
  void* dq = nullptr;  // (B, NH, S, Dqk) dtype, out
  void* dk = nullptr;  // (B, NH, S, Dqk) dtype, out
  void* dv = nullptr;  // (B, NH, S, Dv)  dtype, out
  Strides dq_strides, dk_strides, dv_strides;
  void* di = nullptr;  // (B, NH, S) gate_dtype, out
  void* df = nullptr;  // (B, NH, S) gate_dtype, out
  Strides di_strides, df_strides;
  float* dC0 = nullptr;  // (B, NH, Dqk, Dv) fp32, 8-byte aligned, optional out (dn0 = dm0 = 0)
  // Optional: the buffer the forward filled (ForwardTensors::saved). Forward and backward must
  // use the same chunk size; the size check catches a mismatch.
  const void* saved = nullptr;
  size_t saved_bytes = 0;
  // Packed sequences: the forward's offsets (ForwardTensors::cu_seqlens).
  const void* cu_seqlens = nullptr;
  bool cu_seqlens_int64 = false;
};

// The chunkwise TFLA backward (the normalizer is held constant, as in the seed). Chunk states
// are recomputed from q, k, v, i, f. Asynchronous on options.stream.
// with_saved: the size when the backward reads the forward's saved states (smaller). That
// backward runs at the chunk the forward filled the buffer with: the size is for a forward run
// with the library's default config, or at config's "chunk" where it names one (after a forward
// with another config, name its chunk: mlstm_forward_config(problem, that config).at("chunk")).
size_t mlstm_backward_workspace_size(const MlstmProblem& problem, const Config& config = {},
                                     bool with_saved = false);
void mlstm_backward(const MlstmProblem& problem, const BackwardTensors& tensors,
                    const LaunchOptions& options = {});
Config mlstm_backward_config(const MlstmProblem& problem, const Config& pinned = {});
// Bytes of a saved-states buffer (ForwardTensors::saved) for this problem and forward config.
size_t mlstm_saved_size(const MlstmProblem& problem, const Config& config = {});

// ---- recurrent step (generation) -------------------------------------------------------------
// problem.S is the number of tokens T of this call: T = 1 is one generation step, T > 1 runs a
// fused multi-step (speculative decoding, short appends) that keeps the state on chip between
// tokens. The states (fp32, contiguous) are read from C_src/n_src/m_src where given, else from
// C/n/m, and written to C/n/m, so a prefill's C_last/n_last/m_last continue directly:
// step(S2 tokens) after forward(S1) equals forward(S1+S2).
struct StepTensors {
  const void* q = nullptr;  // (B, NH, T, Dqk) dtype
  const void* k = nullptr;  // (B, NH, T, Dqk) dtype
  const void* v = nullptr;  // (B, NH, T, Dv)  dtype
  const void* i = nullptr;  // (B, NH, T)      gate_dtype
  const void* f = nullptr;  // (B, NH, T)      gate_dtype
  Strides q_strides, k_strides, v_strides, i_strides, f_strides;
  void* h = nullptr;  // (B, NH, T, Dv) dtype, out; must not overlap an input (it holds scratch first)
  Strides h_strides;
  float* C = nullptr;  // (B, NH, Dqk, Dv) fp32, the new state (required; 16-byte aligned)
  float* n = nullptr;  // (B, NH, Dqk) fp32, the new normalizer state (required)
  float* m = nullptr;  // (B, NH) fp32, the new stabilizer (required for mLSTMexp; mLSTMsig keeps m = 0)
  // The states the step starts from. Null: C, n, m themselves (updated in place). Else the step
  // reads these and writes C, n, m, leaving these as they were: a new state without a copy of
  // the old one. Each is either its destination itself or shares no byte with C, n, m or h.
  const float* C_src = nullptr;  // (B, NH, Dqk, Dv) fp32, 16-byte aligned
  const float* n_src = nullptr;  // (B, NH, Dqk) fp32
  const float* m_src = nullptr;  // (B, NH) fp32 (mLSTMexp; mLSTMsig ignores it)
};
// Asynchronous on options.stream; uses no workspace. options.config pins the step kernel's
// configuration (empty = tuned or default).
void mlstm_step(const MlstmProblem& problem, const StepTensors& tensors,
                const LaunchOptions& options = {});
Config mlstm_step_config(const MlstmProblem& problem, const Config& pinned = {});

// ---- backend: one object that picks the kernels ------------------------------------------------
// Configured once (like the seed's mLSTMBackend); picks the step, parallel or chunkwise kernels
// by sequence length and mode and never tunes on the hot path (the choice between parallel and
// chunkwise comes from the tuned-config cache, else the heuristic default).
enum class Mode { Train, Inference };
enum class KernelKind { Chunkwise, Parallel, Step };
const char* to_string(Mode);
const char* to_string(KernelKind);

struct BackendOptions {
  Mode mode = Mode::Train;
  Variant variant = Variant::Exp;
  bool normalize = true;
  DType dtype = DType::BF16;
  DType gate_dtype = DType::FP32;
  float eps = 1e-6f;
  float scale = 0.f;  // 0 means 1 / sqrt(Dqk)
  Config config;       // pinned forward/backward configuration; empty = tuned or default
  Config step_config;  // pinned step configuration
  // Inference: sequences of at most this many tokens run on the step kernel (fused multi-step)
  // instead of the chunkwise/parallel forward.
  int64_t max_step_tokens = 16;
};

class Backend {
 public:
  explicit Backend(BackendOptions options);
  const BackendOptions& options() const { return options_; }
  // The problem this backend runs for a shape.
  MlstmProblem problem(int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv) const;
  // Which kernels forward() would run for this shape; initial_states / last_states: whether
  // the call passes C0/n0/m0 / asks for C_last/n_last/m_last (the parallel kernels take
  // neither; the step kernel runs only in inference mode when last states are asked for).
  KernelKind choose(int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv,
                    bool initial_states = false, bool last_states = false) const;
  // h for the sequence from the initial states (t.C0/n0/m0, null = zero), last states into
  // t.C_last/n_last/m_last when given (they may alias C0/n0/m0 for an in-place update).
  // Returns the kernels used. The step path needs t.C_last, n_last, m_last (16-byte aligned
  // C_last): the step kernel reads C0/n0/m0 and writes the last states (a C0 off 16-byte
  // alignment is copied into C_last first).
  KernelKind forward(int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv,
                     const ForwardTensors& t, const LaunchOptions& o = {}) const;
  // Train mode: the gradients of forward(); t.norm must be the forward's norm output.
  void backward(int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv,
                const BackwardTensors& t, const LaunchOptions& o = {}) const;
  // One or a few generation tokens, states updated in place or from t.C_src/n_src/m_src.
  // In all three calls o gives the stream and workspace only: o.config must be empty (the
  // configs are BackendOptions'); a config there throws InvalidArgument.
  void step(int64_t B, int64_t NH, int64_t T, int64_t Dqk, int64_t Dv, const StepTensors& t,
            const LaunchOptions& o = {}) const;

 private:
  BackendOptions options_;
  Config chunkwise_config_;  // options_.config with parallel = 0, for calls with states
};

}  // namespace tfla
