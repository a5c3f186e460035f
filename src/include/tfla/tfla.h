/* tfla: the C ABI. Every function returns a tfla_status; on failure the message is kept per
 * thread and read with tfla_last_error(). No CUDA type appears here: device pointers are void*,
 * streams are void* (CUstream / cudaStream_t, NULL = legacy default stream). */
#ifndef TFLA_TFLA_H
#define TFLA_TFLA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this C ABI: the layout of every struct and the signature of every function
 * declared here. It changes whenever one of them changes incompatibly. A program compiled against
 * this header checks tfla_abi_version() == TFLA_ABI_VERSION before its first other call (the
 * Python binding does so when it loads the library), so a library of another layout is refused
 * with a clear message instead of reading misplaced fields. */
#define TFLA_ABI_VERSION 2
int tfla_abi_version(void);

typedef enum {
  TFLA_OK = 0,
  TFLA_ERROR_INVALID_ARGUMENT = 1,
  TFLA_ERROR_UNSUPPORTED = 2,
  TFLA_ERROR_NO_DRIVER = 3,
  TFLA_ERROR_CUDA = 4,
  TFLA_ERROR_COMPILE = 5,
  TFLA_ERROR_CACHE = 6,
  TFLA_ERROR_INTERNAL = 7
} tfla_status;

typedef enum { TFLA_BF16 = 0, TFLA_FP16 = 1, TFLA_FP32 = 2 } tfla_dtype;
typedef enum { TFLA_VARIANT_EXP = 0, TFLA_VARIANT_SIG = 1 } tfla_variant;

typedef struct {
  int64_t B, NH, S, Dqk, Dv;
  int dtype;      /* tfla_dtype of q, k, v, h */
  int gate_dtype; /* tfla_dtype of i, f: TFLA_FP32 or the input dtype */
  int variant;    /* tfla_variant */
  int normalize;  /* mLSTMsig only */
  float eps;      /* 1e-6 typical */
  float scale;    /* 0 = 1/sqrt(Dqk) */
  /* Packed sequences (tfla.hpp MlstmProblem::num_seqs): 0, 0 for the (B, NH, S) layout; else
   * B = 1, S = T and the tensors' cu_seqlens hold N + 1 offsets on the device. Forward and
   * backward only. */
  int64_t num_seqs;   /* N */
  int64_t max_seqlen; /* a bound of every sequence's length, in [1, T] */
} tfla_problem;

typedef struct {
  int64_t b, h, s; /* elements; all zero = contiguous (B, NH, S, D) */
} tfla_strides;

typedef struct {
  const void* q; /* (B, NH, S, Dqk) */
  const void* k; /* (B, NH, S, Dqk) */
  const void* v; /* (B, NH, S, Dv) */
  const void* i; /* (B, NH, S) */
  const void* f; /* (B, NH, S) */
  tfla_strides q_strides, k_strides, v_strides, i_strides, f_strides;
  void* h; /* (B, NH, S, Dv) out */
  tfla_strides h_strides;
  float* norm;       /* (B, NH, S) optional out */
  float* m;          /* (B, NH, S) optional out */
  const float* C0;   /* (B, NH, Dqk, Dv) optional, 8-byte aligned */
  const float* n0;   /* (B, NH, Dqk) optional */
  const float* m0;   /* (B, NH) optional */
  float* C_last;     /* (B, NH, Dqk, Dv) optional out, 8-byte aligned */
  float* n_last;     /* (B, NH, Dqk) optional out */
  float* m_last;     /* (B, NH) optional out */
  void* saved;        /* optional: tfla_mlstm_saved_size() bytes kept for the backward */
  size_t saved_bytes;
  const void* cu_seqlens; /* packed sequences: (N + 1) offsets on the device, else NULL */
  int cu_seqlens_int64;   /* 1: int64 offsets, 0: int32 */
} tfla_forward_tensors;

