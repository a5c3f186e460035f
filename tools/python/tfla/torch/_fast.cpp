// tfla's per-call host path of the PyTorch binding in C++: a CPython module built once per torch
// version by torch.utils.cpp_extension (tfla.torch._fast loads it; TFLA_TORCH_EXTENSION=0 keeps
// the ctypes path).
//
// The binding checks and prepares a call once per shape (an entry): the library's C structs
// filled, everything but the device pointers constant. `make` records such an entry as a
// capsule: the arguments' signatures (exact type, dispatch keys, dtype, device, sizes, strides),
// the outputs a call allocates and how, where each device pointer goes in the entry's tensor
// struct, which library function it calls and what it returns. `call` then does a warm call's
// whole host path in one C call: the signature check, the allocations (torch's caching
// allocator, as the Python path's empty_like / new_empty / UntypedStorage), the current stream,
// the pointers written into a copy of the tensor struct and the library call, with the GIL
// released. It returns the recorded result (a tuple of arguments and outputs); None where
// anything differs from the recorded entry (a signature, the current device, a pointer's
// alignment, an allocation that failed), so that the caller runs its Python path, which raises or
// re-checks as it would; or the library's nonzero status (an int), which the caller turns into
// its error.
//
// `node` does the same for the differentiated chunkwise forward and attaches an autograd node
// written in C++, whose backward runs the backward entry (the section "The chunkwise forward with
// its autograd node in C++" below).
//
// Only the C ABI of libtfla is used: the function pointer and the problem struct's and config
// text's addresses come from the Python entry (ctypes), which the capsule keeps alive; the tensor
// struct is copied at `make` (each call patches its own copy, so calls from two threads, as the
// autograd engine's backward beside a forward, never share one).

#include <Python.h>

#include <ATen/Context.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/Device.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace {

// How the library function is called (its C signature).
enum Form : int {
  kStep = 0,     // tfla_mlstm_step(problem, tensors, stream, config)
  kBackend = 1,  // tfla_backend_forward(backend, B, NH, S, Dqk, Dv, tensors, stream, int* kind)
  kOp = 2,       // tfla_mlstm_forward/backward(problem, tensors, stream, workspace, bytes, config)
};
// How an output is allocated: empty_like(arg), empty(shape, arg's device, dtype), or a byte
// buffer on arg's device (skipped, a null pointer, when its size is 0).
enum How : int { kLike = 0, kNew = 1, kBytes = 2 };

using StepFn = int (*)(const void*, void*, void*, const char*);
using BackendFn = int (*)(const void*, int64_t, int64_t, int64_t, int64_t, int64_t, void*, void*, int*);
using OpFn = int (*)(const void*, void*, void*, void*, size_t, const char*);

constexpr const char* kCapsule = "tfla_fast.Entry";
constexpr int kMaxArgs = 32;  // the most arguments an entry takes

struct Sig {
  bool present = false;
  c10::DispatchKeySet keys;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  c10::Device device{c10::kCPU};
  std::vector<int64_t> sizes, strides;
};

struct Alloc {
  int how = kLike;
  int arg = 0;  // the argument it is like, or whose device it takes
  c10::ScalarType dtype = c10::ScalarType::Float;
  std::vector<int64_t> shape;  // kNew: the shape; kBytes: {bytes}
  // The output's layout as at::empty_like / at::empty make it for the entry's signature (fixed
  // by it), so that a call allocates it straight from the device's allocator: sizes, strides,
  // dtype (kLike: the argument's).
  std::vector<int64_t> sizes, strides;
  c10::ScalarType out_dtype = c10::ScalarType::Float;
};

struct Entry {
  PyObject* owner = nullptr;  // the Python objects that own the problem struct and config text
  int form = kStep;
  void* fn = nullptr;
  const void* first = nullptr;  // the tfla_problem, or the backend handle
  int64_t dims[5] = {0, 0, 0, 0, 0};
  std::vector<char> tensors;    // the tensor struct as prepared; each call patches a copy
  const char* config = nullptr;
  std::vector<Sig> sigs;                       // one per argument
  std::vector<std::pair<int, int>> aligned;    // (argument, bytes): pointers the C path requires aligned
  std::vector<Alloc> allocs;
  std::vector<std::pair<int64_t, int>> slots;  // (offset in the struct, source)
  int workspace = -1;                          // kOp: the source passed as the workspace (-1: none)
  size_t workspace_bytes = 0;
  PyObject* result = nullptr;  // the result's template: ints are sources, tuples nest, None stays
  std::vector<int> flat;       // the template's sources where it is a flat tuple of ints
  c10::Device device{c10::kCPU};  // the first argument's: the current device a call must find
  // The allocations without torch's dispatcher: at::detail::empty_strided_generic over the
  // allocator that at::empty allocated from when the entry was made (CUDA: torch's caching
  // allocator, or the one a program installed), what at::empty does once its dispatch has chosen
  // the backend. Null for a device other than CUDA or CPU, or an argument with named dimensions
  // (empty_like keeps the names): at::empty serves.
  c10::Allocator* allocator = nullptr;
  c10::DispatchKeySet backend_keys;
  std::atomic<int64_t> calls{0};  // (calls may come from the autograd engine's threads too)
};
// A source: argument j (0 <= j < nargs), output j (nargs + j), or -1 (a null pointer / None).

