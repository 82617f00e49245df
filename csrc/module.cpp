// The Python module `bigkern._C`. Importing it runs the static op registrations of every
// translation unit; the module itself only reports how it was built (plain C API, so this
// file compiles in a fraction of a second instead of pulling in pybind11 and torch/extension.h).
#include <Python.h>

#include <exception>

#ifndef BIGKERN_CUDA_ARCHS
#define BIGKERN_CUDA_ARCHS ""
#endif

namespace bigkern::cpu {
const char* selected_isa_name();
bool amx_tiles_ready();
}

static PyObject* cpu_isa(PyObject*, PyObject*) {
  try {
    return PyUnicode_FromString(bigkern::cpu::selected_isa_name());
  } catch (const std::exception& e) {  // no C++ exception may cross into the interpreter
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

static PyObject* cpu_amx(PyObject*, PyObject*) {
  try {
    return PyBool_FromLong(bigkern::cpu::amx_tiles_ready());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

static PyMethodDef bigkern_methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "The widest instruction set the CPU kernels were selected for at run time (baseline, avx2 or avx512); "
     "each kernel family runs its widest build at or below it."},
    {"cpu_amx", cpu_amx, METH_NOARGS,
     "Whether float32 convolutions may run on the AMX tile unit (processor support, the kernel's permission, "
     "and BIGKERN_CPU_AMX not 0)."},
    {nullptr, nullptr, 0, nullptr},
};

static PyModuleDef bigkern_module = {PyModuleDef_HEAD_INIT, "_C", "bigkern's compiled kernels", -1, bigkern_methods};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&bigkern_module);
  if (m == nullptr) return nullptr;
#ifdef BIGKERN_WITH_CUDA
  const int with_cuda = 1;
#else
  const int with_cuda = 0;
#endif
  if (PyModule_AddObject(m, "with_cuda", PyBool_FromLong(with_cuda)) < 0 ||
      PyModule_AddStringConstant(m, "cuda_archs", BIGKERN_CUDA_ARCHS) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
