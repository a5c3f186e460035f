// tfla's per-call host path for the step kernels in C++: a CPython module built once per torch
// version by torch.utils.cpp_extension (tfla.torch._fast loads it; TFLA_TORCH_EXTENSION=0 keeps
// the ctypes path).
//
// A step entry of the Python binding (mlstm_recurrent_step, mLSTMBackend's inference step) is
// checked and prepared once per shape: the library's C structs filled, everything but the device
// pointers constant. `make` records that entry as a capsule: the tensors' signatures (exact type,
// dispatch keys, dtype, device, sizes, strides), which outputs a call allocates and how, and
// where each device pointer goes in the entry's tensor struct. `call` then does a warm call's
// whole host path in one C call: the signature check, the outputs' allocations (torch's caching
// allocator, as the Python path's empty_like), the current stream, the pointers written and the
// library function called. It returns (h, (C, n, m)); None where anything differs from the
// recorded entry (a signature, the current device, a state's alignment, an allocation that
// failed), so that the caller runs its Python path, which raises or re-checks as it would; or
// the library's nonzero status, which the caller turns into its error.
//
// Only the C ABI of libtfla is used: the function pointers and struct addresses come from the
// Python entry (ctypes), which the capsule keeps alive.

#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/Device.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/autograd/python_variable.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

namespace {

// Pointer slots of the entry's tensor struct, in this order: the step's or the backend
// forward's fields of the same role.
enum Slot { kQ, kK, kV, kI, kF, kH, kCOut, kNOut, kMOut, kCIn, kNIn, kMIn, kSlots };
// What goes into a slot: an argument (0..8: q, k, v, i, f, c, n, m, out), h, a new state, or 0.
enum Source : int { kArgC = 5, kArgN = 6, kArgM = 7, kArgOut = 8, kSrcH = 9, kSrcNewC = 10,
                    kSrcNewN = 11, kSrcNewM = 12, kSrcZero = -1 };
constexpr int kArgs = 9;

enum HowH : int { kHOut = 0, kHLikeV = 1, kHNew = 2 };
enum HowStates : int { kStatesArgs = 0, kStatesLike = 1, kStatesNew = 2 };
enum Kind : int { kStep = 0, kBackendForward = 1 };

using StepFn = int (*)(const void*, void*, void*, const char*);
using BackendFn = int (*)(const void*, int64_t, int64_t, int64_t, int64_t, int64_t, void*, void*, int*);

struct Sig {
  bool present = false;
  c10::DispatchKeySet keys;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  c10::Device device{c10::kCPU};
  std::vector<int64_t> sizes, strides;
};

struct Entry {
  PyObject* owner = nullptr;  // the Python objects that own the structs below
  int kind = kStep;
  void* fn = nullptr;
  const void* first = nullptr;  // kStep: the tfla_problem; kBackendForward: the backend handle
  std::array<int64_t, 5> dims{};  // kBackendForward: B, NH, S, Dqk, Dv
  char* tensors = nullptr;       // the tensor struct
  const char* config = nullptr;  // kStep: the config text (NUL-terminated) or null
  int* kind_out = nullptr;       // kBackendForward: where the library writes the kernel kind
  std::array<int64_t, kSlots> offset{};
  std::array<int, kSlots> source{};
  int how_h = kHLikeV;
  int how_states = kStatesArgs;
  int align_c = 0, align_nm = 0;  // new states from old ones: the old pointers' alignment, 0 = none
  std::vector<int64_t> h_shape, c_shape, n_shape, m_shape;
  std::array<Sig, kArgs> sigs;
  c10::Device device{c10::kCPU};
  int64_t calls = 0;
};

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
  auto* e = static_cast<Entry*>(PyCapsule_GetPointer(capsule, "tfla_fast.Entry"));
  if (e == nullptr) return;
  Py_XDECREF(e->owner);
  delete e;
}

bool int_list(PyObject* seq, std::vector<int64_t>& out) {
  PyObject* fast = PySequence_Fast(seq, "expected a sequence of ints");
  if (fast == nullptr) return false;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  out.resize(static_cast<size_t>(n));
  for (Py_ssize_t j = 0; j < n; ++j) {
    out[static_cast<size_t>(j)] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, j));
  }
  Py_DECREF(fast);
  return !PyErr_Occurred();
}

void* address(PyObject* o) { return o == Py_None ? nullptr : PyLong_AsVoidPtr(o); }