bool matches(const Sig& s, const at::Tensor* t) {
  if (t == nullptr) return !s.present;
  return s.present && t->key_set() == s.keys && t->scalar_type() == s.dtype && t->device() == s.device &&
         t->sizes().equals(s.sizes) && t->strides().equals(s.strides);
}

Sig record(PyObject* obj) {
  Sig s;
  if (obj == Py_None) return s;
  const at::Tensor& t = THPVariable_Unpack(obj);
  s.present = true;
  s.keys = t.key_set();
  s.dtype = t.scalar_type();
  s.device = t.device();
  s.sizes = t.sizes().vec();
  s.strides = t.strides().vec();
  return s;
}

void destroy(PyObject* capsule) {
  auto* e = static_cast<Entry*>(PyCapsule_GetPointer(capsule, kCapsule));
  if (e == nullptr) return;
  Py_XDECREF(e->owner);
  Py_XDECREF(e->result);
  delete e;
}

// A sequence of ints, or of sequences of ints (flattened in order) when nested.
bool ints(PyObject* seq, std::vector<int64_t>& out) {
  PyObject* fast = PySequence_Fast(seq, "tfla_fast: expected a sequence of ints");
  if (fast == nullptr) return false;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  out.clear();
  for (Py_ssize_t j = 0; j < n; ++j) out.push_back(PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, j)));
  Py_DECREF(fast);
  return !PyErr_Occurred();
}

std::vector<int64_t> contiguous(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> st(sizes.size(), 1);
  for (size_t j = sizes.size(); j-- > 1;) st[j - 1] = st[j] * std::max<int64_t>(sizes[j], 1);
  return st;
}

void* address(PyObject* o) { return o == Py_None ? nullptr : PyLong_AsVoidPtr(o); }

bool fail(const char* what) {
  PyErr_SetString(PyExc_ValueError, what);
  return false;
}

// Checks a result template: ints in [-1, nsources), tuples of them (nested), None.
bool valid_result(PyObject* r, int nsources) {
  if (r == Py_None) return true;
  if (PyLong_Check(r)) {
    long v = PyLong_AsLong(r);
    return v >= -1 && v < nsources;
  }
  if (!PyTuple_Check(r)) return false;
  for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(r); ++j)
    if (!valid_result(PyTuple_GET_ITEM(r, j), nsources)) return false;
  return true;
}

