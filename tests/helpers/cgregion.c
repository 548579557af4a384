#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <valgrind/callgrind.h>
/* region<i>(fn, *args): call fn(*args) inside a distinct C function, so callgrind's inclusive cost of region<i>
   is the cost of that Python call. */
static PyObject* call(PyObject* a) {
    PyObject* fn = PyTuple_GET_ITEM(a, 0);
    PyObject* rest = PyTuple_GetSlice(a, 1, PyTuple_GET_SIZE(a));
    PyObject* r = PyObject_Call(fn, rest, NULL);
    Py_DECREF(rest);
    return r;
}
__attribute__((noinline)) static PyObject* region0(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region1(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region2(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region3(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region4(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region5(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region6(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region7(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region8(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region9(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region10(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region11(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region12(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region13(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region14(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region15(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region16(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region17(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region18(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region19(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region20(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region21(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region22(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region23(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region24(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region25(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region26(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region27(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region28(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region29(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region30(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region31(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region32(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region33(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region34(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region35(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region36(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region37(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region38(PyObject* s, PyObject* a) { return call(a); }
__attribute__((noinline)) static PyObject* region39(PyObject* s, PyObject* a) { return call(a); }
/* start(): callgrind's instrumentation from here on (run with --instr-atstart=no: the imports before it run
   several times faster, uncounted). */
static PyObject* start(PyObject* s, PyObject* a) { CALLGRIND_START_INSTRUMENTATION; Py_RETURN_NONE; }
static PyMethodDef M[] = {
{"start", start, METH_NOARGS, NULL},
{"region0", region0, METH_VARARGS, NULL},
{"region1", region1, METH_VARARGS, NULL},
{"region2", region2, METH_VARARGS, NULL},
{"region3", region3, METH_VARARGS, NULL},
{"region4", region4, METH_VARARGS, NULL},
{"region5", region5, METH_VARARGS, NULL},
{"region6", region6, METH_VARARGS, NULL},
{"region7", region7, METH_VARARGS, NULL},
{"region8", region8, METH_VARARGS, NULL},
{"region9", region9, METH_VARARGS, NULL},
{"region10", region10, METH_VARARGS, NULL},
{"region11", region11, METH_VARARGS, NULL},
{"region12", region12, METH_VARARGS, NULL},
{"region13", region13, METH_VARARGS, NULL},
{"region14", region14, METH_VARARGS, NULL},
{"region15", region15, METH_VARARGS, NULL},
{"region16", region16, METH_VARARGS, NULL},
{"region17", region17, METH_VARARGS, NULL},
{"region18", region18, METH_VARARGS, NULL},
{"region19", region19, METH_VARARGS, NULL},
{"region20", region20, METH_VARARGS, NULL},
{"region21", region21, METH_VARARGS, NULL},
{"region22", region22, METH_VARARGS, NULL},
{"region23", region23, METH_VARARGS, NULL},
{"region24", region24, METH_VARARGS, NULL},
{"region25", region25, METH_VARARGS, NULL},
{"region26", region26, METH_VARARGS, NULL},
{"region27", region27, METH_VARARGS, NULL},
{"region28", region28, METH_VARARGS, NULL},
{"region29", region29, METH_VARARGS, NULL},
{"region30", region30, METH_VARARGS, NULL},
{"region31", region31, METH_VARARGS, NULL},
{"region32", region32, METH_VARARGS, NULL},
{"region33", region33, METH_VARARGS, NULL},
{"region34", region34, METH_VARARGS, NULL},
{"region35", region35, METH_VARARGS, NULL},
{"region36", region36, METH_VARARGS, NULL},
{"region37", region37, METH_VARARGS, NULL},
{"region38", region38, METH_VARARGS, NULL},
{"region39", region39, METH_VARARGS, NULL},
{NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "cgregion", NULL, -1, M};
PyMODINIT_FUNC PyInit_cgregion(void) { return PyModule_Create(&mod); }