typedef struct {
  const void* q; /* (B, NH, S, Dqk) as given to the forward */
  const void* k; /* (B, NH, S, Dqk) */
  const void* v; /* (B, NH, S, Dv) */
  const void* i; /* (B, NH, S) */
  const void* f; /* (B, NH, S) */
  tfla_strides q_strides, k_strides, v_strides, i_strides, f_strides;
  const void* dh; /* (B, NH, S, Dv) */
  tfla_strides dh_strides;
  const float* norm;    /* (B, NH, S) the forward's norm output (required) */
  const float* C0;      /* (B, NH, Dqk, Dv) optional, 8-byte aligned */
  const float* n0;      /* (B, NH, Dqk) optional */
  const float* m0;      /* (B, NH) optional */
  const float* dC_last; /* (B, NH, Dqk, Dv) optional, 8-byte aligned */
  void* dq;             /* (B, NH, S, Dqk) out */
  void* dk;             /* (B, NH, S, Dqk) out */
  void* dv;             /* (B, NH, S, Dv) out */
  tfla_strides dq_strides, dk_strides, dv_strides;
  void* di; /* (B, NH, S) out */
  void* df; /* (B, NH, S) out */
  tfla_strides di_strides, df_strides;
  float* dC0;          /* (B, NH, Dqk, Dv) optional out, 8-byte aligned */
  const void* saved;   /* optional: the forward's saved buffer */
  size_t saved_bytes;
  const void* cu_seqlens; /* packed sequences: the forward's offsets, else NULL */
  int cu_seqlens_int64;
} tfla_backward_tensors;

/* The message of this thread's last failed call ("" if none). Valid until the next call. */
const char* tfla_last_error(void);
const char* tfla_version(void);

/* runtime_info() as a JSON object, written to buf (NUL-terminated; *needed gets the length + 1):
 * tfla_version, abi_version, nvrtc_loaded, nvrtc_version, nvrtc_path, nvrtc_found_by, nvrtc_builtins_path,
 * nvrtc_error, driver_loaded, driver_version, driver_error, devices (one object per device).
 * Needs no driver or NVRTC: what is missing is reported in the *_error fields. */
tfla_status tfla_runtime_info(char* buf, size_t buf_bytes, size_t* needed);

/* config: "key=value,..." (e.g. "chunk=256") or NULL for the library's choice. */
tfla_status tfla_mlstm_forward_workspace_size(const tfla_problem* problem, const char* config,
                                              size_t* bytes);
/* The forward's workspace when it is given a saved buffer (which holds everything else): the
 * scratch of a state walk split into sequence segments, 0 where the config does not split. */
tfla_status tfla_mlstm_forward_saved_workspace_size(const tfla_problem* problem, const char* config,
                                                    size_t* bytes);
/* workspace may be NULL: the library then allocates stream-ordered scratch itself. */
tfla_status tfla_mlstm_forward(const tfla_problem* problem, const tfla_forward_tensors* tensors,
                               void* stream, void* workspace, size_t workspace_bytes,
                               const char* config);

tfla_status tfla_mlstm_backward_workspace_size(const tfla_problem* problem, const char* config,
                                               size_t* bytes);
/* The backward's workspace when it reads the forward's saved buffer (smaller: no recomputed
 * states). That backward runs at the buffer's chunk: the size is for a forward run with the
 * library's default config, or at config's chunk where it names one (after a forward with another
 * config, name that forward's chunk). */
tfla_status tfla_mlstm_backward_saved_workspace_size(const tfla_problem* problem, const char* config,
                                                     size_t* bytes);
tfla_status tfla_mlstm_saved_size(const tfla_problem* problem, const char* config, size_t* bytes);
tfla_status tfla_mlstm_backward(const tfla_problem* problem, const tfla_backward_tensors* tensors,
                                void* stream, void* workspace, size_t workspace_bytes,
                                const char* config);