// make(owner, form, fn, first, dims, tensors, tensors_size, config, args, aligned, allocs, slots,
//      workspace, workspace_bytes, result)
//   args: the arguments (tensors or None) whose signatures the entry was made for;
//   aligned: ((argument, bytes), ...); allocs: ((how, arg, dtype, shape), ...) with dtype a
//   torch.dtype (or None for kLike / kBytes); slots: ((offset, source), ...); result: see Entry.
PyObject* make(PyObject*, PyObject* a) {
  PyObject *owner, *fn, *first, *dims, *tensors, *config, *args, *aligned, *allocs, *slots, *result;
  int form, workspace;
  Py_ssize_t tensors_size;
  unsigned long long workspace_bytes;
  if (!PyArg_ParseTuple(a, "OiOOOOnOOOOOiKO", &owner, &form, &fn, &first, &dims, &tensors, &tensors_size,
                        &config, &args, &aligned, &allocs, &slots, &workspace, &workspace_bytes, &result)) {
    return nullptr;
  }
  auto* e = new Entry();
  auto bad = [&]() -> PyObject* {
    delete e;
    return nullptr;
  };
  if (form < kStep || form > kOp) return fail("tfla_fast.make: unknown form"), bad();
  e->form = form;
  e->fn = address(fn);
  e->first = address(first);
  e->config = static_cast<const char*>(address(config));
  const char* block = static_cast<const char*>(address(tensors));
  if (PyErr_Occurred()) return bad();
  if (e->fn == nullptr || block == nullptr || tensors_size <= 0) {
    return fail("tfla_fast.make: null function or tensor struct"), bad();
  }
  e->tensors.assign(block, block + tensors_size);
  std::vector<int64_t> d;
  if (!ints(dims, d)) return bad();
  if (form == kBackend && d.size() != 5) return fail("tfla_fast.make: 5 dims"), bad();
  for (size_t j = 0; j < d.size() && j < 5; ++j) e->dims[j] = d[j];
  if (!PyTuple_Check(args)) return fail("tfla_fast.make: args must be a tuple"), bad();
  const int nargs = static_cast<int>(PyTuple_GET_SIZE(args));
  if (nargs > kMaxArgs) return fail("tfla_fast.make: more than 32 args"), bad();
  for (int j = 0; j < nargs; ++j) {
    PyObject* t = PyTuple_GET_ITEM(args, j);
    if (t != Py_None && !THPVariable_CheckExact(t)) {
      PyErr_SetString(PyExc_TypeError, "tfla_fast.make: args must be torch.Tensor or None");
      return bad();
    }
    e->sigs.push_back(record(t));
  }
  PyObject* fast = PySequence_Fast(aligned, "tfla_fast.make: aligned");
  if (fast == nullptr) return bad();
  for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(fast); ++j) {
    std::vector<int64_t> pair;
    if (!ints(PySequence_Fast_GET_ITEM(fast, j), pair) || pair.size() != 2 || pair[0] < 0 ||
        pair[0] >= nargs || pair[1] <= 0) {
      Py_DECREF(fast);
      if (!PyErr_Occurred()) fail("tfla_fast.make: aligned takes (argument, bytes) pairs");
      return bad();
    }
    e->aligned.emplace_back(static_cast<int>(pair[0]), static_cast<int>(pair[1]));
  }
  Py_DECREF(fast);
  fast = PySequence_Fast(allocs, "tfla_fast.make: allocs");
  if (fast == nullptr) return bad();
  for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(fast); ++j) {
    PyObject* item = PySequence_Fast_GET_ITEM(fast, j);
    Alloc al;
    PyObject *dtype, *shape;
    if (!PyArg_ParseTuple(item, "iiOO", &al.how, &al.arg, &dtype, &shape) || !ints(shape, al.shape)) {
      Py_DECREF(fast);
      return bad();
    }
    bool ok = al.how >= kLike && al.how <= kBytes && al.arg >= 0 && al.arg < nargs &&
              e->sigs[static_cast<size_t>(al.arg)].present;
    if (ok && al.how == kNew) {
      ok = THPDtype_Check(dtype);
      if (ok) al.dtype = reinterpret_cast<THPDtype*>(dtype)->scalar_type;
    }
    if (ok && al.how == kBytes) ok = al.shape.size() == 1 && al.shape[0] >= 0;
    if (!ok) {
      Py_DECREF(fast);
      return fail("tfla_fast.make: an alloc is (how, argument given, dtype, shape)"), bad();
    }
    const at::Tensor& like = THPVariable_Unpack(PyTuple_GET_ITEM(args, al.arg));
    if (al.how == kLike) {
      al.sizes = like.sizes().vec();
      try {
        al.strides = at::empty_like(like, like.options().device(c10::kMeta)).strides().vec();
      } catch (const std::exception&) {
        al.strides.clear();  // no layout: at::empty_like serves this entry's calls
      }
      al.out_dtype = like.scalar_type();
    } else {
      al.sizes = al.how == kNew ? al.shape : std::vector<int64_t>{al.shape[0]};
      al.strides = contiguous(al.sizes);
      al.out_dtype = al.how == kNew ? al.dtype : at::kByte;
    }
    e->allocs.push_back(std::move(al));
  }
  Py_DECREF(fast);
  const int nsources = nargs + static_cast<int>(e->allocs.size());
  fast = PySequence_Fast(slots, "tfla_fast.make: slots");
  if (fast == nullptr) return bad();
  for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(fast); ++j) {
    std::vector<int64_t> pair;
    if (!ints(PySequence_Fast_GET_ITEM(fast, j), pair) || pair.size() != 2 || pair[0] < 0 ||
        pair[0] + static_cast<int64_t>(sizeof(void*)) > tensors_size || pair[1] < -1 || pair[1] >= nsources) {
      Py_DECREF(fast);
      if (!PyErr_Occurred()) fail("tfla_fast.make: a slot is (offset inside the struct, source)");
      return bad();
    }
    e->slots.emplace_back(pair[0], static_cast<int>(pair[1]));
  }
  Py_DECREF(fast);
  if (workspace < -1 || workspace >= nsources) return fail("tfla_fast.make: workspace source"), bad();
  e->workspace = workspace;
  e->workspace_bytes = static_cast<size_t>(workspace_bytes);
  if (!valid_result(result, nsources)) return fail("tfla_fast.make: result template"), bad();
  if (PyTuple_Check(result)) {
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(result); ++j) {
      PyObject* item = PyTuple_GET_ITEM(result, j);
      if (!PyLong_Check(item)) {
        e->flat.clear();
        break;
      }
      e->flat.push_back(static_cast<int>(PyLong_AsLong(item)));
    }
  }
  if (nargs == 0 || !e->sigs[0].present) return fail("tfla_fast.make: the first argument must be a tensor"), bad();
  e->device = e->sigs[0].device;  // the call's device: its first tensor's
  bool direct = e->device.is_cuda() || e->device.is_cpu();
  for (const Alloc& al : e->allocs) {
    const at::Tensor& like = THPVariable_Unpack(PyTuple_GET_ITEM(args, al.arg));
    direct = direct && like.device() == e->device && !like.has_names() && al.strides.size() == al.sizes.size();
  }
  if (direct && !e->allocs.empty()) {
    try {
      const at::Tensor& first = THPVariable_Unpack(PyTuple_GET_ITEM(args, 0));
      e->allocator = at::empty({1}, first.options().dtype(at::kByte)).storage().allocator();
    } catch (const std::exception&) {
      e->allocator = nullptr;
    }
  }
  e->backend_keys = c10::DispatchKeySet(e->device.is_cuda() ? c10::DispatchKey::CUDA : c10::DispatchKey::CPU);
  Py_INCREF(owner);
  e->owner = owner;
  Py_INCREF(result);
  e->result = result;
  PyObject* cap = PyCapsule_New(e, kCapsule, destroy);
  if (cap == nullptr) {
    Py_DECREF(owner);
    Py_DECREF(result);
    delete e;
  }
  return cap;
}

