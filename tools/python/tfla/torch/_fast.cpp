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
// Only the C ABI of libtfla is used: the function pointer and the problem struct's and config
// text's addresses come from the Python entry (ctypes), which the capsule keeps alive; the tensor
// struct is copied at `make` (each call patches its own copy, so calls from two threads, as the
// autograd engine's backward beside a forward, never share one).

#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/Device.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/autograd/python_variable.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
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
  c10::Device device{c10::kCPU};  // the first argument's: the current device a call must find
  std::atomic<int64_t> calls{0};  // (calls may come from the autograd engine's threads too)
};
// A source: argument j (0 <= j < nargs), output j (nargs + j), or -1 (a null pointer / None).

bool matches(const Sig& s, PyObject* obj) {
  if (obj == Py_None) return !s.present;
  if (!s.present || !THPVariable_CheckExact(obj)) return false;
  const at::Tensor& t = THPVariable_Unpack(obj);
  return t.key_set() == s.keys && t.scalar_type() == s.dtype && t.device() == s.device &&
         t.sizes().equals(s.sizes) && t.strides().equals(s.strides);
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
  if (nargs == 0 || !e->sigs[0].present) return fail("tfla_fast.make: the first argument must be a tensor"), bad();
  e->device = e->sigs[0].device;  // the call's device: its first tensor's
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

// call(entry, *args) -> the result | None | status (int)
PyObject* call(PyObject*, PyObject* const* a, Py_ssize_t nargs_in) {
  if (nargs_in < 1) {
    PyErr_SetString(PyExc_TypeError, "tfla_fast.call takes an entry and its arguments");
    return nullptr;
  }
  auto* e = static_cast<Entry*>(PyCapsule_GetPointer(a[0], kCapsule));
  if (e == nullptr) return nullptr;
  const int nargs = static_cast<int>(nargs_in - 1);
  if (nargs != static_cast<int>(e->sigs.size())) Py_RETURN_NONE;
  PyObject* const* x = a + 1;
  for (int j = 0; j < nargs; ++j) {
    if (!matches(e->sigs[static_cast<size_t>(j)], x[j])) Py_RETURN_NONE;
  }
  std::vector<at::Tensor> out(e->allocs.size());
  try {
    void* stream = nullptr;
    if (!stream_of(e->device, &stream)) Py_RETURN_NONE;
    auto arg = [&](int j) -> const at::Tensor* {
      return x[j] == Py_None ? nullptr : &THPVariable_Unpack(x[j]);
    };
    for (const auto& [j, bytes] : e->aligned) {
      const at::Tensor* t = arg(j);
      if (t != nullptr && reinterpret_cast<uintptr_t>(t->data_ptr()) % static_cast<uintptr_t>(bytes) != 0) {
        Py_RETURN_NONE;  // the Python path copies (or refuses) such a tensor
      }
    }
    for (size_t j = 0; j < e->allocs.size(); ++j) {
      const Alloc& al = e->allocs[j];
      const at::Tensor& like = *arg(al.arg);
      if (al.how == kLike) {
        out[j] = at::empty_like(like);
      } else if (al.how == kNew) {
        out[j] = at::empty(al.shape, like.options().dtype(al.dtype));
      } else if (al.shape[0] > 0) {
        out[j] = at::empty({al.shape[0]}, like.options().dtype(at::kByte));
      }
    }
    auto pointer = [&](int s) -> void* {
      if (s < 0) return nullptr;
      if (s < nargs) {
        const at::Tensor* t = arg(s);
        return t == nullptr ? nullptr : t->data_ptr();
      }
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
    Py_BEGIN_ALLOW_THREADS
    if (e->form == kStep) {
      status = reinterpret_cast<StepFn>(e->fn)(e->first, block, stream, e->config);
    } else if (e->form == kBackend) {
      status = reinterpret_cast<BackendFn>(e->fn)(e->first, e->dims[0], e->dims[1], e->dims[2], e->dims[3],
                                                  e->dims[4], block, stream, &kind);
    } else {
      status = reinterpret_cast<OpFn>(e->fn)(e->first, block, stream, ws, ws_bytes, e->config);
    }
    Py_END_ALLOW_THREADS
    if (status != 0) return PyLong_FromLong(status);
    e->calls.fetch_add(1, std::memory_order_relaxed);
  } catch (const std::exception&) {
    Py_RETURN_NONE;  // an allocation or device lookup that failed: the Python path raises it
  }
  return build(e->result, x, nargs, out);
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
    {nullptr, nullptr, 0, nullptr}};

#define TFLA_STR2(a) #a
#define TFLA_STR(a) TFLA_STR2(a)
PyModuleDef module = {PyModuleDef_HEAD_INIT, TFLA_STR(TORCH_EXTENSION_NAME),
                      "tfla's per-call host path in C++", -1, methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

#define TFLA_CAT2(a, b) a##b
#define TFLA_CAT(a, b) TFLA_CAT2(a, b)
PyMODINIT_FUNC TFLA_CAT(PyInit_, TORCH_EXTENSION_NAME)() { return PyModule_Create(&module); }