// make(owner, kind, fn, first, dims, tensors, config, kind_out, offsets, sources, how_h,
//      how_states, align_c, align_nm, h_shape, c_shape, n_shape, m_shape, device_index, args)
// args: the 9 arguments (q, k, v, i, f, c, n, m, out; None where absent) whose signatures the
// entry was made for. Addresses are ints (0 or None = none).
PyObject* make(PyObject*, PyObject* a) {
  PyObject *owner, *fn, *first, *dims, *tensors, *config, *kind_out, *offsets, *sources, *h_shape,
      *c_shape, *n_shape, *m_shape, *args;
  int kind, how_h, how_states, align_c, align_nm, device_index;
  if (!PyArg_ParseTuple(a, "OiOOOOOOOOiiiiOOOOiO", &owner, &kind, &fn, &first, &dims, &tensors,
                        &config, &kind_out, &offsets, &sources, &how_h, &how_states, &align_c,
                        &align_nm, &h_shape, &c_shape, &n_shape, &m_shape, &device_index, &args)) {
    return nullptr;
  }
  auto* e = new Entry();
  std::vector<int64_t> off, src, d;
  bool ok = int_list(offsets, off) && int_list(sources, src) && int_list(dims, d) &&
            int_list(h_shape, e->h_shape) && int_list(c_shape, e->c_shape) &&
            int_list(n_shape, e->n_shape) && int_list(m_shape, e->m_shape);
  if (ok && (off.size() != kSlots || src.size() != kSlots || (kind == kBackendForward && d.size() != 5))) {
    PyErr_SetString(PyExc_ValueError, "tfla_fast.make: 12 offsets and sources, 5 dims");
    ok = false;
  }
  if (ok && (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) != kArgs)) {
    PyErr_SetString(PyExc_ValueError, "tfla_fast.make: args must be a tuple of 9");
    ok = false;
  }
  if (ok) {
    for (Py_ssize_t j = 0; j < kArgs; ++j) {
      PyObject* t = PyTuple_GET_ITEM(args, j);
      if (t != Py_None && !THPVariable_CheckExact(t)) {
        PyErr_SetString(PyExc_TypeError, "tfla_fast.make: args must be torch.Tensor or None");
        ok = false;
        break;
      }
      e->sigs[static_cast<size_t>(j)] = record(t);
    }
  }
  if (ok) {
    e->kind = kind;
    e->fn = address(fn);
    e->first = address(first);
    e->tensors = static_cast<char*>(address(tensors));
    e->config = static_cast<const char*>(address(config));
    e->kind_out = static_cast<int*>(address(kind_out));
    ok = !PyErr_Occurred() && e->fn != nullptr && e->tensors != nullptr &&
         (kind == kStep || (kind == kBackendForward && e->kind_out != nullptr));
    if (!ok && !PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "tfla_fast.make: null address");
  }
  if (!ok) {
    delete e;
    return nullptr;
  }
  for (size_t j = 0; j < 5 && j < d.size(); ++j) e->dims[j] = d[j];
  for (size_t j = 0; j < kSlots; ++j) {
    e->offset[j] = off[j];
    e->source[j] = static_cast<int>(src[j]);
  }
  e->how_h = how_h;
  e->how_states = how_states;
  e->align_c = align_c;
  e->align_nm = align_nm;
  e->device = device_index >= 0 ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device_index))
                                : c10::Device(c10::kCPU);
  Py_INCREF(owner);
  e->owner = owner;
  PyObject* cap = PyCapsule_New(e, "tfla_fast.Entry", destroy);
  if (cap == nullptr) {
    Py_DECREF(owner);
    delete e;
  }
  return cap;
}