// The current stream of the entry's device (0, the legacy default, for CPU tensors: the stub
// library of the host-path profile); false where the current device is another one.
bool stream_of(const c10::Device& device, void** stream) {
  if (device.is_cpu()) {
    *stream = nullptr;
    return true;
  }
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(device.type());
  if (impl->getDevice() != device) return false;
  *stream = impl->getStream(device).native_handle();
  return true;
}

// The result template filled: ints are sources (arguments keep their Python objects).
PyObject* build(PyObject* tmpl, PyObject* const* x, int nargs, std::vector<at::Tensor>& out) {
  if (tmpl == Py_None) Py_RETURN_NONE;
  if (PyLong_Check(tmpl)) {
    long s = PyLong_AsLong(tmpl);
    if (s < 0) Py_RETURN_NONE;
    if (s < nargs) {
      Py_INCREF(x[s]);
      return x[s];
    }
    at::Tensor& t = out[static_cast<size_t>(s - nargs)];
    if (!t.defined()) Py_RETURN_NONE;
    return THPVariable_Wrap(t);
  }
  Py_ssize_t n = PyTuple_GET_SIZE(tmpl);
  PyObject* tup = PyTuple_New(n);
  if (tup == nullptr) return nullptr;
  for (Py_ssize_t j = 0; j < n; ++j) {
    PyObject* item = build(PyTuple_GET_ITEM(tmpl, j), x, nargs, out);
    if (item == nullptr) {
      Py_DECREF(tup);
      return nullptr;
    }
    PyTuple_SET_ITEM(tup, j, item);
  }
  return tup;
}

// Runs entry e on args (nullptr: None): -1 where it declines (a signature, the current device,
// an alignment or an allocation unlike the entry's; the caller's Python path runs instead), 0
// when the library call ran, else the library's status. out receives the allocated outputs.
// release_gil: the caller holds the GIL, released around the library call.
int run(Entry* e, const at::Tensor* const* args, int nargs, std::vector<at::Tensor>& out, bool release_gil) {
  if (nargs != static_cast<int>(e->sigs.size())) return -1;
  for (int j = 0; j < nargs; ++j) {
    if (!matches(e->sigs[static_cast<size_t>(j)], args[j])) return -1;
  }
  out.assign(e->allocs.size(), at::Tensor());
  try {
    void* stream = nullptr;
    if (!stream_of(e->device, &stream)) return -1;
    for (const auto& [j, bytes] : e->aligned) {
      const at::Tensor* t = args[j];
      if (t != nullptr && reinterpret_cast<uintptr_t>(t->data_ptr()) % static_cast<uintptr_t>(bytes) != 0) {
        return -1;  // the Python path copies (or refuses) such a tensor
      }
    }
    // torch's deterministic mode fills new memory (at::empty does it): then through at::empty
    c10::Allocator* allocator = e->allocator;
    if (at::globalContext().deterministicAlgorithms() && at::globalContext().deterministicFillUninitializedMemory()) {
      allocator = nullptr;
    }
    for (size_t j = 0; j < e->allocs.size(); ++j) {
      const Alloc& al = e->allocs[j];
      const at::Tensor& like = *args[al.arg];
      if (al.how == kBytes && al.shape[0] == 0) continue;
      if (allocator != nullptr) {
        out[j] = at::detail::empty_strided_generic(al.sizes, al.strides, allocator, e->backend_keys, al.out_dtype);
      } else if (al.how == kLike) {
        out[j] = at::empty_like(like);
      } else if (al.how == kNew) {
        out[j] = at::empty(al.shape, like.options().dtype(al.dtype));
      } else {
        out[j] = at::empty({al.shape[0]}, like.options().dtype(at::kByte));
      }
    }
    auto pointer = [&](int s) -> void* {
      if (s < 0) return nullptr;
      if (s < nargs) return args[s] == nullptr ? nullptr : args[s]->data_ptr();
      const at::Tensor& t = out[static_cast<size_t>(s - nargs)];
      return t.defined() ? t.data_ptr() : nullptr;
    };
    // the struct patched on the stack for small structs, else on the heap
    char local[1024];
    std::vector<char> heap;
    char* block = local;
    if (e->tensors.size() > sizeof local) {
      heap.resize(e->tensors.size());
      block = heap.data();
    }
    std::memcpy(block, e->tensors.data(), e->tensors.size());
    for (const auto& [offset, s] : e->slots) {
      void* p = pointer(s);
      std::memcpy(block + offset, &p, sizeof p);
    }
    void* ws = pointer(e->workspace);
    const size_t ws_bytes = ws == nullptr ? 0 : e->workspace_bytes;
    int status = 0, kind = -1;
    PyThreadState* saved = release_gil ? PyEval_SaveThread() : nullptr;
    if (e->form == kStep) {
      status = reinterpret_cast<StepFn>(e->fn)(e->first, block, stream, e->config);
    } else if (e->form == kBackend) {
      status = reinterpret_cast<BackendFn>(e->fn)(e->first, e->dims[0], e->dims[1], e->dims[2], e->dims[3],
                                                  e->dims[4], block, stream, &kind);
    } else {
      status = reinterpret_cast<OpFn>(e->fn)(e->first, block, stream, ws, ws_bytes, e->config);
    }
    if (saved != nullptr) PyEval_RestoreThread(saved);
    if (status != 0) return status;
    e->calls.fetch_add(1, std::memory_order_relaxed);
  } catch (const std::exception&) {
    return -1;  // an allocation or device lookup that failed: the Python path raises it
  }
  return 0;
}