/* ---- recurrent step: problem->S = T tokens (1 = one generation step), states in place or from sources ---- */
typedef struct {
  const void* q; /* (B, NH, T, Dqk) */
  const void* k; /* (B, NH, T, Dqk) */
  const void* v; /* (B, NH, T, Dv) */
  const void* i; /* (B, NH, T) */
  const void* f; /* (B, NH, T) */
  tfla_strides q_strides, k_strides, v_strides, i_strides, f_strides;
  void* h; /* (B, NH, T, Dv) out; must not overlap an input (it holds scratch first) */
  tfla_strides h_strides;
  float* C; /* (B, NH, Dqk, Dv) fp32, the new state (the old one too where C_src is NULL) */
  float* n; /* (B, NH, Dqk) fp32, likewise with n_src */
  float* m; /* (B, NH) fp32, likewise with m_src (mLSTMsig: may be NULL) */
  /* The states the step starts from; NULL = C, n, m themselves (in place). Each is its
   * destination itself or shares no byte with C, n, m or h; C_src 16-byte aligned. */
  const float* C_src;
  const float* n_src;
  const float* m_src;
} tfla_step_tensors;

tfla_status tfla_mlstm_step(const tfla_problem* problem, const tfla_step_tensors* tensors,
                            void* stream, const char* config);

/* The configuration an op would use ("key=value,..."), written to buf (NUL-terminated).
 * op: "fwd", "bwd" or "step"; pinned: NULL or "key=value,...". *needed gets the length + 1. */
tfla_status tfla_mlstm_config(const tfla_problem* problem, const char* op, const char* pinned,
                              char* buf, size_t buf_bytes, size_t* needed);

/* ---- backend ---- */
typedef enum { TFLA_MODE_TRAIN = 0, TFLA_MODE_INFERENCE = 1 } tfla_mode;
typedef enum { TFLA_KERNEL_CHUNKWISE = 0, TFLA_KERNEL_PARALLEL = 1, TFLA_KERNEL_STEP = 2 } tfla_kernel_kind;
typedef struct {
  int mode;       /* tfla_mode */
  int variant;    /* tfla_variant */
  int normalize;
  int dtype;      /* tfla_dtype */
  int gate_dtype; /* tfla_dtype */
  float eps;
  float scale;                 /* 0 = 1/sqrt(Dqk) */
  const char* config;          /* NULL or "key=value,...": pinned forward/backward config */
  const char* step_config;     /* NULL or pinned step config */
  int64_t max_step_tokens;     /* inference: S <= this runs on the step kernel; <= 0 = default */
} tfla_backend_options;
typedef struct tfla_backend tfla_backend;

tfla_status tfla_backend_create(const tfla_backend_options* options, tfla_backend** backend);
void tfla_backend_destroy(tfla_backend* backend);
/* *kind: the tfla_kernel_kind forward() would use for this shape, with or without initial
 * states passed and last states asked for. */
tfla_status tfla_backend_choose(const tfla_backend* backend, int64_t B, int64_t NH, int64_t S,
                                int64_t Dqk, int64_t Dv, int initial_states, int last_states,
                                int* kind);
tfla_status tfla_backend_forward(const tfla_backend* backend, int64_t B, int64_t NH, int64_t S,
                                 int64_t Dqk, int64_t Dv, const tfla_forward_tensors* tensors,
                                 void* stream, int* kind);
tfla_status tfla_backend_backward(const tfla_backend* backend, int64_t B, int64_t NH, int64_t S,
                                  int64_t Dqk, int64_t Dv, const tfla_backward_tensors* tensors,
                                  void* stream);
tfla_status tfla_backend_step(const tfla_backend* backend, int64_t B, int64_t NH, int64_t T,
                              int64_t Dqk, int64_t Dv, const tfla_step_tensors* tensors,
                              void* stream);

#ifdef __cplusplus
}

#endif
#endif /* TFLA_TFLA_H */