bool misaligned(const at::Tensor& t, int align) {
  return align > 0 && reinterpret_cast<uintptr_t>(t.data_ptr()) % static_cast<uintptr_t>(align) != 0;
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

// call(entry, q, k, v, i, f, c, n, m, out) -> (h, (C, n, m)) | None | status (int)
PyObject* call(PyObject*, PyObject* const* a, Py_ssize_t nargs) {
  if (nargs != 1 + kArgs) {
    PyErr_SetString(PyExc_TypeError, "tfla_fast.call takes an entry and 9 arguments");
    return nullptr;
  }
  auto* e = static_cast<Entry*>(PyCapsule_GetPointer(a[0], "tfla_fast.Entry"));
  if (e == nullptr) return nullptr;
  PyObject* const* x = a + 1;
  for (int j = 0; j < kArgs; ++j) {
    if (!matches(e->sigs[static_cast<size_t>(j)], x[j])) Py_RETURN_NONE;
  }
  try {
    void* stream = nullptr;
    if (!stream_of(e->device, &stream)) Py_RETURN_NONE;
    std::array<const at::Tensor*, kArgs> arg{};
    for (int j = 0; j < kArgs; ++j) {
      arg[static_cast<size_t>(j)] = x[j] == Py_None ? nullptr : &THPVariable_Unpack(x[j]);
    }
    const at::Tensor& q = *arg[0];
    at::Tensor h, C, n, m;
    if (e->how_states != kStatesArgs) {
      if (arg[kArgC] == nullptr || arg[kArgN] == nullptr || arg[kArgM] == nullptr) Py_RETURN_NONE;
      const at::Tensor& c0 = *arg[kArgC];
      const at::Tensor& n0 = *arg[kArgN];
      const at::Tensor& m0 = *arg[kArgM];
      if (misaligned(c0, e->align_c) || misaligned(n0, e->align_nm) || misaligned(m0, e->align_nm)) {
        Py_RETURN_NONE;  // the Python path copies such a state into the new one
      }
      if (e->how_states == kStatesLike) {
        C = at::empty_like(c0);
        n = at::empty_like(n0);
        m = at::empty_like(m0);
      } else {
        C = at::empty(e->c_shape, c0.options());
        n = at::empty(e->n_shape, c0.options());
        m = at::empty(e->m_shape, c0.options());
      }
    }
    if (e->how_h == kHOut) {
      h = *arg[kArgOut];
    } else if (e->how_h == kHLikeV) {
      h = at::empty_like(*arg[2]);
    } else {
      h = at::empty(e->h_shape, q.options());
    }
    for (size_t s = 0; s < kSlots; ++s) {
      int src = e->source[s];
      const void* p = nullptr;
      if (src >= 0 && src < kArgs) {
        p = arg[static_cast<size_t>(src)] ? arg[static_cast<size_t>(src)]->data_ptr() : nullptr;
      } else if (src == kSrcH) {
        p = h.data_ptr();
      } else if (src == kSrcNewC) {
        p = C.data_ptr();
      } else if (src == kSrcNewN) {
        p = n.data_ptr();
      } else if (src == kSrcNewM) {
        p = m.data_ptr();
      }
      if (e->offset[s] >= 0) std::memcpy(e->tensors + e->offset[s], &p, sizeof p);
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    if (e->kind == kStep) {
      status = reinterpret_cast<StepFn>(e->fn)(e->first, e->tensors, stream, e->config);
    } else {
      status = reinterpret_cast<BackendFn>(e->fn)(e->first, e->dims[0], e->dims[1], e->dims[2], e->dims[3],
                                                  e->dims[4], e->tensors, stream, e->kind_out);
    }
    Py_END_ALLOW_THREADS
    if (status != 0) return PyLong_FromLong(status);
    ++e->calls;
    if (e->how_states == kStatesArgs) {  // in place: the states given (None where absent)
      if (arg[kArgC] != nullptr) C = *arg[kArgC];
      if (arg[kArgN] != nullptr) n = *arg[kArgN];
      if (arg[kArgM] != nullptr) m = *arg[kArgM];
    }
    PyObject* states = PyTuple_New(3);
    if (states == nullptr) return nullptr;
    PyTuple_SET_ITEM(states, 0, THPVariable_Wrap(std::move(C)));
    PyTuple_SET_ITEM(states, 1, THPVariable_Wrap(std::move(n)));
    PyTuple_SET_ITEM(states, 2, THPVariable_Wrap(std::move(m)));
    PyObject* out = PyTuple_New(2);
    if (out == nullptr) {
      Py_DECREF(states);
      return nullptr;
    }
    PyTuple_SET_ITEM(out, 0, THPVariable_Wrap(std::move(h)));
    PyTuple_SET_ITEM(out, 1, states);
    return out;
  } catch (const std::exception&) {
    Py_RETURN_NONE;  // an allocation or device lookup that failed: the Python path raises it
  }
}

// calls(entry) -> how many calls the entry ran (the tests' proof that the C path served them)
PyObject* calls(PyObject*, PyObject* capsule) {
  auto* e = static_cast<Entry*>(PyCapsule_GetPointer(capsule, "tfla_fast.Entry"));
  if (e == nullptr) return nullptr;
  return PyLong_FromLongLong(e->calls);
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
    {"make", make, METH_VARARGS, "record a prepared step entry (see _fast.cpp)"},
    {"call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(call)), METH_FASTCALL,
     "a warm call of an entry: (h, (C, n, m)), None (take the Python path) or a library status"},
    {"calls", calls, METH_O, "the number of calls an entry ran"},
    {"stream", stream, METH_O, "the raw current stream of a CUDA device"},
    {nullptr, nullptr, 0, nullptr}};

#define TFLA_STR2(a) #a
#define TFLA_STR(a) TFLA_STR2(a)
PyModuleDef module = {PyModuleDef_HEAD_INIT, TFLA_STR(TORCH_EXTENSION_NAME), "tfla's step host path in C++",
                      -1, methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

#define TFLA_CAT2(a, b) a##b
#define TFLA_CAT(a, b) TFLA_CAT2(a, b)
PyMODINIT_FUNC TFLA_CAT(PyInit_, TORCH_EXTENSION_NAME)() { return PyModule_Create(&module); }