// The arguments of a Python call as tensor pointers (nullptr for None); false where one is not
// exactly a torch.Tensor or None.
bool unpack(PyObject* const* x, int n, const at::Tensor** args) {
  for (int j = 0; j < n; ++j) {
    if (x[j] == Py_None) {
      args[j] = nullptr;
    } else if (THPVariable_CheckExact(x[j])) {
      args[j] = &THPVariable_Unpack(x[j]);
    } else {
      return false;
    }
  }
  return true;
}

// call(entry, *args) -> the result | None | status (int)
PyObject* call(PyObject*, PyObject* const* a, Py_ssize_t nargs_in) {
  if (nargs_in < 1) {
    PyErr_SetString(PyExc_TypeError, "tfla_fast.call takes an entry and its arguments");
    return nullptr;
  }
  auto* e = static_cast<Entry*>(PyCapsule_GetPointer(a[0], kCapsule));
  if (e == nullptr) return nullptr;
  const int nargs = static_cast<int>(nargs_in - 1);
  const at::Tensor* args[kMaxArgs];
  if (nargs > kMaxArgs || !unpack(a + 1, nargs, args)) Py_RETURN_NONE;
  std::vector<at::Tensor> out;
  const int status = run(e, args, nargs, out, true);
  if (status < 0) Py_RETURN_NONE;
  if (status > 0) return PyLong_FromLong(status);
  return build(e->result, a + 1, nargs, out);
}

// ---- The chunkwise forward with its autograd node in C++
//
// node(record, owner, q, k, v, i, f, C0, n0, m0) runs the forward entry that writes the
// normalizer (and keeps the chunk states, where the entry does) and attaches to h and C_last
// an autograd node, MlstmChunkwiseBackward, that does what tfla.torch.MlstmChunkwiseFunction
// does, without Python on either pass:
// - it saves q, k, v, i, f, the states, the normalizer and the saved buffer as SavedVariables
//   (the version check of in-place changes, saved-tensor hooks, release after the backward);
// - n_last and m_last are not differentiable (their gradients are ignored, as in the seed);
// - its backward runs the backward entry for the signatures it was made for (the record's, set
//   from the Python path's first backward call), and otherwise the record's Python fallback:
//   fallback(owner, status, q, k, v, i, f, C0, n0, m0, norm, saved, dh, dC_last) returns
//   ((dq, dk, dv, di, df, dC0), the backward entry or None), or raises status's error;
// - the gradients of n0 and m0 are zeros; a backward that records a graph (create_graph=True)
//   returns gradients whose differentiation raises, as once_differentiable does.
// The result is (h, C_last, n_last, m_last) with None for what the entry does not return; None
// where the forward entry declines the arguments or an argument carries a forward-mode tangent
// (the Function path raises for it); the library's status (an int) on its error.

// The GIL for a scope, from a thread that may or may not hold it.
struct Gil {
  PyGILState_STATE state = PyGILState_Ensure();
  Gil() = default;
  Gil(const Gil&) = delete;
  Gil& operator=(const Gil&) = delete;
  ~Gil() { PyGILState_Release(state); }
};

bool python_alive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

// Drops references from any thread (a node may be freed by the autograd engine's threads).
void release(std::initializer_list<PyObject*> objs) {
  if (!python_alive()) return;  // at exit the interpreter frees them
  Gil gil;
  for (PyObject* o : objs) Py_XDECREF(o);
}

constexpr const char* kNodeCapsule = "tfla_fast.Autograd";

struct Autograd {
  PyObject* forward = nullptr;   // the forward entry's capsule (it owns fwd)
  Entry* fwd = nullptr;
  PyObject* fallback = nullptr;  // the Python backward (see above)
  PyObject* backward = nullptr;  // the backward entry's capsule once known (owns bwd)
  std::atomic<Entry*> bwd{nullptr};
  int h = -1, norm = -1, C = -1, n = -1, m = -1, saved = -1;  // the forward's result sources
  std::atomic<int64_t> fallbacks{0};  // backward calls the fallback ran
  Autograd() = default;
  Autograd(const Autograd&) = delete;
  Autograd& operator=(const Autograd&) = delete;
  ~Autograd() { release({forward, fallback, backward}); }
};

std::shared_ptr<Autograd>* autograd_of(PyObject* capsule) {
  return static_cast<std::shared_ptr<Autograd>*>(PyCapsule_GetPointer(capsule, kNodeCapsule));
}

void destroy_autograd(PyObject* capsule) { delete autograd_of(capsule); }

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

struct MlstmChunkwiseBackward : torch::autograd::Node {
  std::shared_ptr<Autograd> rec;
  PyObject* owner = nullptr;  // the binding's entry, the fallback's first argument
  SavedVariable saved_[10];   // q, k, v, i, f, C0, n0, m0, norm, saved buffer

  MlstmChunkwiseBackward(const MlstmChunkwiseBackward&) = delete;
  MlstmChunkwiseBackward& operator=(const MlstmChunkwiseBackward&) = delete;
  MlstmChunkwiseBackward(std::shared_ptr<Autograd> r, PyObject* o) : rec(std::move(r)), owner(o) {
    Py_INCREF(owner);
  }
  ~MlstmChunkwiseBackward() override { release({owner}); }

  std::string name() const override { return "MlstmChunkwiseBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& sv : saved_) sv.reset_data();
  }

  // No compiled-autograd form (compiled_args / apply_with_saved keep torch's defaults, which raise
  // naming this node): the binding routes a forward made while compiled autograd is on to
  // MlstmChunkwiseFunction.

  variable_list apply(variable_list&& grads) override {
    at::Tensor x[12];
    {
      std::lock_guard<std::mutex> lock(mutex_);  // against release_variables from another backward
      for (int j = 0; j < 10; ++j) x[j] = saved_[j].unpack(shared_from_this());
    }
    if (!grads.empty()) x[10] = grads[0];
    if (grads.size() > 1) x[11] = grads[1];
    const at::Tensor* args[12];
    for (int j = 0; j < 12; ++j) args[j] = x[j].defined() ? &x[j] : nullptr;
    const bool record = torch::autograd::GradMode::is_enabled();  // create_graph=True
    at::AutoGradMode no_grad(false);  // as once_differentiable: the backward records nothing
    at::Tensor g[6];
    int status = -1;
    Entry* b = rec->bwd.load(std::memory_order_acquire);
    if (b != nullptr && args[10] != nullptr) {
      std::vector<at::Tensor> out;
      status = run(b, args, 12, out, false);
      if (status == 0) {
        for (size_t j = 0; j < 6 && j < b->flat.size(); ++j) {
          const int src = b->flat[j];
          if (src >= 12) g[j] = out[static_cast<size_t>(src - 12)];
          else if (src >= 0) g[j] = x[src];
        }
      }
    }
    if (status != 0) fallback(status, x, g);
    variable_list result(8);
    for (int j = 0; j < 5; ++j) result[j] = g[j];
    if (x[5].defined()) result[5] = g[5];
    if (x[6].defined()) result[6] = at::zeros_like(x[6]);
    if (x[7].defined()) result[7] = at::zeros_like(x[7]);
    if (record) {
      at::AutoGradMode on(true);
      once_differentiable(grads, result);
    }
    return result;
  }

 private:
  // The Python path (with the GIL): it runs (status -1) or raises (status > 0) the backward,
  // and hands back the backward entry that later calls take in C.
  void fallback(int status, const at::Tensor* x, at::Tensor* g) {
    Gil gil;
    PyObject* tup = PyTuple_New(14);
    if (tup == nullptr) throw python_error_now();
    Py_INCREF(owner);
    PyTuple_SET_ITEM(tup, 0, owner);
    bool filled = true;
    PyObject* st = PyLong_FromLong(status);
    filled = filled && st != nullptr;
    PyTuple_SET_ITEM(tup, 1, st);
    try {
      for (int j = 0; j < 12; ++j) {
        PyObject* o = x[j].defined() ? THPVariable_Wrap(x[j]) : (Py_INCREF(Py_None), Py_None);
        filled = filled && o != nullptr;
        PyTuple_SET_ITEM(tup, 2 + j, o);
      }
    } catch (...) {
      Py_DECREF(tup);
      throw;
    }
    if (!filled) {  // a tuple with a NULL item is freed safely; the error is raised
      Py_DECREF(tup);
      throw python_error_now();
    }
    PyObject* r = PyObject_Call(rec->fallback, tup, nullptr);
    Py_DECREF(tup);
    if (r == nullptr) throw python_error_now();
    rec->fallbacks.fetch_add(1, std::memory_order_relaxed);
    PyObject *grads = nullptr, *entry = nullptr;
    if (!PyArg_ParseTuple(r, "OO", &grads, &entry) || !PyTuple_Check(grads) || PyTuple_GET_SIZE(grads) != 6) {
      Py_DECREF(r);
      if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "tfla_fast: the fallback returns (6 grads, entry)");
      throw python_error_now();
    }
    for (int j = 0; j < 6; ++j) {
      PyObject* t = PyTuple_GET_ITEM(grads, j);
      if (t == Py_None) continue;
      if (!THPVariable_Check(t)) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "tfla_fast: the fallback's gradients are tensors or None");
        throw python_error_now();
      }
      g[j] = THPVariable_Unpack(t);
    }
    if (entry != Py_None && rec->backward == nullptr) {
      auto* be = static_cast<Entry*>(PyCapsule_GetPointer(entry, kCapsule));
      if (be == nullptr) {
        Py_DECREF(r);
        throw python_error_now();
      }
      Py_INCREF(entry);
      rec->backward = entry;
      rec->bwd.store(be, std::memory_order_release);
    }
    Py_DECREF(r);
  }

  static python_error python_error_now() {
    python_error err;
    err.persist();
    return err;
  }

  // A backward that records a graph: its gradients' own backward raises (once_differentiable).
  static void once_differentiable(const variable_list& grads, variable_list& result) {
    bool record = false;
    for (const auto& t : grads) record = record || (t.defined() && t.requires_grad());
    if (!record) return;
    auto err = std::make_shared<torch::autograd::Error>(
        "trying to differentiate twice a function that was marked with @once_differentiable "
        "(tfla's mLSTM backward is not differentiable)",
        torch::autograd::collect_next_edges(grads));
    for (auto& t : result) {
      if (!t.defined()) continue;
      t = t.detach();
      torch::autograd::set_history(t, err);
    }
  }
};

// autograd(forward_entry, fallback) -> a record for `node`; the forward entry's result must be
// its flat (h, norm, C_last, n_last, m_last, saved) template.
PyObject* make_autograd(PyObject*, PyObject* a) {
  PyObject *forward, *fallback;
  if (!PyArg_ParseTuple(a, "OO", &forward, &fallback)) return nullptr;
  auto* fe = static_cast<Entry*>(PyCapsule_GetPointer(forward, kCapsule));
  if (fe == nullptr) return nullptr;
  if (!PyCallable_Check(fallback)) {
    PyErr_SetString(PyExc_TypeError, "tfla_fast.autograd: the fallback must be callable");
    return nullptr;
  }
  bool fresh = fe->flat.size() == 6 && fe->flat[0] >= 8 && fe->flat[1] >= 8;
  for (size_t j = 2; fresh && j < 6; ++j) fresh = fe->flat[j] == -1 || fe->flat[j] >= 8;
  if (fe->form != kOp || fe->sigs.size() != 8 || !fresh) {
    PyErr_SetString(PyExc_ValueError,
                    "tfla_fast.autograd: a forward entry of 8 arguments returning (h, norm, C, n, m, saved), "
                    "each allocated by the call or absent (h and norm allocated)");
    return nullptr;
  }
  auto rec = std::make_shared<Autograd>();
  Py_INCREF(forward);
  rec->forward = forward;
  rec->fwd = fe;
  Py_INCREF(fallback);
  rec->fallback = fallback;
  int* dst[6] = {&rec->h, &rec->norm, &rec->C, &rec->n, &rec->m, &rec->saved};
  for (int j = 0; j < 6; ++j) *dst[j] = fe->flat[static_cast<size_t>(j)];
  auto* holder = new std::shared_ptr<Autograd>(std::move(rec));
  PyObject* cap = PyCapsule_New(holder, kNodeCapsule, destroy_autograd);
  if (cap == nullptr) delete holder;
  return cap;
}

PyObject* node(PyObject*, PyObject* const* a, Py_ssize_t n) {
  if (n != 10) {
    PyErr_SetString(PyExc_TypeError, "tfla_fast.node takes a record, its owner and 8 arguments");
    return nullptr;
  }
  auto* holder = autograd_of(a[0]);
  if (holder == nullptr) return nullptr;
  const std::shared_ptr<Autograd>& rec = *holder;
  const at::Tensor* args[8];
  if (!unpack(a + 2, 8, args)) Py_RETURN_NONE;
  for (const at::Tensor* t : args) {
    // forward-mode AD: the node has no forward derivative; the Function path raises for it
    if (t != nullptr && t->_fw_grad(/*level=*/0).defined()) Py_RETURN_NONE;
  }
  std::vector<at::Tensor> out;
  const int status = run(rec->fwd, args, 8, out, true);
  if (status < 0) Py_RETURN_NONE;
  if (status > 0) return PyLong_FromLong(status);
  auto source = [&](int s) -> at::Tensor {
    if (s >= 8) return out[static_cast<size_t>(s - 8)];
    return s >= 0 && args[s] != nullptr ? *args[s] : at::Tensor();
  };
  at::Tensor h = source(rec->h), C = source(rec->C), nl = source(rec->n), ml = source(rec->m);
  try {
    auto fn = std::shared_ptr<MlstmChunkwiseBackward>(new MlstmChunkwiseBackward(rec, a[1]),
                                                      torch::autograd::deleteNode);
    static const at::Tensor none;
    auto in = [&](int j) -> const at::Tensor& { return args[j] != nullptr ? *args[j] : none; };
    fn->set_next_edges(torch::autograd::collect_next_edges(in(0), in(1), in(2), in(3), in(4), in(5), in(6), in(7)));
    for (int j = 0; j < 8; ++j) fn->saved_[j] = SavedVariable(in(j), false);
    fn->saved_[8] = SavedVariable(source(rec->norm), false);
    fn->saved_[9] = SavedVariable(source(rec->saved), false);
    torch::autograd::set_history(h, fn);
    if (C.defined()) torch::autograd::set_history(C, fn);
  } catch (python_error& err) {
    err.restore();
    return nullptr;
  } catch (const std::exception& ex) {
    PyErr_SetString(PyExc_RuntimeError, ex.what());
    return nullptr;
  }
  PyObject* r = PyTuple_New(4);
  if (r == nullptr) return nullptr;
  const at::Tensor* outs[4] = {&h, &C, &nl, &ml};
  try {
    for (int j = 0; j < 4; ++j) {
      PyObject* o = outs[j]->defined() ? THPVariable_Wrap(*outs[j]) : (Py_INCREF(Py_None), Py_None);
      if (o == nullptr) {
        Py_DECREF(r);
        return nullptr;
      }
      PyTuple_SET_ITEM(r, j, o);
    }
  } catch (const std::exception& ex) {
    Py_DECREF(r);
    PyErr_SetString(PyExc_RuntimeError, ex.what());
    return nullptr;
  }
  return r;
}

// node_calls(record) -> (backward calls the fallback ran, whether the C backward entry is set)
PyObject* node_calls(PyObject*, PyObject* capsule) {
  auto* holder = autograd_of(capsule);
  if (holder == nullptr) return nullptr;
  return Py_BuildValue("(LO)", static_cast<long long>((*holder)->fallbacks.load()),
                       (*holder)->bwd.load() != nullptr ? Py_True : Py_False);
}

// calls(entry) -> how many calls the entry ran (the tests' proof that the C path served them)
PyObject* calls(PyObject*, PyObject* capsule) {
  auto* e = static_cast<Entry*>(PyCapsule_GetPointer(capsule, kCapsule));
  if (e == nullptr) return nullptr;
  return PyLong_FromLongLong(e->calls.load(std::memory_order_relaxed));
}

// stream(device_index) -> the raw current stream this module finds for that CUDA device (the
// loader compares it with torch's once)
PyObject* stream(PyObject*, PyObject* index) {
  long idx = PyLong_AsLong(index);
  if (PyErr_Occurred()) return nullptr;
  try {
    c10::Device device(c10::kCUDA, static_cast<c10::DeviceIndex>(idx));
    const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(device.type());
    return PyLong_FromVoidPtr(impl->getStream(device).native_handle());
  } catch (const std::exception& ex) {
    PyErr_SetString(PyExc_RuntimeError, ex.what());
    return nullptr;
  }
}

PyMethodDef methods[] = {
    {"make", make, METH_VARARGS, "record a prepared entry (see _fast.cpp)"},
    {"call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(call)), METH_FASTCALL,
     "a warm call of an entry: its result, None (take the Python path) or a library status"},
    {"calls", calls, METH_O, "the number of calls an entry ran"},
    {"stream", stream, METH_O, "the raw current stream of a CUDA device"},
    {"autograd", make_autograd, METH_VARARGS, "a record for node: (forward entry, Python backward)"},
    {"node", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(node)), METH_FASTCALL,
     "the chunkwise forward with its C++ autograd node: (h, C, n, m), None or a library status"},
    {"node_calls", node_calls, METH_O, "(fallback backward calls, C backward set) of a record"},
    {nullptr, nullptr, 0, nullptr}};

#define TFLA_STR2(a) #a
#define TFLA_STR(a) TFLA_STR2(a)
PyModuleDef module = {PyModuleDef_HEAD_INIT, TFLA_STR(TORCH_EXTENSION_NAME),
                      "tfla's per-call host path in C++", -1, methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

#define TFLA_CAT2(a, b) a##b
#define TFLA_CAT(a, b) TFLA_CAT2(a, b)
PyMODINIT_FUNC TFLA_CAT(PyInit_, TORCH_EXTENSION_NAME)() { return PyModule_Create(&module); }
